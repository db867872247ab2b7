//! `[nat]` for remote workers (issue #4, cases 2 and 4), with `sitelink-client` behind a home
//! NAT (layout: `tests/common/workers.rs`).
//!
//! - Case 2: office A's LAN host has no route back to the workers' pool (no default route at
//!   all); gateway A masquerades worker traffic to the LAN onto its LAN address 192.168.10.1.
//! - Case 4: a full-tunnel worker reaches a host on the simulated internet (198.51.100.254,
//!   which knows nothing of the pool) through gateway A, masqueraded onto its WAN address.
//! - Case 3: ports published on gateway A's WAN address (`[[nat.forward]]`) reach services on a
//!   split-tunnel worker's virtual address (a fixed 10.77.100.50). The forwards give the
//!   connections gateway A's LAN address as their source, which the worker routes into the
//!   tunnel, so its answers come back through gateway A. The worker's own traffic with gateway
//!   A and the LAN keeps its addresses meanwhile.
//!
//! Needs root, iproute2, nftables, /dev/net/tun, ping, socat and ss; skips without them.

mod common;

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use serde_json::Value;

use common::topology::{INET_ROUTER, LAN_A_GW, LAN_A_HOST, WAN_A};
use common::traffic::{tcp_transfer, wait_ping, TransferSpec};
use common::workers::{PeerReporter, PoolSpec, RemoteWorkers, Setup, WorkerSpec, BIND_TIMEOUT};
use common::{bins, must, skip_unless_root_and};

const TOOLS: &[&str] = &["nft", "ping", "socat", "ss"];
const PING_TIMEOUT: Duration = Duration::from_secs(20);

const NAT: &str = r#"
[[nat.masquerade]]
source = ["10.77.100.0/24"]
destination = ["192.168.10.0/24"]
pool = ["192.168.10.1"]

[[nat.masquerade]]
source = ["10.77.100.0/24"]
pool = ["198.51.100.1"]
"#;

/// The virtual address of the worker that serves the forwarded ports.
const WORKER_ADDR: &str = "10.77.100.50";
/// The forwarded ports: a bulk transfer, and a server that reports who connected.
const FORWARD_TRANSFER_PORT: u16 = 5201;
const FORWARD_REPORT_PORT: u16 = 5300;

/// Port forwards from gateway A's WAN address to the worker at [`WORKER_ADDR`] (same ports),
/// with gateway A's LAN address as the connections' source.
fn forwards() -> String {
    [FORWARD_TRANSFER_PORT, FORWARD_REPORT_PORT]
        .iter()
        .map(|port| {
            format!(
                "\n[[nat.forward]]\nproto = \"tcp\"\nexternal_addr = \"{WAN_A}\"\n\
                 external_port = {port}\nto = \"{WORKER_ADDR}\"\nsource = \"{LAN_A_GW}\"\n"
            )
        })
        .collect()
}

fn setup(routes: &[&str], worker: WorkerSpec) -> Setup {
    Setup {
        pool: PoolSpec {
            routes: routes.iter().map(|s| (*s).to_owned()).collect(),
            ..PoolSpec::default()
        },
        workers: vec![worker],
        client_keepalive: Some(10),
    }
}

/// Builds the layout, adds the `[nat]` rules to gateway A, starts both gateways and the worker.
fn up(test: &str, routes: &[&str]) -> Result<RemoteWorkers> {
    up_with(test, routes, WorkerSpec::auto("w1"), NAT)
}

fn up_with(test: &str, routes: &[&str], worker: WorkerSpec, nat: &str) -> Result<RemoteWorkers> {
    let mut rw = RemoteWorkers::new(test, &setup(routes, worker))?;
    let path = rw.t.a.config_path.clone();
    let mut text = std::fs::read_to_string(&path)?;
    text.push_str(nat);
    std::fs::write(&path, text)?;
    rw.t.start()?;
    rw.worker("w1")?.start()?;
    rw.worker("w1")?.wait_bound(BIND_TIMEOUT)?;
    Ok(rw)
}

fn nat_json(rw: &RemoteWorkers) -> Result<Value> {
    let gw = bins::bin(bins::GATEWAY);
    let out = rw.t.net.gw_a.run(&[
        &gw.to_string_lossy(),
        "nat",
        "--json",
        "--config",
        &rw.t.a.config_path.to_string_lossy(),
    ])?;
    serde_json::from_str(&out).with_context(|| format!("nat --json printed {out:?}"))
}

fn masqueraded_to(report: &Value, external: &str) -> bool {
    report["tunnel_side"]["sessions"]
        .as_array()
        .is_some_and(|s| {
            s.iter().any(|s| {
                s["external"]
                    .as_str()
                    .is_some_and(|e| e.starts_with(&format!("{external}:")))
            })
        })
}

#[test]
fn workers_reach_a_lan_without_a_route_back() {
    if !skip_unless_root_and(TOOLS) {
        return;
    }
    let mut rw = must(up("nat-workers-lan", &["192.168.10.0/24"]));
    must(lan_without_route_back(&mut rw));
}

fn lan_without_route_back(rw: &mut RemoteWorkers) -> Result<()> {
    rw.t.net.lan_a.run(&["ip", "route", "del", "default"])?;
    let w = &rw.get("w1")?.ns;
    wait_ping(w, LAN_A_HOST, PING_TIMEOUT).context("worker -> LAN A host")?;
    tcp_transfer(
        &TransferSpec {
            label: "worker-to-lan",
            from: w,
            to: &rw.t.net.lan_a,
            to_addr: LAN_A_HOST,
            port: 5201,
            bytes: 2 << 20,
            dir: rw.t.dir.path(),
        },
        Duration::from_secs(120),
    )?;
    let report = nat_json(rw)?;
    ensure!(
        masqueraded_to(&report, "192.168.10.1"),
        "no session on 192.168.10.1: {report}"
    );
    Ok(())
}

#[test]
fn full_tunnel_worker_reaches_the_internet_through_the_gateway() {
    if !skip_unless_root_and(TOOLS) {
        return;
    }
    let mut rw = must(up("nat-workers-egress", &["0.0.0.0/0"]));
    must(egress(&mut rw));
}

fn egress(rw: &mut RemoteWorkers) -> Result<()> {
    let w = &rw.get("w1")?.ns;
    wait_ping(w, INET_ROUTER, PING_TIMEOUT).context("worker -> internet host")?;
    tcp_transfer(
        &TransferSpec {
            label: "worker-to-internet",
            from: w,
            to: &rw.t.net.inet,
            to_addr: INET_ROUTER,
            port: 5201,
            bytes: 2 << 20,
            dir: rw.t.dir.path(),
        },
        Duration::from_secs(120),
    )?;
    let report = nat_json(rw)?;
    ensure!(
        masqueraded_to(&report, WAN_A),
        "no session on {WAN_A}: {report}"
    );
    Ok(())
}

#[test]
fn port_forward_reaches_a_service_on_a_workers_virtual_address() {
    if !skip_unless_root_and(TOOLS) {
        return;
    }
    let mut rw = must(up_with(
        "nat-workers-forward",
        &["192.168.10.0/24"],
        WorkerSpec::fixed("w1", WORKER_ADDR),
        &forwards(),
    ));
    must(forward_to_worker(&mut rw));
}

fn forward_to_worker(rw: &mut RemoteWorkers) -> Result<()> {
    let addr = rw.get("w1")?.status_address()?;
    ensure!(
        addr.is_some_and(|a| a.to_string() == WORKER_ADDR),
        "w1 holds {addr:?}, not its fixed address {WORKER_ADDR}"
    );
    let w = &rw.get("w1")?.ns;
    // The tunnel carries traffic both ways before anything is forwarded through it.
    wait_ping(w, LAN_A_GW, PING_TIMEOUT).context("worker -> gateway A's LAN address")?;
    tcp_transfer(
        &TransferSpec {
            label: "inet-to-worker-via-a",
            from: &rw.t.net.inet,
            to: w,
            to_addr: WAN_A,
            port: FORWARD_TRANSFER_PORT,
            bytes: 4 << 20,
            dir: rw.t.dir.path(),
        },
        Duration::from_secs(120),
    )?;
    // The worker sees the forward's source, not the internet client.
    let log = rw.t.dir.join("forward-reporter.log");
    let mut reporter = PeerReporter::start(w, FORWARD_REPORT_PORT, &log)?;
    let seen = reporter
        .ask(&rw.t.net.inet, WAN_A)
        .context("internet host -> forwarded port -> worker")?;
    ensure!(
        seen.to_string() == LAN_A_GW,
        "the worker saw the connection come from {seen}, not {LAN_A_GW}"
    );
    // The worker's own traffic through gateway A keeps its addresses (only the forwarded
    // connections get the forward's source): a connection to a LAN host, which answers
    // straight to the worker's address.
    tcp_transfer(
        &TransferSpec {
            label: "worker-to-lan-while-forwarded",
            from: w,
            to: &rw.t.net.lan_a,
            to_addr: LAN_A_HOST,
            port: 5202,
            bytes: 1 << 20,
            dir: rw.t.dir.path(),
        },
        Duration::from_secs(120),
    )?;
    let report = nat_json(rw)?;
    let forwarded = report["tunnel_side"]["sessions"]
        .as_array()
        .is_some_and(|s| {
            s.iter().any(|s| {
                s["kind"] == "forward"
                    && s["internal"]
                        .as_str()
                        .is_some_and(|i| i.starts_with(&format!("{WORKER_ADDR}:")))
                    && s["external"]
                        .as_str()
                        .is_some_and(|e| e.starts_with(&format!("{WAN_A}:")))
            })
        });
    ensure!(
        forwarded,
        "no forward session to {WORKER_ADDR} on {WAN_A}: {report}"
    );
    Ok(())
}
