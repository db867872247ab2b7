//! `leases` output, and reading the lease store directly when the gateway is not running.

use std::io::Write;
use std::time::SystemTime;

use anyhow::{Context, Result};
use serde_json::{json, Value};
use sitelink_core::config::GatewayConfig;
use sitelink_core::lease::{LeasePool, MemoryStore};
use sitelink_io::lease_store::RedbStore;

/// The `leases` answer built from the store, for when no gateway answers on the socket.
pub(crate) fn from_store(config: &GatewayConfig) -> Result<String> {
    let pool = config
        .pool
        .clone()
        .context("this gateway's config has no [pool]: it leases no addresses")?;
    if !pool.store.exists() {
        // Never started: no leases, but the pool's size is still worth showing.
        let size = LeasePool::new(pool.clone(), config.clients.clone(), MemoryStore::new())
            .map(|p| p.size())
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        return Ok(json!({
            "pool": { "ranges": pool.ranges, "size": size, "lease_time": pool.lease_time.as_secs() },
            "leases": [],
            "offline": true,
        })
        .to_string());
    }
    let store = RedbStore::open(&pool.store)
        .with_context(|| format!("reading the lease store {}", pool.store.display()))?;
    let ranges = pool.ranges.clone();
    let lease_time = pool.lease_time.as_secs();
    let pool =
        LeasePool::new(pool, config.clients.clone(), store).map_err(|e| anyhow::anyhow!("{e}"))?;
    let now = SystemTime::now();
    let leases: Vec<Value> = pool
        .leases(now)
        .into_iter()
        .map(|entry| {
            let expires_in = entry
                .expires_at
                .duration_since(now)
                .unwrap_or_default()
                .as_secs();
            let mut v = serde_json::to_value(&entry).unwrap_or(Value::Null);
            if let Some(obj) = v.as_object_mut() {
                obj.insert("expires_in".into(), json!(expires_in));
                obj.insert("endpoint".into(), Value::Null);
                obj.insert("public_key".into(), json!(entry.client));
            }
            v
        })
        .collect();
    Ok(json!({
        "pool": { "ranges": ranges, "size": pool.size(), "lease_time": lease_time },
        "leases": leases,
        "offline": true,
    })
    .to_string())
}

/// Prints a `leases` answer: JSON for scripts, or a table for people.
pub(crate) fn print(body: &str, json: bool) -> Result<()> {
    let mut out = std::io::stdout().lock();
    let v: Value = serde_json::from_str(body).context("the gateway sent an unreadable answer")?;
    if let Some(err) = v.get("error").and_then(Value::as_str) {
        anyhow::bail!("{err}");
    }
    if json {
        writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
        return Ok(());
    }
    let s = |v: &Value| {
        v.as_str().map(str::to_owned).unwrap_or_else(|| {
            if v.is_null() {
                "-".to_owned()
            } else {
                v.to_string()
            }
        })
    };
    let pool = &v["pool"];
    let ranges: Vec<String> = pool["ranges"]
        .as_array()
        .into_iter()
        .flatten()
        .map(s)
        .collect();
    writeln!(
        out,
        "pool: {} ({} addresses, lease time {} s){}",
        ranges.join(", "),
        pool["size"],
        pool["lease_time"],
        if v["offline"].as_bool() == Some(true) {
            " — gateway not running, read from the store"
        } else {
            ""
        }
    )?;
    let rows = v["leases"].as_array().cloned().unwrap_or_default();
    if rows.is_empty() {
        writeln!(out, "no leases")?;
        return Ok(());
    }
    writeln!(
        out,
        "{:<24} {:<12} {:<8} {:<10} {:<22} KEY",
        "ADDRESS", "CLIENT", "STATE", "EXPIRES", "ENDPOINT"
    )?;
    for row in rows {
        let state = s(&row["state"]);
        let expires = match (state.as_str(), row["expires_in"].as_u64()) {
            ("expired", _) => "ended".to_owned(),
            (_, Some(secs)) => format!("in {secs}s"),
            _ => "-".to_owned(),
        };
        let fixed = if row["fixed"].as_bool() == Some(true) {
            " (fixed)"
        } else {
            ""
        };
        writeln!(
            out,
            "{:<24} {:<12} {:<8} {:<10} {:<22} {}",
            format!("{}{}", s(&row["address"]), fixed),
            s(&row["name"]),
            state,
            expires,
            s(&row["endpoint"]),
            s(&row["client"]),
        )?;
    }
    Ok(())
}
