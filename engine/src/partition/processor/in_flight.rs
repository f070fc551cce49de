//! What of a correlation is still in flight, for the deadlock check: the events its last commit
//! sent that a reactor has not consumed yet (from the reactors' positions alone), and every
//! event of it on the log after the position of a consumer that will read it (a scan).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use choreo_schemas::CorrelationId;

use super::Processor;
use crate::coordination::{ActorKind, Topology};
use crate::error::BusError;

/// How many of a correlation's messages the in-flight check reads before it gives up (and
/// counts the correlation as in doubt).
const IN_FLIGHT_SCAN: usize = 1000;
/// How long the reactors' consumer positions read for one check serve the others (a floor
/// read earlier is a lower bound of the floor now: reusing it is safe).
const FLOORS_FOR: Duration = Duration::from_millis(250);

/// Each reactor's consumer ack floor, by reactor name.
pub(super) type Floors = Arc<Vec<(String, u64)>>;

impl Processor {
    /// The reactors' ack floors, read at most once per [`FLOORS_FOR`] (again when the topology
    /// has a reactor the last read did not cover).
    async fn floors(&mut self, topo: &Topology) -> Result<Floors, BusError> {
        let cached = self
            .waits
            .floors
            .as_ref()
            .filter(|(at, f)| {
                at.elapsed() < FLOORS_FOR
                    && topo
                        .actors()
                        .filter(|a| a.decl.kind == ActorKind::Reactor)
                        .all(|a| f.iter().any(|(n, _)| *n == a.decl.name))
            })
            .map(|(_, f)| Arc::clone(f));
        if let Some(f) = cached {
            return Ok(f);
        }
        let stream = self.env.bus.config().events_stream();
        let mut read = Vec::new();
        for a in topo.actors().filter(|a| a.decl.kind == ActorKind::Reactor) {
            let floor = self.env.bus.consumed_through(&stream, &a.decl.name).await?;
            read.push((a.decl.name.clone(), floor));
        }
        let read = Arc::new(read);
        self.waits.floors = Some((Instant::now(), Arc::clone(&read)));
        Ok(read)
    }

    /// What the correlation's last commit sent, by type: not yet consumed by a reactor that
    /// consumes it (`pending`: in flight for sure), and consumed (`consumed`: what the
    /// reactors made of it is on the log, applied or not). Known from the reactors' positions
    /// alone.
    pub(super) async fn sent_in_flight(
        &mut self,
        corr: &str,
        topo: &Topology,
    ) -> Result<(BTreeSet<String>, BTreeSet<String>), BusError> {
        let Some(sent) = self.waits.emitted.get(corr).cloned() else {
            return Ok(Default::default());
        };
        let floors = self.floors(topo).await?;
        let (mut pending, mut consumed) = (BTreeSet::new(), BTreeSet::new());
        for (seq, ty) in sent {
            let consumers: Vec<u64> = floors
                .iter()
                .filter(|(name, _)| {
                    topo.actor(name)
                        .is_some_and(|a| a.decl.consumes.contains(&ty))
                })
                .map(|(_, f)| *f)
                .collect();
            if consumers.iter().any(|f| seq > *f) {
                pending.insert(ty);
            } else if !consumers.is_empty() {
                consumed.insert(ty);
            }
        }
        Ok((pending, consumed))
    }

    /// The types of the correlation's events still to be consumed: by this processor (after
    /// its applied sequence, of a saga input type) or by a reactor of the topology (after its
    /// consumer's ack floor, of a type it consumes), redriven copies included. `None`: too
    /// many to tell.
    pub(super) async fn in_flight(
        &mut self,
        corr: &str,
        topo: &Topology,
    ) -> Result<Option<BTreeSet<String>>, BusError> {
        let stream = self.env.bus.config().events_stream();
        let by_name = self.floors(topo).await?;
        let floors: Vec<(&BTreeSet<String>, u64)> = by_name
            .iter()
            .filter_map(|(name, f)| topo.actor(name).map(|a| (&a.decl.consumes, *f)))
            .collect();
        let from = floors
            .iter()
            .map(|(_, f)| *f)
            .fold(self.applied_seq, u64::min);
        let correlation = CorrelationId::new(corr).map_err(|e| BusError::js("correlation", e))?;
        let subjects = self.env.bus.subjects();
        let mut msgs = Vec::new();
        for filter in [
            subjects.correlation_filter(self.partition, &correlation),
            subjects.redrive_correlation_filter(self.partition, &correlation),
        ] {
            match self
                .env
                .bus
                .scan_after(&stream, from, &filter, IN_FLIGHT_SCAN)
                .await?
            {
                Some(found) => msgs.extend(found),
                None => return Ok(None),
            }
        }
        let redrive = format!("{}.redrive.", subjects.root());
        let mut out = BTreeSet::new();
        for (seq, subject) in msgs {
            // `<root>.redrive.<actor>.<p>.<corr>.<type>`: for the actor it names only.
            let (only, ty) = match subject.strip_prefix(redrive.as_str()) {
                Some(rest) => {
                    let mut parts = rest.splitn(4, '.');
                    let actor = parts.next();
                    match parts.nth(2) {
                        Some(ty) => (actor, ty),
                        None => continue,
                    }
                }
                None => match subjects.parse_event(&subject) {
                    Some((_, _, ty)) => (None, ty),
                    None => continue,
                },
            };
            let for_sagas = seq > self.applied_seq
                && self.env.sagas.iter().any(|s| {
                    only.is_none_or(|a| a == s.name().as_str())
                        && s.inputs().iter().any(|i| i.as_str() == ty)
                });
            let for_reactors = by_name.iter().any(|(name, f)| {
                seq > *f
                    && only.is_none_or(|a| a == name)
                    && topo
                        .actor(name)
                        .is_some_and(|a| a.decl.consumes.contains(ty))
            });
            if for_sagas || for_reactors {
                out.insert(ty.to_owned());
            }
        }
        Ok(Some(out))
    }
}
