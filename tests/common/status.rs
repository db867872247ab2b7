//! `sitelink-gateway status --json`, parsed.

use std::path::Path;

use anyhow::{Context, Result};
use serde_json::Value;

use super::{bins, Netns};

/// Runs `sitelink-gateway status --json --config CONFIG` inside `ns` and parses the output.
pub(crate) fn fetch(ns: &Netns, config: &Path) -> Result<Status> {
    let gateway = bins::bin(bins::GATEWAY);
    let config = config.to_string_lossy();
    let out = ns
        .run(&[
            &gateway.to_string_lossy(),
            "status",
            "--json",
            "--config",
            &config,
        ])
        .context("sitelink-gateway status")?;
    let json: Value = serde_json::from_str(&out)
        .with_context(|| format!("status output is not JSON: {out:?}"))?;
    Ok(Status(json))
}

/// The status JSON of one gateway (see the README for the shape).
#[derive(Debug, Clone)]
pub(crate) struct Status(pub(crate) Value);

impl Status {
    /// The `peers[]` entry named `name`.
    pub(crate) fn peer(&self, name: &str) -> Option<&Value> {
        self.0["peers"]
            .as_array()?
            .iter()
            .find(|p| p["name"].as_str() == Some(name))
    }

    /// The current endpoint (`"ip:port"`) of peer `name`, if it has one.
    pub(crate) fn endpoint(&self, name: &str) -> Option<String> {
        self.peer(name)?["endpoint"].as_str().map(str::to_owned)
    }

    /// Seconds since the last handshake with peer `name`, if there was one.
    pub(crate) fn latest_handshake_secs_ago(&self, name: &str) -> Option<u64> {
        self.peer(name)?["latest_handshake_secs_ago"].as_u64()
    }

    /// `(rx_bytes, tx_bytes)` of peer `name`.
    pub(crate) fn peer_bytes(&self, name: &str) -> Option<(u64, u64)> {
        let p = self.peer(name)?;
        Some((p["rx_bytes"].as_u64()?, p["tx_bytes"].as_u64()?))
    }

    /// A global counter, e.g. `"rx_auth_failed"`.
    pub(crate) fn counter(&self, name: &str) -> Option<u64> {
        self.0["counters"][name].as_u64()
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match serde_json::to_string_pretty(&self.0) {
            Ok(s) => f.write_str(&s),
            Err(_) => write!(f, "{:?}", self.0),
        }
    }
}
