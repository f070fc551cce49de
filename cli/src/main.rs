//! `choreo`: the command line of the choreo engine. The operator commands come from
//! `choreo-ops` (the lean library a team mounts in its own binary); this application adds what
//! needs the examples, the benches and the chaos suite.

mod bench;
mod chaos;
mod demo;
mod dev;
mod node;

use std::process::ExitCode;

use choreo_ops::{app, OperatorCommand};
use clap::{CommandFactory as _, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "choreo",
    version,
    about = "choreo: a durable-workflow hybrid engine on NATS JetStream",
    after_help = app::CONFIG_HELP
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

fn main() -> ExitCode {
    let args = match app::prepare_args(std::env::args_os()) {
        Ok(a) => a,
        Err(code) => return code,
    };
    let cli = Cli::parse_from(args);
    // The shipped binary can replay the example swarms' sagas; a team mounts its own.
    let operator = choreo_ops::Operator::new()
        .saga(choreo_example_travel::TripSaga::new(
            choreo_example_travel::TravelOptions::new(0, 0, Default::default()).step_timeout,
        ))
        .saga(choreo_example_release::ReleaseSaga {
            step_timeout: std::time::Duration::from_secs(30),
            approval_timeout: std::time::Duration::from_millis(1500),
        });
    match cli.command {
        Command::Completions { shell } => {
            app::print_completions(shell, &mut Cli::command(), "choreo");
            ExitCode::SUCCESS
        }
        Command::Dev(a) => app::execute("choreo", async { Ok(dev::run(a).await?) }),
        Command::Demo(a) => app::execute("choreo", async { Ok(demo::run(a).await?) }),
        Command::Node(a) => app::execute("choreo", async { Ok(node::run(a).await?) }),
        Command::Bench(a) => app::execute("choreo", async { Ok(bench::run(a).await?) }),
        Command::Chaos(a) => app::execute("choreo", async { Ok(chaos::run(a).await?) }),
        Command::Ops(op) => app::execute("choreo", op.run(operator.sagas())),
    }
}
