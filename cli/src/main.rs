//! `choreo`: the command line of the choreo engine.

mod demo;
mod dev;
mod format;
mod publish;
mod sagas;
mod tail;

use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

/// choreo: a durable-workflow hybrid engine on NATS JetStream.
#[derive(Debug, Parser)]
#[command(name = "choreo", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where the log is; shared by the commands that talk to NATS.
#[derive(Debug, Clone, Args)]
struct Conn {
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
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a local nats-server with JetStream and the choreo streams until Ctrl-C.
    Dev(dev::DevArgs),
    /// Run a small choreography end to end and print what happened.
    Demo(demo::DemoArgs),
    /// Publish one event (JSON data is converted to msgpack).
    Publish(publish::PublishArgs),
    /// Follow the log, one line per event.
    Tail(tail::TailArgs),
    /// Inspect saga instances in a node's store (`list`, `show`).
    Sagas(sagas::SagasArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CHOREO_LOG")
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
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Dev(a) => dev::run(a).await,
            Command::Demo(a) => demo::run(a).await,
            Command::Publish(a) => publish::run(a).await,
            Command::Tail(a) => tail::run(a).await,
            Command::Sagas(a) => sagas::run(a),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
