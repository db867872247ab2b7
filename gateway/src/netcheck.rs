//! `sitelink-gateway netcheck`: public endpoint, NAT type, hairpinning and UPnP.
//!
//! Runs from an ephemeral UDP port, so it works next to a running daemon without taking its
//! listen port (the daemon's own mapping behaves the same behind a cone NAT; only the port
//! number differs).

use anyhow::Result;
use sitelink_core::config::GatewayConfig;

/// Runs the checks that `[traversal]` configures and prints them, for a person or as JSON.
pub(crate) fn run(config: &GatewayConfig, json: bool) -> Result<()> {
    sitelink_io::netcheck::run_and_report(
        &config.traversal,
        &config.path,
        json,
        &mut std::io::stdout().lock(),
    )
}
