//! `choreo chaos run`: the chaos suite against the travel example's nodes (or the user's own
//! node command), with a seeded fault schedule, a report and a timeline picture.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context as _};
use choreo_chaos::{FaultKind, NodeCommand, Scenario, INVARIANTS};
use clap::{Args, Subcommand};

#[derive(Debug, Subcommand)]
pub(crate) enum ChaosCommand {
    /// Start servers and nodes, drive trips through a seeded schedule of faults, heal, wait
    /// for quiescence, and check the invariants from the log. Exit 0 only when all hold.
    #[command(after_long_help = after_help())]
    Run(RunArgs),
}

#[derive(Debug, Args)]
pub(crate) struct ChaosArgs {
    #[command(subcommand)]
    pub(crate) command: ChaosCommand,
}

#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// The CI scenario: 3 servers, 3 nodes, one fault of every kind in 60 s (about 3 minutes).
    #[arg(long)]
    quick: bool,
    /// Seed of the schedule, the jitter and the injections (default: from the clock; printed).
    #[arg(long)]
    seed: Option<u64>,
    /// Length of the fault phase (`90s`, `30m`, `1h`; plain numbers are seconds).
    #[arg(long, value_parser = parse_duration)]
    duration: Option<Duration>,
    /// nats-servers: 1, or a cluster of 3 (streams then have 3 replicas).
    #[arg(long)]
    servers: Option<usize>,
    /// Node processes.
    #[arg(long)]
    nodes: Option<usize>,
    /// Trips started per second (open loop).
    #[arg(long)]
    rate: Option<f64>,
    /// Faults of each kind.
    #[arg(long)]
    per_kind: Option<usize>,
    /// Fault kinds, comma-separated (default: all; `none`: a control run without faults).
    #[arg(long, value_delimiter = ',')]
    kinds: Vec<String>,
    /// The nodes' lease TTL in milliseconds (default 2000).
    #[arg(long)]
    lease_ttl_ms: Option<u64>,
    /// Partitions of the log (default 8).
    #[arg(long)]
    partitions: Option<u16>,
    /// Write the report as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write the timeline picture (SVG).
    #[arg(long)]
    svg: Option<PathBuf>,
    /// Keep the servers' and nodes' data and the nodes' logs in DIR.
    #[arg(long)]
    keep: Option<PathBuf>,
    /// The node command, instead of `choreo node --example travel`: the program and its
    /// arguments, where `{nats}`, `{id}` and `{data_dir}` are replaced per node. The node
    /// must print a line starting `choreo node ready` on stdout once it serves.
    #[arg(long, num_args = 1.., allow_hyphen_values = true)]
    node_cmd: Vec<String>,
    /// One more argument for the default node command (repeatable), e.g.
    /// `--node-arg=--retention-secs=60`.
    #[arg(long, allow_hyphen_values = true)]
    node_arg: Vec<String>,
    /// A scenario file (TOML: your node command, start events and steps; see the README).
    /// Flags given on the command line win over the file.
    #[arg(long)]
    scenario: Option<PathBuf>,
    /// No progress on stderr (the report still goes to stdout).
    #[arg(long)]
    quiet: bool,
}

fn after_help() -> String {
    let mut s = String::from("Nemeses (--kinds):\n");
    for k in FaultKind::ALL {
        s.push_str(&format!("  {:<14} {}\n", k.as_str(), k.help()));
    }
    s.push_str("\nInvariants (read from the log, the changelog and the DLQ after quiescence):\n");
    for (n, d) in INVARIANTS {
        s.push_str(&format!("  {n:<14} {d}\n"));
    }
    s.push_str(
        "  ledger         the travel providers' ledger: nothing applied twice, every booking of a \
         trip that did not complete cancelled, nothing of a completed trip cancelled\n",
    );
    s.push_str(
        "\nPhases: warm-up, faults, heal (every fault undone), quiescence (every consumer caught \
         up and the log still, bounded), check.\nThe schedule is printed first; --seed S \
         reproduces it.",
    );
    s
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = num.parse().map_err(|_| format!("not a duration: {s:?}"))?;
    let secs = match unit {
        "s" => Some(n),
        "m" => n.checked_mul(60),
        "h" => n.checked_mul(3600),
        _ => None,
    };
    secs.map(Duration::from_secs)
        .ok_or_else(|| format!("not a duration: {s:?} (use 90s, 30m or 1h)"))
}

pub(crate) async fn run(args: ChaosArgs) -> anyhow::Result<()> {
    match args.command {
        ChaosCommand::Run(a) => run_once(a).await,
    }
}

async fn run_once(a: RunArgs) -> anyhow::Result<()> {
    let file = match &a.scenario {
        Some(p) => Some(choreo_chaos::ScenarioFile::parse(
            &std::fs::read_to_string(p).with_context(|| format!("read {}", p.display()))?,
        )?),
        None => None,
    };
    let from_file = |f: fn(&choreo_chaos::ScenarioFile) -> Option<u64>| file.as_ref().and_then(f);
    let servers = a
        .servers
        .or_else(|| file.as_ref().and_then(|f| f.servers))
        .unwrap_or(3);
    let replicas = if servers >= 3 { 3 } else { 1 };
    let lease_ttl = Duration::from_millis(
        a.lease_ttl_ms
            .or(from_file(|f| f.lease_ttl_ms))
            .unwrap_or(2000),
    );
    let partitions = a
        .partitions
        .or_else(|| file.as_ref().and_then(|f| f.partitions))
        .unwrap_or(8);
    let command = match (
        a.node_cmd.split_first(),
        file.as_ref().and_then(|f| f.command()),
    ) {
        (Some((program, args)), _) => NodeCommand {
            program: program.into(),
            args: args.to_vec(),
        },
        (None, Some(c)) => c,
        (None, None) => {
            let mut args = choreo_chaos::travel_node_args(lease_ttl, partitions, replicas);
            args.extend(a.node_arg.iter().cloned());
            NodeCommand {
                program: std::env::current_exe().context("the choreo executable")?,
                args,
            }
        }
    };
    let seed = a.seed.or(from_file(|f| f.seed)).unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(1)
    });
    let mut b = Scenario::builder(command);
    if let Some(f) = &file {
        b = f.apply(b)?;
    }
    b = b
        .seed(seed)
        .servers(servers)
        .lease_ttl(lease_ttl)
        .partitions(partitions)
        .progress(!a.quiet);
    if !a.kinds.is_empty() {
        let mut v = Vec::new();
        if a.kinds != ["none"] {
            for k in &a.kinds {
                match FaultKind::parse(k) {
                    Some(k) => v.push(k),
                    None => bail!("unknown fault kind {k:?} (see choreo chaos run --help)"),
                }
            }
        }
        b = b.kinds(v);
    }
    if let Some(n) = a.nodes {
        b = b.nodes(n);
    }
    if let Some(r) = a.rate {
        b = b.rate(r);
    }
    if let Some(n) = a.per_kind {
        b = b.per_kind(n);
    }
    match a.duration {
        Some(d) => b = b.faults_for(d),
        None if file.as_ref().is_some_and(|f| f.duration_secs.is_some()) => {}
        None => b = b.faults_for(Duration::from_secs(if a.quick { 60 } else { 120 })),
    }
    if let Some(k) = &a.keep {
        b = b.keep(k);
    }
    let scenario = b.build()?;
    eprintln!("choreo chaos: seed {seed}");
    let report = choreo_chaos::run(scenario).await?;
    print!("{}", report.table());
    if let Some(p) = &a.json {
        std::fs::write(p, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("write {}", p.display()))?;
    }
    if let Some(p) = &a.svg {
        std::fs::write(p, choreo_chaos::svg::render(&report.timeline()))
            .with_context(|| format!("write {}", p.display()))?;
    }
    if !report.passed() {
        bail!(
            "{} anomalies; reproduce with --seed {seed}",
            report.verdict.anomalies.len()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_in_seconds_minutes_and_hours() {
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5d").is_err());
        assert!(parse_duration("99999999999999999999h").is_err());
    }
}
