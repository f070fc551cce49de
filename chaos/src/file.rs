//! A scenario file (TOML) for `choreo chaos run --scenario FILE`: the user's own node command,
//! start events and steps, without writing Rust. Replay needs the saga's code, so a file
//! scenario skips the replay invariant (the library API takes a replayer).
//!
//! ```toml
//! seed = 42
//! servers = 3
//! nodes = 3
//! rate = 10.0
//! duration_secs = 60
//! kinds = ["kill-node", "pause-node", "cut", "kill-server", "duplicate", "poison"]
//! lease_ttl_ms = 2000
//! partitions = 8
//!
//! [node]
//! program = "target/debug/orders-node"
//! args = ["--nats", "{nats}", "--node-id", "{id}", "--data-dir", "{data_dir}"]
//!
//! [workload]
//! saga = "order"
//! start_type = "order.placed.v1"
//! data = { order = "{correlation}", qty = 2 }
//!
//! [[effects]]
//! request = "stock.reserve.v1"
//! confirmed = "stock.reserved.v1"
//! compensate = "stock.release.v1"
//! compensated = "stock.released.v1"
//! ```

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use choreo::{CorrelationId, Event, EventType};
use serde::Deserialize;

use crate::checker::{EffectTypes, Expectations};
use crate::error::ChaosError;
use crate::scenario::ScenarioBuilder;
use crate::schedule::FaultKind;
use crate::topology::NodeCommand;
use crate::workload::Workload;

/// The file's shape; every key is optional except what a custom workload needs.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioFile {
    /// The seed.
    pub seed: Option<u64>,
    /// Servers (1, or 3..=5).
    pub servers: Option<usize>,
    /// Nodes.
    pub nodes: Option<usize>,
    /// Start events per second.
    pub rate: Option<f64>,
    /// The fault phase, in seconds.
    pub duration_secs: Option<u64>,
    /// Fault kinds by name (`choreo chaos run --help`); empty: a control run.
    pub kinds: Option<Vec<String>>,
    /// Faults of each kind.
    pub per_kind: Option<usize>,
    /// The nodes' lease TTL.
    pub lease_ttl_ms: Option<u64>,
    /// Partitions of the log.
    pub partitions: Option<u16>,
    /// The node command.
    pub node: Option<NodeSection>,
    /// The start events (default: the travel example's trips).
    pub workload: Option<WorkloadSection>,
    /// The saga's steps, for `leaked` and `order`.
    #[serde(default)]
    pub effects: Vec<EffectSection>,
    /// Types that may repeat in one correlation.
    #[serde(default)]
    pub repeatable: Vec<String>,
}

/// `[node]`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSection {
    /// The executable.
    pub program: PathBuf,
    /// Its arguments, with `{nats}`, `{id}`, `{data_dir}`.
    #[serde(default)]
    pub args: Vec<String>,
}

/// `[workload]`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadSection {
    /// The saga the start events start.
    pub saga: String,
    /// Their type.
    pub start_type: String,
    /// Their data (encoded as msgpack); in strings, `{correlation}` and `{index}` are replaced.
    #[serde(default)]
    pub data: Option<toml::Value>,
    /// Their CloudEvents source.
    #[serde(default)]
    pub source: Option<String>,
}

/// `[[effects]]`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EffectSection {
    /// The command.
    pub request: String,
    /// Its confirmation.
    pub confirmed: String,
    /// Its compensation.
    pub compensate: String,
    /// The compensation's confirmation.
    pub compensated: String,
}

fn ty(s: &str) -> Result<EventType, ChaosError> {
    EventType::new(s).map_err(|e| ChaosError::Scenario(format!("{s:?}: {e}")))
}

impl ScenarioFile {
    /// Parse `text`.
    pub fn parse(text: &str) -> Result<Self, ChaosError> {
        toml::from_str(text).map_err(|e| ChaosError::Scenario(e.to_string()))
    }

    /// The node command, if the file names one.
    pub fn command(&self) -> Option<NodeCommand> {
        self.node.as_ref().map(|n| NodeCommand {
            program: n.program.clone(),
            args: n.args.clone(),
        })
    }

    /// Apply the file's settings to `b`.
    pub fn apply(&self, mut b: ScenarioBuilder) -> Result<ScenarioBuilder, ChaosError> {
        if let Some(x) = self.seed {
            b = b.seed(x);
        }
        if let Some(x) = self.servers {
            b = b.servers(x);
        }
        if let Some(x) = self.nodes {
            b = b.nodes(x);
        }
        if let Some(x) = self.rate {
            b = b.rate(x);
        }
        if let Some(x) = self.duration_secs {
            b = b.faults_for(Duration::from_secs(x));
        }
        if let Some(x) = self.per_kind {
            b = b.per_kind(x);
        }
        if let Some(x) = self.lease_ttl_ms {
            b = b.lease_ttl(Duration::from_millis(x));
        }
        if let Some(x) = self.partitions {
            b = b.partitions(x);
        }
        if let Some(kinds) = &self.kinds {
            let mut v = Vec::new();
            for k in kinds {
                v.push(
                    FaultKind::parse(k)
                        .ok_or_else(|| ChaosError::Scenario(format!("unknown fault kind {k:?}")))?,
                );
            }
            b = b.kinds(v);
        }
        if let Some(w) = &self.workload {
            let data = match &w.data {
                Some(v) => serde_json::to_value(v)
                    .map_err(|e| ChaosError::Scenario(format!("workload.data: {e}")))?,
                None => serde_json::Value::Object(Default::default()),
            };
            let workload = Template {
                saga: w.saga.clone(),
                start_type: ty(&w.start_type)?,
                data,
                source: w.source.clone().unwrap_or_else(|| "/chaos".to_owned()),
            };
            let effects = self
                .effects
                .iter()
                .map(|e| {
                    Ok(EffectTypes {
                        request: ty(&e.request)?,
                        confirmed: ty(&e.confirmed)?,
                        compensate: ty(&e.compensate)?,
                        compensated: ty(&e.compensated)?,
                    })
                })
                .collect::<Result<_, ChaosError>>()?;
            let mut repeatable: Vec<EventType> = self
                .repeatable
                .iter()
                .map(|t| ty(t))
                .collect::<Result<_, _>>()?;
            for e in &self.effects {
                repeatable.push(ty(&e.compensate)?);
                repeatable.push(ty(&e.compensated)?);
            }
            b = b.workload(
                Arc::new(workload),
                Expectations {
                    saga: w.saga.clone(),
                    effects,
                    repeatable,
                    replay: None,
                    replay_budget: Duration::ZERO,
                },
            );
        } else if !self.effects.is_empty() {
            return Err(ChaosError::Scenario(
                "[[effects]] needs a [workload] (the travel workload knows its own)".into(),
            ));
        }
        Ok(b)
    }
}

/// Start events from a template.
struct Template {
    saga: String,
    start_type: EventType,
    data: serde_json::Value,
    source: String,
}

fn fill(v: &serde_json::Value, corr: &str, index: u32) -> serde_json::Value {
    use serde_json::Value;
    match v {
        Value::String(s) => Value::String(
            s.replace("{correlation}", corr)
                .replace("{index}", &index.to_string()),
        ),
        Value::Array(a) => Value::Array(a.iter().map(|x| fill(x, corr, index)).collect()),
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, x)| (k.clone(), fill(x, corr, index)))
                .collect(),
        ),
        other => other.clone(),
    }
}

impl Workload for Template {
    fn saga(&self) -> &str {
        &self.saga
    }
    fn start_type(&self) -> EventType {
        self.start_type.clone()
    }
    fn start(&self, index: u32, run: &str) -> Result<Event, ChaosError> {
        let corr = format!("{}-{index}-{run}", self.saga);
        let data = rmp_serde::to_vec_named(&fill(&self.data, &corr, index))
            .map_err(|e| ChaosError::Scenario(format!("workload.data: {e}")))?;
        let c =
            CorrelationId::new(corr.as_str()).map_err(|e| ChaosError::Scenario(e.to_string()))?;
        Ok(Event::root_raw(
            self.source.clone(),
            c,
            self.start_type.clone(),
            data,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_file_parses_and_fills_its_template() -> Result<(), ChaosError> {
        let text = r#"
seed = 42
servers = 1
kinds = ["kill-node", "poison"]
[node]
program = "orders-node"
args = ["--nats", "{nats}"]
[workload]
saga = "order"
start_type = "order.placed.v1"
data = { order = "{correlation}", qty = 2, tags = ["n{index}"] }
[[effects]]
request = "stock.reserve.v1"
confirmed = "stock.reserved.v1"
compensate = "stock.release.v1"
compensated = "stock.released.v1"
"#;
        let f = ScenarioFile::parse(text)?;
        assert_eq!(f.command().map(|c| c.args.len()), Some(2));
        let data = f.workload.as_ref().and_then(|w| w.data.clone());
        let json = serde_json::to_value(data).map_err(|e| ChaosError::Scenario(e.to_string()))?;
        let filled = fill(&json, "order-3-r", 3);
        assert_eq!(filled["order"], "order-3-r");
        assert_eq!(filled["qty"], 2);
        assert_eq!(filled["tags"][0], "n3");
        let cmd = f
            .command()
            .ok_or_else(|| ChaosError::Scenario("no node".into()))?;
        let s = f.apply(crate::Scenario::builder(cmd))?.build()?;
        assert_eq!(s.schedule().faults.len(), 2);
        Ok(())
    }

    #[test]
    fn unknown_keys_kinds_and_types_are_refused_with_a_reason() {
        assert!(ScenarioFile::parse("sed = 1").is_err());
        let f = ScenarioFile::parse("kinds = [\"meteor\"]").unwrap_or_default();
        let cmd = NodeCommand {
            program: "x".into(),
            args: vec![],
        };
        let err = f
            .apply(crate::Scenario::builder(cmd))
            .err()
            .map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("meteor")));
    }
}
