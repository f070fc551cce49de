//! # choreo-ops
//!
//! choreo's operator commands as a library that depends on the engine only, so a team's own
//! binary can mount them with **its** sagas registered (replay needs the saga's code):
//!
//! ```no_run
//! # use choreo::{Event, EventType, Saga, SagaContext, SagaError};
//! # #[derive(Default, serde::Serialize, serde::Deserialize)] struct S;
//! # struct Checkout;
//! # impl Saga for Checkout {
//! #     type State = S;
//! #     fn name(&self) -> &str { "checkout" }
//! #     fn starts_on(&self) -> Vec<EventType> { vec![] }
//! #     fn continues_on(&self) -> Vec<EventType> { vec![] }
//! #     fn emits(&self) -> Vec<EventType> { vec![] }
//! #     fn handle(&self, _: &mut S, _: &Event, _: &mut SagaContext) -> Result<(), SagaError> { Ok(()) }
//! #     fn on_timeout(&self, _: &mut S, _: &str, _: &mut SagaContext) -> Result<(), SagaError> { Ok(()) }
//! # }
//! fn main() -> std::process::ExitCode {
//!     // `my-ops events ORDER`, `my-ops replay checkout ORDER`, `my-ops dlq list`, ...
//!     choreo_ops::Operator::new().saga(Checkout).main()
//! }
//! ```
//!
//! [`OperatorCommand`] is the subcommand set (`events`, `trace`, `sagas`, `replay`,
//! `partitions`, `dlq`, `stats`, `stalls`, `publish`, `tail`, and `approve` with the feature
//! `approvals`) for embedding in an
//! existing clap CLI, with [`app`] for the process around it; [`Operator`] is a whole binary of
//! those plus `completions`. The `choreo` application (crate `choreo-cli`) is this set plus
//! `dev`, `demo`, `node`, `bench` and `chaos`, which need the examples, benches and chaos suite.

pub mod app;
#[cfg(feature = "approvals")]
mod approve;
mod config;
mod dlq;
mod events;
mod format;
mod partitions;
mod publish;
mod replay;
mod sagas;
mod stalls;
mod stats;
mod style;
mod table;
mod tail;

use std::ffi::OsString;
use std::process::ExitCode;
use std::sync::Arc;

use choreo::{Replayable, Saga};
use clap::{Args, Parser, Subcommand};
use thiserror::Error;

#[cfg(feature = "approvals")]
pub use approve::ApproveArgs;
pub use dlq::DlqArgs;
pub use events::{EventsArgs, TraceArgs};
pub use partitions::PartitionsArgs;
pub use publish::PublishArgs;
pub use replay::ReplayArgs;
pub use sagas::SagasArgs;
pub use stalls::StallsArgs;
pub use stats::StatsArgs;
pub use tail::TailArgs;

/// A command failed; the message is one line meant for the operator.
#[derive(Debug, Error)]
#[error("{0}")]
pub struct CommandError(String);

impl From<anyhow::Error> for CommandError {
    fn from(e: anyhow::Error) -> Self {
        Self(format!("{e:#}"))
    }
}

/// Where the log is; shared by the commands that talk to NATS.
#[derive(Debug, Clone, Args)]
pub struct Conn {
    /// NATS URL.
    #[arg(long, env = "CHOREO_NATS_URL", default_value = choreo::DEFAULT_NATS_URL)]
    nats: String,
    /// Namespace: subject root and stream-name prefix.
    #[arg(long, env = "CHOREO_NAMESPACE", default_value = "choreo")]
    namespace: String,
    /// Partition count of the log (must match the log's, fixed at creation).
    #[arg(long, env = "CHOREO_PARTITIONS", default_value_t = 16)]
    partitions: u16,
}

impl Conn {
    fn bus_config_builder(&self) -> choreo::BusConfigBuilder {
        choreo::BusConfig::builder()
            .url(self.nats.clone())
            .namespace(self.namespace.clone())
            .partitions(self.partitions)
            .client_name("choreo-ops")
    }

    fn bus_config(&self) -> anyhow::Result<choreo::BusConfig> {
        Ok(self.bus_config_builder().build()?)
    }

    async fn bus(&self) -> anyhow::Result<choreo::Bus> {
        Ok(choreo::Bus::open(self.bus_config()?).await?)
    }
}

/// Parse a `--data-format` value: `msgpack` or `json`.
pub fn parse_data_format(s: &str) -> Result<choreo::DataFormat, String> {
    choreo::DataFormat::parse(s)
        .ok_or_else(|| format!("{s:?} is not a data format (msgpack, json)"))
}

/// The operator commands, to mount in a binary that registers its sagas.
#[derive(Debug, Subcommand)]
pub enum OperatorCommand {
    /// Events of one correlation, in log order.
    Events(EventsArgs),
    /// The causal tree of one correlation (tree, DOT or Mermaid).
    Trace(TraceArgs),
    /// Inspect saga instances in the state changelog (`list`, `show`), also while nodes run.
    Sagas(SagasArgs),
    /// Replay a saga instance from the log and compare with the log and its changelog record.
    Replay(ReplayArgs),
    /// Partitions: owner and epoch, changelog head, instances, events after the applied sequence.
    Partitions(PartitionsArgs),
    /// Dead letters: `list`, `show`, `redrive`, `purge`.
    Dlq(DlqArgs),
    /// Queue lengths and sizes, read from JetStream.
    Stats(StatsArgs),
    /// Open waits the stall watchdog reported, with what they await and who could produce it.
    Stalls(StallsArgs),
    /// Answer a pending approval request (`--deny` to refuse).
    #[cfg(feature = "approvals")]
    Approve(ApproveArgs),
    /// Publish one event (JSON data is converted to msgpack).
    Publish(PublishArgs),
    /// Follow the log, one line per event.
    Tail(TailArgs),
}

impl OperatorCommand {
    /// Run the command; `sagas` are the sagas this binary can replay.
    pub async fn run(self, sagas: &[Arc<dyn Replayable>]) -> Result<(), CommandError> {
        match self {
            Self::Events(a) => events::run_events(a).await?,
            Self::Trace(a) => events::run_trace(a).await?,
            Self::Sagas(a) => sagas::run(a).await?,
            Self::Replay(a) => replay::run(a, sagas).await?,
            Self::Partitions(a) => partitions::run(a).await?,
            Self::Dlq(a) => dlq::run(a).await?,
            Self::Stats(a) => stats::run(a).await?,
            Self::Stalls(a) => stalls::run(a).await?,
            #[cfg(feature = "approvals")]
            Self::Approve(a) => approve::run(a).await?,
            Self::Publish(a) => publish::run(a).await?,
            Self::Tail(a) => tail::run(a).await?,
        }
        Ok(())
    }
}

#[derive(Debug, Parser)]
#[command(
    version,
    about = "choreo operator commands",
    after_help = app::CONFIG_HELP
)]
struct OperatorCli {
    #[command(subcommand)]
    command: OperatorCliCommand,
}

#[derive(Debug, Subcommand)]
enum OperatorCliCommand {
    #[command(flatten)]
    Ops(OperatorCommand),
    /// Print a shell completion script (bash, zsh, fish, ...).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

/// A binary of the operator commands with a set of registered sagas.
#[derive(Default, Clone)]
pub struct Operator {
    sagas: Vec<Arc<dyn Replayable>>,
}

impl std::fmt::Debug for Operator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Operator")
            .field("sagas", &self.saga_names())
            .finish()
    }
}

impl Operator {
    /// No sagas registered.
    pub fn new() -> Self {
        Self::default()
    }

    /// Register a saga so `replay` can run it.
    pub fn saga<S: Saga>(mut self, saga: S) -> Self {
        self.sagas.push(Arc::new(saga));
        self
    }

    /// The registered sagas, for a binary that runs [`OperatorCommand`] itself.
    pub fn sagas(&self) -> &[Arc<dyn Replayable>] {
        &self.sagas
    }

    fn saga_names(&self) -> Vec<&str> {
        self.sagas.iter().map(|s| s.saga_name()).collect()
    }

    /// Parse the process's arguments, run, and turn errors into one line on stderr.
    pub fn main(self) -> ExitCode {
        self.main_from(std::env::args_os())
    }

    /// [`Operator::main`] with explicit arguments (the first is the program name).
    pub fn main_from<I, T>(self, args: I) -> ExitCode
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let args = match app::prepare_args(args) {
            Ok(a) => a,
            Err(code) => return code,
        };
        let name = app::program_name(&args, "choreo-ops");
        let cli = OperatorCli::parse_from(args);
        match cli.command {
            OperatorCliCommand::Completions { shell } => {
                use clap::CommandFactory as _;
                app::print_completions(shell, &mut OperatorCli::command(), &name);
                ExitCode::SUCCESS
            }
            OperatorCliCommand::Ops(op) => app::execute(&name, op.run(&self.sagas)),
        }
    }
}
