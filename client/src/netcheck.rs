//! `sitelink-client netcheck`: public endpoint, NAT type, hairpinning and UPnP, with the STUN
//! servers of the config's `[traversal]` table.
//!
//! Runs from an ephemeral UDP port, so it works next to a running client.

use std::io::Write as _;

use anyhow::{Context, Result};
use sitelink_core::config::ClientConfig;
use sitelink_io::netcheck;

/// Runs the checks that `[traversal]` configures and prints them, for a person or as JSON.
pub(crate) fn run(config: &ClientConfig, json: bool) -> Result<()> {
    let options = netcheck::Options::from_traversal(&config.traversal);
    let report = super::runtime()?
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
