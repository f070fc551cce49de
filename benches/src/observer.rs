//! Watching the log: an ordered, headers-only JetStream consumer on some subjects that hands
//! every stored message's subject to a callback. Completions are read from the log itself, so
//! the harness counts what is durable, not what a handler said.

use async_nats::jetstream;
use async_nats::jetstream::consumer::{pull::OrderedConfig, DeliverPolicy};
use futures::StreamExt;
use tokio::task::JoinHandle;

use crate::error::BenchError;

/// A running observer; aborted when dropped.
pub(crate) struct Observer {
    task: JoinHandle<()>,
}

impl Drop for Observer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Follow `filters` on `stream` from its start; `on_message(subject)` for each stored message.
pub(crate) async fn observe<F>(
    js: &jetstream::Context,
    stream: &str,
    filters: Vec<String>,
    mut on_message: F,
) -> Result<Observer, BenchError>
where
    F: FnMut(&str) + Send + 'static,
{
    observe_messages(js, stream, filters, move |m| on_message(m.subject.as_str())).await
}

/// [`observe`] with the time JetStream stored each message at:
/// `on_message(subject, stored_unix_ns)` (0 when the message carries no JetStream info).
pub(crate) async fn observe_timed<F>(
    js: &jetstream::Context,
    stream: &str,
    filters: Vec<String>,
    mut on_message: F,
) -> Result<Observer, BenchError>
where
    F: FnMut(&str, i128) + Send + 'static,
{
    observe_messages(js, stream, filters, move |m| {
        let stored = m
            .info()
            .map(|i| i.published.unix_timestamp_nanos())
            .unwrap_or(0);
        on_message(m.subject.as_str(), stored);
    })
    .await
}

async fn observe_messages<F>(
    js: &jetstream::Context,
    stream: &str,
    filters: Vec<String>,
    mut on_message: F,
) -> Result<Observer, BenchError>
where
    F: FnMut(&jetstream::Message) + Send + 'static,
{
    let what = format!("observe {stream} {filters:?}");
    let s = js
        .get_stream_no_info(stream)
        .await
        .map_err(|e| BenchError::nats(&what, e))?;
    let (filter_subject, filter_subjects) = if filters.len() == 1 {
        (filters[0].clone(), Vec::new())
    } else {
        (String::new(), filters)
    };
    let consumer = s
        .create_consumer(OrderedConfig {
            filter_subject,
            filter_subjects,
            deliver_policy: DeliverPolicy::All,
            headers_only: true,
            ..Default::default()
        })
        .await
        .map_err(|e| BenchError::nats(&what, e))?;
    let mut messages = consumer
        .messages()
        .await
        .map_err(|e| BenchError::nats(&what, e))?;
    let task = tokio::spawn(async move {
        while let Some(m) = messages.next().await {
            match m {
                Ok(m) => on_message(&m),
                Err(e) => tracing::debug!(error = %e, "observer: ordered consumer error"),
            }
        }
    });
    Ok(Observer { task })
}

/// The sequence number in a correlation token `<prefix><seq>`.
pub(crate) fn seq_of(correlation: &str, prefix: char) -> Option<u64> {
    correlation.strip_prefix(prefix)?.parse().ok()
}
