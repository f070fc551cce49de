//! `choreo demo --example deadlock`: the seed-002 swarm, one cyclic and one acyclic task, and
//! a report of the deadlock the engine found and broke.

use std::path::PathBuf;

use choreo::{BusConfig, CorrelationId, SagaStatus};
use choreo_example_deadlock::{CorrelationSummary, DeadlockOptions, Summary};

use super::DemoArgs;

/// Run the swarm on a node of this process and print what happened.
pub(super) async fn demo(
    args: &DemoArgs,
    cfg: BusConfig,
    bus: &choreo::Bus,
    url: &str,
    data_dir: PathBuf,
    temporary: bool,
) -> anyhow::Result<()> {
    if !args.json {
        println!(
            "choreo demo: the deadlock example (seed 002), one cyclic and one acyclic task of four agents, nats-server {} at {url}{}",
            bus.server_version(),
            if temporary { " (temporary)" } else { "" }
        );
        println!("  (the agents' model is scripted: pure text from the task, decided inside the saga handlers)");
    }
    let summary = choreo_example_deadlock::run(cfg, &DeadlockOptions::new(data_dir)).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
        return Ok(());
    }
    cyclic(bus, &summary).await?;
    acyclic(&summary.acyclic);
    println!("\nlook further:");
    if temporary {
        println!("  this run's server is gone; to keep the log and the saga state, run `choreo dev` in another terminal, then");
        println!("  choreo demo --example deadlock --nats nats://127.0.0.1:4222");
        println!("and:");
    }
    let c = &summary.cyclic.correlation;
    println!("  choreo events {c}");
    println!("  choreo trace {c} --format mermaid");
    println!("  choreo sagas list --saga tester");
    Ok(())
}

async fn cyclic(bus: &choreo::Bus, summary: &Summary) -> anyhow::Result<()> {
    let c = &summary.cyclic;
    println!(
        "\n{} (cyclic wiring): coder awaits tests, tester awaits docs, docs awaits code, planner awaits code",
        c.correlation
    );
    match c.deadlocks.as_slice() {
        [] => println!("  no deadlock detected"),
        found => {
            for d in found {
                println!(
                    "  deadlock detected by {}: a cycle of {} member(s)",
                    d.detected_by,
                    d.cycle.members.len()
                );
                let width = d
                    .cycle
                    .members
                    .iter()
                    .map(|m| m.saga.len())
                    .max()
                    .unwrap_or(0);
                for m in &d.cycle.members {
                    println!(
                        "    {:<width$}  awaits {} from {}",
                        m.saga,
                        m.awaits.join(" | "),
                        m.producers.join(", ")
                    );
                }
                println!(
                    "  victim: {} (rule: {}; ties broken by the greatest saga name)",
                    d.victim.saga, d.rule
                );
            }
        }
    }
    agents(c);
    let tree = bus
        .correlation_history(&CorrelationId::new(c.correlation.as_str())?)
        .await?
        .tree();
    println!("\n  causal tree of {}:", c.correlation);
    for line in tree.to_text().lines() {
        println!("    {line}");
    }
    Ok(())
}

fn acyclic(a: &CorrelationSummary) {
    println!(
        "\n{} (acyclic wiring): spec -> code -> tests -> docs, planner awaits code",
        a.correlation
    );
    let completed = a
        .agents
        .iter()
        .filter(|o| o.status == SagaStatus::Completed)
        .count();
    let detected = if a.deadlocks.is_empty() {
        "no deadlock detected".to_owned()
    } else {
        format!("{} deadlock(s) detected", a.deadlocks.len())
    };
    println!(
        "  {completed} of {} agents completed, {detected}",
        a.agents.len()
    );
    agents(a);
}

fn agents(c: &CorrelationSummary) {
    println!("  agents:");
    for o in &c.agents {
        let what = match (&o.reason, &o.produced) {
            (Some(r), _) => shorten(r, c),
            (None, Some(p)) => format!("wrote: {p}"),
            (None, None) => String::new(),
        };
        println!("    {:<8} {:<12} {what}", o.saga, o.status.as_str());
    }
}

/// A reason without the description of a cycle printed above it.
fn shorten(reason: &str, c: &CorrelationSummary) -> String {
    c.deadlocks
        .iter()
        .find_map(|d| reason.strip_suffix(&format!(": {}", d.cycle.describe())))
        .map_or_else(|| reason.to_owned(), |r| format!("{r}: the cycle above"))
}
