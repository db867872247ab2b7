//! `status` output: JSON for scripts, or a `wg show`-like view for people.

use std::io::Write;

use anyhow::{Context, Result};
use serde_json::Value;

/// Prints the daemon's status answer `body`.
pub(crate) fn print(body: &str, json: bool) -> Result<()> {
    let mut out = std::io::stdout().lock();
    let v: Value = serde_json::from_str(body).context("the gateway sent an unreadable answer")?;
    if let Some(err) = v.get("error").and_then(Value::as_str) {
        anyhow::bail!("the gateway refused: {err}");
    }
    if json {
        writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
        return Ok(());
    }
    let s = |v: &Value| {
        v.as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| v.to_string())
    };
    let iface = &v["interface"];
    writeln!(out, "interface: {}", s(&iface["name"]))?;
    writeln!(out, "  public key: {}", s(&iface["public_key"]))?;
    writeln!(out, "  listening port: {}", iface["listen_port"])?;
    for peer in v["peers"].as_array().into_iter().flatten() {
        writeln!(out)?;
        writeln!(
            out,
            "peer: {} ({})",
            s(&peer["public_key"]),
            s(&peer["name"])
        )?;
        if let Some(ep) = peer["endpoint"].as_str() {
            writeln!(out, "  endpoint: {ep}")?;
        }
        let ips: Vec<String> = peer["allowed_ips"]
            .as_array()
            .into_iter()
            .flatten()
            .map(s)
            .collect();
        writeln!(out, "  allowed ips: {}", ips.join(", "))?;
        if let Some(secs) = peer["latest_handshake_secs_ago"].as_u64() {
            writeln!(out, "  latest handshake: {}", ago(secs))?;
        }
        writeln!(out, "  path: {}", s(&peer["path"]))?;
        writeln!(
            out,
            "  transfer: {} received, {} sent",
            sitelink_io::cli::bytes(peer["rx_bytes"].as_u64().unwrap_or(0)),
            sitelink_io::cli::bytes(peer["tx_bytes"].as_u64().unwrap_or(0))
        )?;
        if let Some(k) = peer["persistent_keepalive"].as_u64() {
            writeln!(out, "  persistent keepalive: every {k} seconds")?;
        }
    }
    let drops: Vec<String> = v["counters"]
        .as_object()
        .into_iter()
        .flatten()
        .chain(v["io_counters"].as_object().into_iter().flatten())
        .filter(|(_, n)| n.as_u64().unwrap_or(0) > 0)
        .map(|(k, n)| format!("{k}={n}"))
        .collect();
    writeln!(out)?;
    writeln!(
        out,
        "counters: {}",
        if drops.is_empty() {
            "all zero".to_owned()
        } else {
            drops.join(" ")
        }
    )?;
    Ok(())
}

fn ago(secs: u64) -> String {
    match secs {
        0 => "just now".to_owned(),
        s if s < 60 => format!("{s} seconds ago"),
        s => format!("{} minutes, {} seconds ago", s / 60, s % 60),
    }
}
