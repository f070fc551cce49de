//! # choreo-cli
//!
//! The `choreo` command line as a library, so a team's own binary can mount the operator
//! commands with **its** sagas registered (replay needs the saga's code):
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
//!     choreo_cli::Operator::new().saga(Checkout).main()
//! }
//! ```
//!
//! [`OperatorCommand`] is the operator subcommand set (`events`, `trace`, `sagas`, `replay`,
//! `partitions`, `dlq`, `stats`) for embedding in an existing clap CLI; [`Operator`] is the whole
//! `choreo` application (those plus `dev`, `demo`, `publish`, `tail`).

mod approve;
mod bench;
mod chaos;
mod config;
mod demo;
mod dev;
mod dlq;
mod events;
mod format;
mod node;
mod partitions;
mod publish;
mod replay;
mod sagas;
mod stalls;
mod stats;
mod table;
mod tail;

use std::ffi::OsString;
use std::process::ExitCode;
use std::sync::Arc;

use choreo::{Replayable, Saga};
use clap::{Args, Parser, Subcommand};
use thiserror::Error;

pub use approve::ApproveArgs;
pub use dlq::DlqArgs;
pub use events::{EventsArgs, TraceArgs};
pub use partitions::PartitionsArgs;
pub use replay::ReplayArgs;
pub use sagas::SagasArgs;
pub use stalls::StallsArgs;
pub use stats::StatsArgs;

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
    fn bus_config(&self) -> anyhow::Result<choreo::BusConfig> {
        Ok(choreo::BusConfig::builder()
            .url(self.nats.clone())
            .namespace(self.namespace.clone())
            .partitions(self.partitions)
            .client_name("choreo-cli")
            .build()?)
    }

    async fn bus(&self) -> anyhow::Result<choreo::Bus> {
        Ok(choreo::Bus::connect(self.bus_config()?).await?)
    }
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
    Approve(ApproveArgs),
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
            Self::Approve(a) => approve::run(a).await?,
        }
        Ok(())
    }
}

#[derive(Debug, Parser)]
#[command(
    name = "choreo",
    version,
    about = "choreo: a durable-workflow hybrid engine on NATS JetStream",
    after_help = "Defaults come from --config FILE, $CHOREO_CONFIG or ./choreo.toml \
                  (keys: nats, namespace, partitions, data_dir); flags and CHOREO_* variables win."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a local nats-server with JetStream and the choreo streams until Ctrl-C.
    Dev(dev::DevArgs),
    /// Run an example swarm (travel, or release) end to end and print what happened.
    Demo(demo::DemoArgs),
    /// Run one node hosting an example's actors and sagas until SIGTERM or Ctrl-C.
    Node(node::NodeArgs),
    /// Publish one event (JSON data is converted to msgpack).
    Publish(publish::PublishArgs),
    /// Follow the log, one line per event.
    Tail(tail::TailArgs),
    /// Benchmark the engine against the raw JetStream baseline (and a peer) in one run.
    Bench(bench::BenchArgs),
    /// The chaos suite: real servers and nodes through seeded faults, checked from the log.
    Chaos(chaos::ChaosArgs),
    /// Print a shell completion script: `choreo completions bash > /etc/bash_completion.d/choreo`
    /// (zsh: into a directory on `$fpath` as `_choreo`; fish: `~/.config/fish/completions/`).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    #[command(flatten)]
    Ops(OperatorCommand),
}

/// The `choreo` application with a set of registered sagas.
#[derive(Default, Clone)]
pub struct Operator {
    sagas: Vec<Arc<dyn Replayable>>,
}

impl std::fmt::Debug for Operator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.sagas.iter().map(|s| s.saga_name()).collect();
        f.debug_struct("Operator").field("sagas", &names).finish()
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
        quiet_on_broken_pipe();
        let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
        let args = match config::apply(args) {
            Ok(a) => a,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        };
        let cli = Cli::parse_from(args);
        if let Command::Completions { shell } = &cli.command {
            use clap::CommandFactory as _;
            let mut cmd = Cli::command();
            clap_complete::generate(*shell, &mut cmd, "choreo", &mut std::io::stdout());
            return ExitCode::SUCCESS;
        }
        let log_filter = std::env::var("CHOREO_LOG").unwrap_or_else(|_| "error".to_owned());
        #[cfg(feature = "otlp")]
        let telemetry = if choreo::Telemetry::configured() {
            match choreo::Telemetry::init("choreo", &log_filter, std::time::Duration::from_secs(10))
            {
                Ok(t) => Some(t),
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::FAILURE;
                }
            }
        } else {
            None
        };
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_new(&log_filter)
                    .unwrap_or_else(|_| "error".into()),
            )
            .with_writer(std::io::stderr)
            .try_init();
        let runtime = match tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                eprintln!("error: cannot start the async runtime: {e}");
                return ExitCode::FAILURE;
            }
        };
        let sagas = self.sagas;
        let result: Result<(), CommandError> = runtime.block_on(async move {
            match cli.command {
                Command::Dev(a) => Ok(dev::run(a).await?),
                Command::Demo(a) => Ok(demo::run(a).await?),
                Command::Node(a) => Ok(node::run(a).await?),
                Command::Publish(a) => Ok(publish::run(a).await?),
                Command::Tail(a) => Ok(tail::run(a).await?),
                Command::Bench(a) => Ok(bench::run(a).await?),
                Command::Chaos(a) => Ok(chaos::run(a).await?),
                Command::Completions { .. } => Ok(()), // answered before the runtime
                Command::Ops(op) => op.run(&sagas).await,
            }
        });
        #[cfg(feature = "otlp")]
        if let Some(t) = telemetry {
            runtime.block_on(t.shutdown());
        }
        match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        }
    }
}

/// `choreo … | head`: when the reader goes away, printing fails with a broken pipe; that ends
/// the command quietly (exit 0, as `head` asked), not with a panic and exit 101.
fn quiet_on_broken_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let msg = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if msg.contains("failed printing to stdout") && msg.contains("Broken pipe") {
            std::process::exit(0);
        }
        default(info);
    }));
}
