//! The quickstart runs as the README says: it answers an order with an invoice and stops
//! cleanly on Ctrl-C; and the README shows this very `main.rs`.

use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use choreo::{Bus, BusConfig, CorrelationId, Event, NatsServer};
use futures::StreamExt as _;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::Command;

const WAIT: Duration = Duration::from_secs(60);

#[derive(serde::Serialize, serde::Deserialize)]
struct OrderPlaced {
    order: String,
}
impl choreo::Payload for OrderPlaced {
    const TYPE: &'static str = "order.placed.v1";
}

#[test]
fn the_readme_shows_this_main() {
    let readme = include_str!("../../../README.md");
    let main = include_str!("../src/main.rs");
    assert!(
        readme.contains(main),
        "README.md's quickstart must contain examples/quickstart/src/main.rs verbatim"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn it_answers_an_order_and_stops_on_ctrl_c() -> Result<()> {
    let server = NatsServer::start_temp().await?;
    let mut child = Command::new(env!("CARGO_BIN_EXE_quickstart"))
        .env("CHOREO_NATS_URL", server.url())
        .env("CHOREO_LOG", "warn")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let stdout = child.stdout.take().context("stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    tokio::time::timeout(WAIT, async {
        while let Some(line) = lines.next_line().await? {
            if line.contains("billing is running") {
                return Ok(());
            }
        }
        bail!("the quickstart exited before it was running")
    })
    .await
    .context("the quickstart did not start")??;

    let bus = Bus::connect(BusConfig::builder().url(server.url()).build()?).await?;
    let invoices = bus
        .follow_events(&bus.subjects().all_events(), true)
        .await?
        .filter_map(|s| async move {
            s.ok()
                .and_then(|s| s.event.ok())
                .filter(|e| e.ty.as_str() == "invoice.issued.v1")
        });
    futures::pin_mut!(invoices);
    let order = Event::root(
        "urn:test",
        CorrelationId::new("o-1")?,
        &OrderPlaced {
            order: "o-1".into(),
        },
    )?;
    bus.publish(&order).await?;
    let invoice = tokio::time::timeout(WAIT, invoices.next())
        .await
        .context("no invoice")?
        .context("the follow ended")?;
    assert_eq!(invoice.causation, order.id);
    assert_eq!(invoice.correlation.as_str(), "o-1");

    let pid = child.id().context("pid")?.to_string();
    let sent = Command::new("kill").args(["-INT", &pid]).status().await?;
    assert!(sent.success());
    let status = tokio::time::timeout(WAIT, child.wait())
        .await
        .context("the quickstart did not stop on Ctrl-C")??;
    assert!(status.success(), "{status}");
    Ok(())
}
