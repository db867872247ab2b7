//! `sitelink-client netcheck`: public endpoint, NAT type, hairpinning and UPnP, with the STUN
//! servers of the config's `[traversal]` table.
//!
//! Runs from an ephemeral UDP port, so it works next to a running client.

use anyhow::Result;
use sitelink_core::config::ClientConfig;

/// Runs the checks that `[traversal]` configures and prints them, for a person or as JSON.
pub(crate) fn run(config: &ClientConfig, json: bool) -> Result<()> {
    sitelink_io::netcheck::run_and_report(
        &config.traversal,
        &config.path,
        json,
        &mut std::io::stdout().lock(),
    )
}
