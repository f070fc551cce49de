//! choreo's chaos suite: starts real nats-servers and `choreo node` processes, drives a workload
//! through a seeded schedule of faults, heals every fault, waits until the log is quiet, then
//! checks invariants by reading only what was written: the log, the changelog, the DLQ (and,
//! for the built-in travel scenario, the providers' ledger).
//!
//! Layers, lowest first: [`rng`] and [`schedule`] (pure: a seed is a schedule), [`proxy`] (the
//! TCP proxy every node connects through), [`topology`] (servers, proxies, node processes),
//! [`nemesis`] (applies and heals faults), [`workload`], [`checker`] (invariants; [`fencing`] its own file) and
//! [`travel`] (the built-in scenario), [`report`] and [`svg`], then [`scenario`] and [`run`]
//! (the phases: warm-up, faults, heal, quiescence, check).

pub mod checker;
pub mod error;
pub mod fencing;
pub mod file;
pub mod nemesis;
pub mod proxy;
pub mod report;
pub mod rng;
pub mod run;
pub mod scenario;
pub mod schedule;
pub mod svg;
pub mod topology;
pub mod travel;
pub mod workload;

pub use checker::{Anomaly, EffectTypes, Expectations, Invariant, LogView, Verdict, INVARIANTS};
pub use error::ChaosError;
pub use file::ScenarioFile;
pub use report::Report;
pub use run::{run, Scenario};
pub use scenario::{travel_node_args, ScenarioBuilder, TRAVEL_STEP_TIMEOUT};
pub use schedule::{Fault, FaultKind, Plan, Schedule, Target};
pub use topology::NodeCommand;
pub use workload::Workload;
