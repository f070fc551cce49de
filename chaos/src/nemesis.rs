//! Applies and heals the faults of a schedule: signals to processes, proxy settings, and
//! injections on the log. What it injected is recorded for the checker, which must tell the
//! injected copies and poison apart from what the system wrote.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use choreo::{Bus, CorrelationId, Event, EventType};

use crate::error::ChaosError;
use crate::proxy::LinkFaults;
use crate::rng::Rng;
use crate::schedule::{Fault, FaultKind, Target};
use crate::topology::Topology;

/// Header marking a message the suite injected (a duplicate copy or poison).
pub const INJECTED_HEADER: &str = "choreo-chaos-injected";

/// A poison message and the DLQ reason it must be dead-lettered with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Poison {
    /// Its sequence in the events stream.
    pub sequence: u64,
    /// The reason code expected in the DLQ.
    pub reason: &'static str,
    /// What it was.
    pub shape: &'static str,
}

/// What the suite put on the log itself.
#[derive(Clone, Debug, Default)]
pub struct Injected {
    /// Sequences of duplicate copies (of real events, under new message ids).
    pub duplicates: BTreeMap<u64, String>,
    /// Poison, by sequence.
    pub poison: Vec<Poison>,
}

/// The producer's clock offset (seconds) the workload applies to new trips.
#[derive(Clone, Debug, Default)]
pub struct Skew(Arc<AtomicI64>);

impl Skew {
    /// The current offset in seconds.
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
    fn set(&self, secs: i64) {
        self.0.store(secs, Ordering::Relaxed);
    }
}

/// The fault injector of one run.
pub struct Nemesis {
    bus: Bus,
    js: jetstream::Context,
    rng: Rng,
    /// What was injected so far.
    pub injected: Injected,
    /// The producer's clock skew.
    pub skew: Skew,
    /// The type of the workload's start events (poison goes to its subjects).
    start_type: EventType,
}

impl Nemesis {
    /// A nemesis that injects through `bus` (connected directly to the servers).
    pub fn new(bus: Bus, seed: u64, start_type: EventType) -> Self {
        let js = bus.jetstream().clone();
        Self {
            bus,
            js,
            rng: Rng::new(seed ^ 0x006e_656d_6573_6973),
            injected: Injected::default(),
            skew: Skew::default(),
            start_type,
        }
    }

    /// Start `f`.
    pub async fn apply(&mut self, t: &mut Topology, f: &Fault) -> Result<(), ChaosError> {
        match (f.kind, f.target) {
            (FaultKind::KillNode, Target::Node(i)) => t.kill_node(i).await,
            (FaultKind::PauseNode, Target::Node(i)) => t.pause_node(i).await,
            (FaultKind::RestartNode, Target::Node(i)) => t.stop_node(i).await,
            (FaultKind::Cut, Target::Node(i)) => {
                t.set_links(
                    i,
                    &LinkFaults {
                        cut: true,
                        ..Default::default()
                    },
                );
                Ok(())
            }
            (FaultKind::Latency, Target::Node(i)) => {
                t.set_links(
                    i,
                    &LinkFaults {
                        latency: Duration::from_millis(f.param),
                        jitter: Duration::from_millis(f.param / 2),
                        ..Default::default()
                    },
                );
                Ok(())
            }
            (FaultKind::SlowLink, Target::Node(i)) => {
                t.set_links(
                    i,
                    &LinkFaults {
                        bandwidth: Some(f.param.max(1)),
                        ..Default::default()
                    },
                );
                Ok(())
            }
            (FaultKind::KillServer, Target::Server(i)) => t.kill_server(i).await,
            (FaultKind::PauseServer, Target::Server(i)) => t.pause_server(i).await,
            (FaultKind::Duplicate, _) => self.duplicate(f.param).await,
            (FaultKind::Poison, _) => self.poison(f.param).await,
            (FaultKind::ClockSkew, _) => {
                self.skew.set(f.skew_secs());
                Ok(())
            }
            (kind, target) => Err(ChaosError::Scenario(format!(
                "{kind} cannot target {target}"
            ))),
        }
    }

    /// Undo `f`.
    pub async fn heal(&mut self, t: &mut Topology, f: &Fault) -> Result<(), ChaosError> {
        match (f.kind, f.target) {
            (FaultKind::KillNode | FaultKind::RestartNode, Target::Node(i)) => {
                if !t.node_running(i) {
                    t.start_node(i).await?;
                }
                Ok(())
            }
            (FaultKind::PauseNode, Target::Node(i)) => t.resume_node(i).await,
            (FaultKind::Cut | FaultKind::Latency | FaultKind::SlowLink, Target::Node(i)) => {
                t.set_links(i, &LinkFaults::default());
                Ok(())
            }
            (FaultKind::KillServer, Target::Server(i)) => t.restart_server(i).await,
            (FaultKind::PauseServer, Target::Server(i)) => t.resume_server(i).await,
            (FaultKind::ClockSkew, _) => {
                self.skew.set(0);
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Republish `n` real events (picked at random from the log so far) under new message ids.
    async fn duplicate(&mut self, n: u64) -> Result<(), ChaosError> {
        let name = self.bus.config().events_stream();
        let mut stream = self
            .js
            .get_stream(&name)
            .await
            .map_err(|e| ChaosError::nats(format!("get stream {name}"), e))?;
        let last = stream
            .info()
            .await
            .map_err(|e| ChaosError::nats("stream info".to_owned(), e))?
            .state
            .last_sequence;
        for _ in 0..n {
            let seq = self.rng.range(1, last.max(1));
            let Ok(msg) = stream.get_raw_message(seq).await else {
                continue;
            };
            // Copies of real events only: a copy of injected poison would be dead-lettered
            // as a message the suite never recorded.
            if msg.headers.get(INJECTED_HEADER).is_some() {
                continue;
            }
            let mut headers = msg.headers.clone();
            // A copy the server's duplicate window does not catch: only the event id (ce-id)
            // says it is the same event.
            let copy_id = format!("chaos-dup-{seq}-{}", self.rng.next_u64());
            headers.insert(async_nats::header::NATS_MESSAGE_ID, copy_id.as_str());
            headers.insert(INJECTED_HEADER, "duplicate");
            let ack = self
                .js
                .publish_with_headers(msg.subject.to_string(), headers, msg.payload.clone())
                .await
                .map_err(|e| ChaosError::nats("publish a copy".to_owned(), e))?
                .await
                .map_err(|e| ChaosError::nats("publish a copy".to_owned(), e))?;
            self.injected
                .duplicates
                .insert(ack.sequence, format!("copy of #{seq} {}", msg.subject));
        }
        Ok(())
    }

    /// Publish `n` of each poison shape on the subjects the start events' consumers read.
    async fn poison(&mut self, n: u64) -> Result<(), ChaosError> {
        for _ in 0..n {
            let corr = CorrelationId::new(format!("poison-{:x}", self.rng.next_u64()).as_str())
                .map_err(|e| ChaosError::Scenario(e.to_string()))?;
            let p = self.bus.partition_of(&corr);
            let subject = self.bus.subjects().event(p, &corr, &self.start_type);
            let mut marked = async_nats::HeaderMap::new();
            marked.insert(INJECTED_HEADER, "poison");
            // 1. no CloudEvents headers at all
            let seq = self
                .publish(&subject, marked, b"not an event".to_vec())
                .await?;
            self.record(seq, "invalid_envelope", "no ce- headers");
            // 2. a valid envelope of the start type with a body that does not decode
            let garbage = Event::root_raw(
                "urn:chaos",
                corr.clone(),
                self.start_type.clone(),
                vec![0xc1, 0xff],
            );
            let mut h = choreo::headers_of(&garbage);
            h.insert(INJECTED_HEADER, "poison");
            let seq = self.publish(&subject, h, garbage.data.clone()).await?;
            self.record(seq, "bad_payload", "undecodable body");
            // 3. a valid envelope of a type nobody handles, on a consumed subject
            let ty = EventType::new("chaos.unknown.v1")
                .map_err(|e| ChaosError::Scenario(e.to_string()))?;
            let unknown = Event::root_raw("urn:chaos", corr.clone(), ty, vec![0x80]);
            let mut h = choreo::headers_of(&unknown);
            h.insert(INJECTED_HEADER, "poison");
            let seq = self.publish(&subject, h, unknown.data.clone()).await?;
            self.record(seq, "unknown_type", "unknown type on a consumed subject");
        }
        Ok(())
    }

    fn record(&mut self, sequence: u64, reason: &'static str, shape: &'static str) {
        self.injected.poison.push(Poison {
            sequence,
            reason,
            shape,
        });
    }

    async fn publish(
        &self,
        subject: &str,
        headers: async_nats::HeaderMap,
        body: Vec<u8>,
    ) -> Result<u64, ChaosError> {
        let err = |e: String| ChaosError::nats(format!("publish poison on {subject}"), e);
        let ack = self
            .js
            .publish_with_headers(subject.to_owned(), headers, body.into())
            .await
            .map_err(|e| err(e.to_string()))?
            .await
            .map_err(|e| err(e.to_string()))?;
        Ok(ack.sequence)
    }
}
