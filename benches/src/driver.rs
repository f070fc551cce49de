//! The load generator: offers items closed-loop (a window of items in flight) or open-loop (a
//! fixed arrival rate, latency from the intended send time), publishing each one pipelined.
//! JetStream acks are awaited by a separate task, so the sender never waits for them.

use std::future::Future;
use std::sync::Arc;

use async_nats::jetstream::context::PublishAckFuture;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::error::BenchError;
use crate::options::LoadMode;
use crate::schedule::OpenLoopSchedule;
use crate::tracker::Tracker;

/// Awaits publish acks in send order; returns (acked, failed, first error).
pub(crate) struct Acker {
    tx: mpsc::Sender<PublishAckFuture>,
    task: JoinHandle<(u64, u64, Option<String>)>,
}

impl Acker {
    pub(crate) fn start() -> Self {
        let (tx, mut rx) = mpsc::channel::<PublishAckFuture>(16_384);
        let task = tokio::spawn(async move {
            let (mut ok, mut failed, mut first) = (0u64, 0u64, None);
            while let Some(fut) = rx.recv().await {
                match fut.await {
                    Ok(_) => ok += 1,
                    Err(e) => {
                        failed += 1;
                        first.get_or_insert_with(|| e.to_string());
                    }
                }
            }
            (ok, failed, first)
        });
        Self { tx, task }
    }

    pub(crate) async fn push(&self, fut: PublishAckFuture) -> Result<(), BenchError> {
        self.tx
            .send(fut)
            .await
            .map_err(|_| BenchError::nats("await publish acks", "the ack task stopped"))
    }

    /// Wait for every ack; an error if any publish failed.
    pub(crate) async fn finish(self) -> Result<u64, BenchError> {
        drop(self.tx);
        let (ok, failed, first) = self
            .task
            .await
            .map_err(|e| BenchError::nats("await publish acks", e))?;
        if failed > 0 {
            return Err(BenchError::nats(
                format!("{failed} publishes failed"),
                first.unwrap_or_default(),
            ));
        }
        Ok(ok)
    }
}

/// Offer items `0..tracker.len()`: `send(seq)` publishes item `seq` and returns its ack future.
/// Returns when every item was sent and acknowledged by JetStream (completion is the
/// tracker's business).
pub(crate) async fn offer<F, Fut>(
    tracker: &Arc<Tracker>,
    mode: LoadMode,
    mut send: F,
) -> Result<u64, BenchError>
where
    F: FnMut(u64) -> Fut,
    Fut: Future<Output = Result<PublishAckFuture, BenchError>>,
{
    let acker = Acker::start();
    let n = tracker.len();
    match mode {
        LoadMode::Closed { .. } => {
            for seq in 0..n {
                tracker.acquire().await;
                tracker.sent(seq, tracker.now_ns());
                acker.push(send(seq).await?).await?;
            }
        }
        LoadMode::Open { rate_per_s } => {
            let schedule = OpenLoopSchedule::new(rate_per_s);
            let start_ns = tracker.now_ns();
            let start = tracker.epoch() + std::time::Duration::from_nanos(start_ns);
            for seq in 0..n {
                let intended = schedule.intended(seq);
                // Pacing, not waiting for a result: the arrival process itself.
                tokio::time::sleep_until((start + intended).into()).await;
                let intended_ns = start_ns + u64::try_from(intended.as_nanos()).unwrap_or(0);
                tracker.sent(seq, intended_ns);
                acker.push(send(seq).await?).await?;
            }
        }
    }
    acker.finish().await
}
