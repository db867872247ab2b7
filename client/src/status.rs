//! `status` output: JSON for scripts, or a `wg show`-like view for people.

use std::fmt::Write as _;
use std::io::Write;

use anyhow::{Context, Result};
use serde_json::Value;

/// Prints the client's status answer `body`.
pub(crate) fn print(body: &str, json: bool) -> Result<()> {
    let v: Value = serde_json::from_str(body).context("the client sent an unreadable answer")?;
    if let Some(err) = v.get("error").and_then(Value::as_str) {
        anyhow::bail!("the client refused: {err}");
    }
    let text = if json {
        format!("{}\n", serde_json::to_string_pretty(&v)?)
    } else {
        render(&v)
    };
    std::io::stdout().lock().write_all(text.as_bytes())?;
    Ok(())
}

/// The human view of a status document.
fn render(v: &Value) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = render_into(&mut out, v);
    out
}

fn render_into(out: &mut String, v: &Value) -> std::fmt::Result {
    let s = |v: &Value| {
        v.as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| v.to_string())
    };
    let list = |v: &Value| {
        let items: Vec<String> = v.as_array().into_iter().flatten().map(s).collect();
        if items.is_empty() {
            "(none)".to_owned()
        } else {
            items.join(", ")
        }
    };
    let iface = &v["interface"];
    writeln!(out, "interface: {}", s(&iface["name"]))?;
    writeln!(out, "  public key: {}", s(&iface["public_key"]))?;
    writeln!(out, "  listening port: {}", iface["listen_port"])?;
    writeln!(out, "  state: {}", s(&v["state"]))?;
    if let Some(addr) = v["address"].as_str() {
        writeln!(out, "  address: {addr}/{}", v["prefix_len"])?;
        if let Some(secs) = v["expires_in"].as_u64() {
            writeln!(out, "  lease expires in: {}", duration(secs))?;
        }
        writeln!(out, "  routes: {}", list(&v["routes"]))?;
        if v["full_tunnel"].as_bool() == Some(true) {
            let bypass = v["bypass_route"]
                .as_str()
                .map_or(String::new(), |b| format!(" (gateway {b} routed outside)"));
            writeln!(out, "  full tunnel: yes{bypass}")?;
        }
        writeln!(out, "  dns: {}", list(&v["dns"]))?;
        if let Some(d) = v["dns_status"].as_str() {
            writeln!(out, "  dns status: {d}")?;
        }
    }
    if let Some(r) = v["last_refusal"].as_object() {
        writeln!(
            out,
            "  last refusal: {} ({} ago)",
            r.get("reason").map(s).unwrap_or_default(),
            duration(r.get("secs_ago").and_then(Value::as_u64).unwrap_or(0))
        )?;
    }
    let gw = &v["gateway"];
    let peer = &v["peer"];
    writeln!(out)?;
    writeln!(
        out,
        "gateway: {} ({})",
        s(&gw["public_key"]),
        s(&gw["name"])
    )?;
    let endpoint = peer["endpoint"]
        .as_str()
        .or_else(|| gw["resolved"].as_str())
        .map_or_else(|| s(&gw["endpoint"]), str::to_owned);
    writeln!(out, "  endpoint: {endpoint}")?;
    if peer.is_object() {
        match peer["latest_handshake_secs_ago"].as_u64() {
            Some(secs) => writeln!(out, "  latest handshake: {} ago", duration(secs))?,
            None => writeln!(out, "  latest handshake: (none yet)")?,
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
    Ok(())
}

fn duration(secs: u64) -> String {
    match secs {
        0 => "0 seconds".to_owned(),
        s if s < 60 => format!("{s} seconds"),
        s if s < 3600 => format!("{} minutes, {} seconds", s / 60, s % 60),
        s => format!("{} hours, {} minutes", s / 3600, (s % 3600) / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_a_bound_client() {
        let v: Value = serde_json::from_str(
            r#"{"interface":{"name":"slc0","public_key":"K","listen_port":40000,"mtu":1420},
                "state":"bound","address":"10.77.100.50","prefix_len":24,"expires_in":3599,
                "gateway":{"name":"office-a","public_key":"G","endpoint":"198.51.100.1:51820","resolved":"198.51.100.1:51820"},
                "routes":["0.0.0.0/0","192.168.10.0/24"],"full_tunnel":true,"bypass_route":"198.51.100.1",
                "dns":[],"dns_status":"none pushed","last_refusal":null,
                "peer":{"endpoint":"198.51.100.1:51820","latest_handshake_secs_ago":3,"rx_bytes":2048,"tx_bytes":10,"path":"direct","persistent_keepalive":25}}"#,
        )
        .expect("json");
        let text = render(&v);
        for line in [
            "interface: slc0",
            "  state: bound",
            "  address: 10.77.100.50/24",
            "  lease expires in: 59 minutes, 59 seconds",
            "  routes: 0.0.0.0/0, 192.168.10.0/24",
            "  full tunnel: yes (gateway 198.51.100.1 routed outside)",
            "  dns: (none)",
            "gateway: G (office-a)",
            "  endpoint: 198.51.100.1:51820",
            "  latest handshake: 3 seconds ago",
            "  transfer: 2.00 KiB received, 10 B sent",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line:?} missing in\n{text}"
            );
        }
    }

    #[test]
    fn renders_a_client_still_asking() {
        let v: Value = serde_json::from_str(
            r#"{"interface":{"name":"slc0","public_key":"K","listen_port":40000},
                "state":"discovering","address":null,"expires_in":null,
                "gateway":{"name":"office-a","public_key":"G","endpoint":"vpn.example.com:51820","resolved":null},
                "routes":[],"dns":[],"last_refusal":{"reason":"pool exhausted","secs_ago":75},"peer":null}"#,
        )
        .expect("json");
        let text = render(&v);
        assert!(text.contains("  state: discovering\n"), "{text}");
        assert!(!text.contains("address:"), "{text}");
        assert!(
            text.contains("  last refusal: pool exhausted (1 minutes, 15 seconds ago)\n"),
            "{text}"
        );
        assert!(
            text.contains("  endpoint: vpn.example.com:51820\n"),
            "{text}"
        );
        assert!(!text.contains("latest handshake"), "{text}");
    }
}
