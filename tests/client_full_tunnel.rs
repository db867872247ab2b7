//! `sitelink-client` in full-tunnel mode (issue #3): gateway A pushes only `0.0.0.0/0`.
//!
//! The worker must route everything through the tunnel with the two halves `0.0.0.0/1` and
//! `128.0.0.0/1` on its TUN device, keep the tunnel's own packets to gateway A's endpoint on a
//! host route through the home router (else the tunnel would carry itself), reach office A and,
//! only through the default route, office B (whose gateway routes the pool back over the
//! site-to-site tunnel), and put the host's routing back exactly as it was on exit.
//!
//! Layout: `tests/common/workers.rs` (two offices, a home NAT router, one worker behind it).

mod common;

use std::time::Duration;

use anyhow::{ensure, Context, Result};

use common::topology::{LAN_A_HOST, LAN_B_HOST, WAN_A};
use common::traffic::wait_ping;
use common::workers::{
    PoolSpec, RemoteWorkers, Setup, WorkerSpec, BIND_TIMEOUT, CLIENT_TUN, HOME_LAN_GW,
};
use common::{must, skip_unless_root_and};

const PING_TIMEOUT: Duration = Duration::from_secs(20);

#[test]
fn full_tunnel_routes_everything_but_the_tunnel_itself_and_restores_on_exit() {
    if !skip_unless_root_and(&["ping", "nft"]) {
        return;
    }
    let setup = Setup {
        pool: PoolSpec {
            routes: vec!["0.0.0.0/0".to_owned()],
            ..PoolSpec::default()
        },
        workers: vec![WorkerSpec::auto("w1")],
        client_keepalive: Some(10),
    };
    let mut rw = must(RemoteWorkers::new("cl-full-tunnel", &setup));
    must(rw.t.start());
    must(full_tunnel(&mut rw));
}

fn full_tunnel(rw: &mut RemoteWorkers) -> Result<()> {
    let before = rw.get("w1")?.routes()?;
    rw.worker("w1")?.start()?;
    let addr = rw.worker("w1")?.wait_bound(BIND_TIMEOUT)?;
    let w = rw.get("w1")?;

    let routes = w.routes()?;
    for half in ["0.0.0.0/1", "128.0.0.0/1"] {
        ensure!(
            routes
                .lines()
                .any(|l| l.starts_with(&format!("{half} ")) && l.contains(CLIENT_TUN)),
            "no {half} via {CLIENT_TUN}; routes:\n{routes}"
        );
    }
    ensure!(
        routes
            .lines()
            .any(|l| l.starts_with(&format!("{WAN_A} via {HOME_LAN_GW} "))),
        "no host route to gateway A's endpoint {WAN_A} via the home router {HOME_LAN_GW}; routes:\n{routes}"
    );
    // The kernel's choice: the gateway outside the tunnel, everything else inside.
    let to_gateway = w.ns.run(&["ip", "route", "get", WAN_A])?;
    ensure!(
        !to_gateway.contains(CLIENT_TUN),
        "gateway A's endpoint is routed into the tunnel: {to_gateway}"
    );
    let elsewhere = w.ns.run(&["ip", "route", "get", "192.0.2.1"])?;
    ensure!(
        elsewhere.contains(CLIENT_TUN),
        "192.0.2.1 does not go through the tunnel: {elsewhere}"
    );

    let status = w.status()?;
    ensure!(
        status["full_tunnel"] == true && status["bypass_route"] == WAN_A,
        "status does not show the full tunnel and its bypass: {status}"
    );

    // Office A, and office B only through the default route (no route to 192.168.20.0/24 was
    // pushed): gateway A forwards it over the site-to-site tunnel.
    wait_ping(&w.ns, LAN_A_HOST, PING_TIMEOUT).context("worker to office A")?;
    wait_ping(&w.ns, LAN_B_HOST, PING_TIMEOUT).context("worker to office B")?;
    let peer = &w.status()?["peer"];
    ensure!(
        peer["latest_handshake_secs_ago"].is_u64() && peer["rx_bytes"].as_u64() > Some(0),
        "no data-plane handshake or traffic with gateway A ({addr}): {peer}"
    );

    eprintln!(
        "full tunnel: w1 holds {addr}; to the gateway: {}; elsewhere: {}",
        to_gateway.lines().next().unwrap_or_default().trim(),
        elsewhere.lines().next().unwrap_or_default().trim()
    );
    rw.worker("w1")?.stop()?;
    let after = rw.get("w1")?.routes()?;
    ensure!(
        sorted(&after) == sorted(&before),
        "routes differ after exit\nbefore:\n{before}\nafter:\n{after}"
    );
    Ok(())
}

fn sorted(routes: &str) -> Vec<String> {
    let mut lines: Vec<String> = routes.lines().map(|l| l.trim().to_owned()).collect();
    lines.sort();
    lines
}
