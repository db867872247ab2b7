//! `sitelink-gateway nat`: the NAT's sessions and counters, as JSON or as text.

use anyhow::{bail, Context, Result};
use serde_json::Value;

/// Prints the daemon's answer to `nat`: as it came with `--json`, else as text.
pub(crate) fn print(body: &str, json: bool) -> Result<()> {
    let v: Value = serde_json::from_str(body).context("the gateway's answer is not JSON")?;
    if let Some(e) = v.get("error").and_then(Value::as_str) {
        bail!("{e}");
    }
    let mut out = String::new();
    if json {
        out.push_str(body.trim_end());
        out.push('\n');
    } else {
        for (key, title) in [
            ("lan_side", "netmap (inside: the LAN)"),
            (
                "tunnel_side",
                "masquerade and forwards (inside: the tunnels)",
            ),
        ] {
            let Some(side) = v.get(key).filter(|s| !s.is_null()) else {
                continue;
            };
            out.push_str(&format!("{title}\n"));
            if let Some(sessions) = side.get("sessions").and_then(Value::as_array) {
                let total = side
                    .get("sessions_total")
                    .and_then(Value::as_u64)
                    .unwrap_or(0);
                out.push_str(&format!("  sessions: {total}\n"));
                for s in sessions {
                    let f = |k: &str| {
                        s.get(k).map_or(String::new(), |v| {
                            v.as_str().map_or(v.to_string(), str::to_owned)
                        })
                    };
                    out.push_str(&format!(
                        "    {:<4} {:<10} {:>21} -> {:>21} <-> {:<21} {:<12} {}s\n",
                        f("proto"),
                        f("kind"),
                        f("internal"),
                        f("external"),
                        f("remote"),
                        f("state"),
                        f("expires_in"),
                    ));
                }
            }
            if let Some(counters) = side.get("counters").and_then(Value::as_object) {
                out.push_str("  counters:\n");
                for (name, value) in counters {
                    match value.as_object() {
                        Some(inner) => {
                            for (n, v) in inner {
                                out.push_str(&format!("    {name}.{n}: {v}\n"));
                            }
                        }
                        None => out.push_str(&format!("    {name}: {value}\n")),
                    }
                }
            }
        }
    }
    std::io::Write::write_all(&mut std::io::stdout(), out.as_bytes()).context("writing to stdout")
}
