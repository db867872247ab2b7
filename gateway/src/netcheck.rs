//! `sitelink-gateway netcheck`: public endpoint, NAT type, hairpinning and UPnP.
//!
//! Runs from an ephemeral UDP port, so it works next to a running daemon without taking its
//! listen port (the daemon's own mapping behaves the same behind a cone NAT; only the port
//! number differs).

use std::io::Write as _;

use anyhow::{Context, Result};
use sitelink_core::config::GatewayConfig;
use sitelink_io::netcheck;

/// Runs the checks that `[traversal]` configures and prints them, for a person or as JSON.
pub(crate) fn run(config: &GatewayConfig, json: bool) -> Result<()> {
    let options = netcheck::Options::from_traversal(&config.traversal);
    let report = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(netcheck::run(&options))
        .with_context(|| format!("netcheck with {}", config.path.display()))?;
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer(&mut out, &report).context("writing JSON")?;
        writeln!(out)?;
    } else {
        write!(out, "{}", report.to_text())?;
    }
    Ok(())
}
