//! Remote-worker access end to end (issue #3): workers at home behind one NAT router run
//! `sitelink-client`, lease virtual addresses from office A's gateway and reach both offices.
//!
//! Layout: the two offices of `tests/common/topology.rs` plus a home router on the simulated
//! internet (WAN 203.0.113.2, nftables masquerade) with worker namespaces on its LAN; see
//! `tests/common/workers.rs`. Each test builds its own copy with names unique to it.
//!
//! Needs root, iproute2, /dev/net/tun, nft, ping, socat and ss (tcpdump for the no-answer test);
//! skips (passes with a printed reason) without them. Binaries come from
//! `cargo build --workspace --all-targets`.

mod common;

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};

use common::sites::LISTEN_PORT;
use common::topology::{LAN_A_HOST, LAN_A_NET, LAN_B_HOST, LAN_B_NET, WAN_A};
use common::traffic::{tcp_transfer, wait_ping, TransferSpec};
use common::workers::{
    Capture, PeerReporter, PoolSpec, RemoteWorkers, Setup, WorkerSpec, BIND_TIMEOUT, CLIENT_TUN,
    HOME_WAN, POOL_RANGE,
};
use common::{must, skip_unless_root_and, wait_until};

const TOOLS: &[&str] = &["ping", "socat", "ss", "nft"];
const PING_TIMEOUT: Duration = Duration::from_secs(20);
/// Debug builds on a shared 2-core machine.
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(120);
const TRANSFER_BYTES: usize = 1024 * 1024;

/// Builds the layout, or returns `None` (skip) without root or tools.
fn setup(test: &str, setup: &Setup, extra_tools: &[&str]) -> Option<RemoteWorkers> {
    let mut tools = TOOLS.to_vec();
    tools.extend_from_slice(extra_tools);
    if !skip_unless_root_and(&tools) {
        return None;
    }
    Some(must(RemoteWorkers::new(test, setup)))
}

fn workers(specs: &[WorkerSpec]) -> Setup {
    Setup {
        pool: PoolSpec::default(),
        workers: specs.to_vec(),
        client_keepalive: Some(10),
    }
}

fn in_pool(addr: Ipv4Addr) -> bool {
    let o = addr.octets();
    o[0] == 10 && o[1] == 77 && o[2] == 100
}

/// Starts each named worker, then waits for each to hold a lease; returns the addresses in
/// order.
fn start_and_bind(rw: &mut RemoteWorkers, names: &[&str]) -> Result<Vec<Ipv4Addr>> {
    for name in names {
        rw.worker(name)?.start()?;
    }
    let mut addrs = Vec::with_capacity(names.len());
    for name in names {
        let addr = rw
            .worker(name)?
            .wait_bound(BIND_TIMEOUT)
            .with_context(|| format!("worker {name}"))?;
        addrs.push(addr);
    }
    Ok(addrs)
}

/// A checksummed TCP transfer from a worker to the host in office A (or B).
fn transfer(rw: &mut RemoteWorkers, worker: &str, to_b: bool, port: u16) -> Result<()> {
    let w = rw.workers.iter().position(|w| w.name == worker);
    let w = &rw.workers[w.with_context(|| format!("no worker {worker}"))?];
    let (to, to_addr) = if to_b {
        (&rw.t.net.lan_b, LAN_B_HOST)
    } else {
        (&rw.t.net.lan_a, LAN_A_HOST)
    };
    tcp_transfer(
        &TransferSpec {
            label: &format!("{worker}-to-{}-{port}", if to_b { "b" } else { "a" }),
            from: &w.ns,
            to,
            to_addr,
            port,
            bytes: TRANSFER_BYTES,
            dir: rw.t.dir.path(),
        },
        TRANSFER_TIMEOUT,
    )
    .with_context(|| format!("TCP transfer from {worker} to {to_addr}"))
}

fn ensure_distinct(addrs: &[Ipv4Addr]) -> Result<()> {
    let set: HashSet<_> = addrs.iter().collect();
    ensure!(
        set.len() == addrs.len(),
        "addresses not distinct: {addrs:?}"
    );
    Ok(())
}

/// Checks `leases --json` has exactly these `(key, address)` pairs (other rows allowed when
/// `exact` is false) and no address twice.
fn ensure_leases(rw: &RemoteWorkers, expect: &[(&str, Ipv4Addr)], exact: bool) -> Result<()> {
    let leases = rw.leases()?;
    leases.ensure_no_duplicates()?;
    for (name, addr) in expect {
        let key = &rw
            .workers
            .iter()
            .find(|w| w.name == *name)
            .with_context(|| format!("no worker {name}"))?
            .keys
            .public_key;
        let lease = leases
            .by_key(key)
            .with_context(|| format!("no lease for {name} ({key}) in {leases}"))?;
        ensure!(
            lease.address == *addr,
            "{name}: leases says {}, the client has {addr}; leases: {leases}",
            lease.address
        );
    }
    if exact {
        ensure!(
            leases.held().count() == expect.len(),
            "expected {} held leases, got {leases}",
            expect.len()
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 0. The layout itself: workers reach the internet through the home router, masqueraded.

#[test]
fn home_router_masquerades_its_workers() {
    let specs = [WorkerSpec::auto("w1"), WorkerSpec::auto("w2")];
    let Some(mut rw) = setup("rw-home-nat", &workers(&specs), &[]) else {
        return;
    };
    must(home_nat(&mut rw));
}

fn home_nat(rw: &mut RemoteWorkers) -> Result<()> {
    let mut reporter =
        PeerReporter::start(&rw.t.net.gw_a, 7001, &rw.t.dir.join("nat-reporter.log"))?;
    for w in &rw.workers {
        wait_ping(&w.ns, WAN_A, PING_TIMEOUT).with_context(|| format!("{} -> gw-a WAN", w.name))?;
        let seen = reporter.ask(&w.ns, WAN_A)?;
        ensure!(
            seen.to_string() == HOME_WAN,
            "gateway A saw {} come from {seen}, not the home router's {HOME_WAN}; nft:\n{}",
            w.name,
            rw.home.ruleset()
        );
    }
    // The offices' LANs are not reachable without the tunnel.
    let w = rw.get("w1")?;
    ensure!(
        !common::traffic::ping(&w.ns, LAN_A_HOST),
        "w1 reaches LAN A without a tunnel"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 1. Three workers behind one NAT: distinct addresses, a fixed allocation, office A reachable.

#[test]
fn three_workers_behind_one_nat_get_distinct_addresses_and_reach_office_a() {
    let specs = [
        WorkerSpec::auto("w1"),
        WorkerSpec::auto("w2"),
        WorkerSpec::fixed("w3", "10.77.100.50"),
    ];
    let mut s = workers(&specs);
    s.pool.dns = vec![PUSHED_DNS.to_owned()];
    let Some(mut rw) = setup("rw-three", &s, &[]) else {
        return;
    };
    must(rw.t.start_a());
    must(three_workers(&mut rw));
}

/// A DNS server gateway A pushes with the lease in test 1 (the clients do not apply it).
const PUSHED_DNS: &str = "192.168.10.53";

fn three_workers(rw: &mut RemoteWorkers) -> Result<()> {
    let addrs = start_and_bind(rw, &["w1", "w2", "w3"])?;
    ensure_distinct(&addrs)?;
    ensure!(
        addrs[2] == Ipv4Addr::new(10, 77, 100, 50),
        "w3 has fixed_address 10.77.100.50 but got {}",
        addrs[2]
    );
    for a in &addrs[..2] {
        ensure!(
            in_pool(*a) && a.octets()[3] >= 10 && *a != addrs[2],
            "automatic address {a} is outside the pool, excluded, or w3's fixed one"
        );
    }

    for w in &rw.workers {
        let status = w.status()?;
        let dns = status.get("dns").and_then(|d| d.as_array()).cloned();
        ensure!(
            dns.is_some_and(|d| d.iter().any(|s| s.as_str() == Some(PUSHED_DNS))),
            "{}: pushed DNS server {PUSHED_DNS} not in status: {status}",
            w.name
        );
        let routes = w.routes()?;
        for net in [LAN_A_NET, LAN_B_NET] {
            ensure!(
                routes
                    .lines()
                    .any(|l| l.starts_with(net) && l.contains(CLIENT_TUN)),
                "{}: pushed route {net} via {CLIENT_TUN} missing; routes:\n{routes}",
                w.name
            );
        }
    }

    for w in &rw.workers {
        wait_ping(&w.ns, LAN_A_HOST, PING_TIMEOUT)
            .with_context(|| format!("{} -> LAN A", w.name))?;
    }
    for (i, name) in ["w1", "w2", "w3"].into_iter().enumerate() {
        transfer(rw, name, false, 5101 + i as u16)?;
    }

    ensure_leases(
        rw,
        &[("w1", addrs[0]), ("w2", addrs[1]), ("w3", addrs[2])],
        true,
    )?;
    // All three came through the one NAT router.
    let leases = rw.leases()?;
    eprintln!("leases: {leases}");
    for l in leases.held() {
        if let Some(ep) = l.raw.get("endpoint").and_then(|e| e.as_str()) {
            ensure!(
                ep.starts_with(&format!("{HOME_WAN}:")),
                "lease endpoint {ep} is not the home router's {HOME_WAN}: {leases}"
            );
        }
    }

    // A worker cannot use another worker's address (or one nobody leased): gateway A only accepts
    // a client's leased address as the source of its packets.
    let w1 = rw.get("w1")?;
    let before =
        rw.t.status_a()?
            .counter("rx_source_not_allowed")
            .unwrap_or(0);
    for spoofed in [addrs[1], Ipv4Addr::new(10, 77, 100, 200)] {
        let cidr = format!("{spoofed}/32");
        w1.ns
            .run(&["ip", "addr", "add", &cidr, "dev", CLIENT_TUN])?;
        let got_through = w1.ns.succeeds(&[
            "ping",
            "-n",
            "-q",
            "-c",
            "3",
            "-W",
            "1",
            "-I",
            &spoofed.to_string(),
            LAN_A_HOST,
        ]);
        w1.ns
            .run(&["ip", "addr", "del", &cidr, "dev", CLIENT_TUN])?;
        ensure!(
            !got_through,
            "w1 reached office A with the source address {spoofed}, which is not its lease"
        );
    }
    let after =
        rw.t.status_a()?
            .counter("rx_source_not_allowed")
            .unwrap_or(0);
    ensure!(
        after >= before + 6,
        "gateway A counted {} packets with a source not allowed, expected at least 6 (3 pings \
         from each of 2 spoofed addresses)",
        after - before
    );
    for w in &rw.workers {
        wait_ping(&w.ns, LAN_A_HOST, PING_TIMEOUT)
            .with_context(|| format!("{} -> LAN A after w1's spoofing", w.name))?;
    }
    for w in &mut rw.workers {
        w.daemon()?.ensure_running()?;
    }
    rw.t.ensure_running()
}

// ---------------------------------------------------------------------------------------------
// 1b. A returning worker gets its old address, after a clean exit and after kill -9.

#[test]
fn returning_worker_gets_its_old_address_back() {
    let specs = [
        WorkerSpec::auto("w1"),
        WorkerSpec::auto("w2"),
        WorkerSpec::auto("w3"),
    ];
    let Some(mut rw) = setup("rw-return", &workers(&specs), &[]) else {
        return;
    };
    must(rw.t.start_a());
    must(returning(&mut rw));
}

fn returning(rw: &mut RemoteWorkers) -> Result<()> {
    let addrs = start_and_bind(rw, &["w1", "w2", "w3"])?;
    ensure_distinct(&addrs)?;
    for (name, addr) in ["w1", "w2", "w3"].into_iter().zip(&addrs) {
        rw.ensure_peer(name, *addr)?;
    }

    // Both w1 and w2 leave cleanly (releasing), then come back in the other order: a pool that
    // just handed out the lowest free address would swap them.
    rw.worker("w1")?.stop()?;
    rw.worker("w2")?.stop()?;
    // A clean exit releases: the gateway no longer counts the addresses as held.
    let leases = rw.leases()?;
    for name in ["w1", "w2"] {
        let key = &rw.get(name)?.keys.public_key;
        ensure!(
            leases.by_key(key).is_none(),
            "{name} exited cleanly but still holds a lease: {leases}"
        );
        rw.ensure_no_peer(name)?;
    }
    let w2 = start_and_bind(rw, &["w2"])?[0];
    ensure!(
        w2 == addrs[1],
        "w2 had {} before its clean exit, got {w2} after",
        addrs[1]
    );
    let w1 = start_and_bind(rw, &["w1"])?[0];
    ensure!(
        w1 == addrs[0],
        "w1 had {} before its clean exit, got {w1} after",
        addrs[0]
    );

    // kill -9: no release; the lease is still the client's.
    rw.worker("w2")?.kill9()?;
    let w2 = start_and_bind(rw, &["w2"])?[0];
    ensure!(
        w2 == addrs[1],
        "w2 had {} before kill -9, got {w2} after",
        addrs[1]
    );
    for name in ["w1", "w2", "w3"] {
        let w = rw.worker(name)?;
        wait_ping(&w.ns, LAN_A_HOST, PING_TIMEOUT).with_context(|| format!("{name} -> LAN A"))?;
    }
    ensure_leases(
        rw,
        &[("w1", addrs[0]), ("w2", addrs[1]), ("w3", addrs[2])],
        true,
    )?;
    rw.t.ensure_running()
}

// ---------------------------------------------------------------------------------------------
// 2. Worker -> gateway A -> site-to-site tunnel -> office B, with the worker's address as source.

#[test]
fn worker_reaches_office_b_with_its_virtual_address_as_source() {
    let Some(mut rw) = setup("rw-office-b", &workers(&[WorkerSpec::auto("w1")]), &[]) else {
        return;
    };
    must(rw.t.start());
    must(office_b(&mut rw));
}

fn office_b(rw: &mut RemoteWorkers) -> Result<()> {
    wait_ping(&rw.t.net.lan_a, LAN_B_HOST, PING_TIMEOUT).context("site-to-site tunnel first")?;
    let status_b = rw.t.status_b()?;
    let allowed = status_b
        .peer("office-a")
        .and_then(|p| p["allowed_ips"].as_array().cloned())
        .with_context(|| format!("no allowed_ips for office-a in B's status:\n{status_b}"))?;
    ensure!(
        allowed.iter().any(|a| a.as_str() == Some(POOL_RANGE)),
        "gateway B's peer office-a lacks the pool range {POOL_RANGE}: {allowed:?}"
    );

    let addr = start_and_bind(rw, &["w1"])?[0];
    let routes = rw.worker("w1")?.routes()?;
    ensure!(
        routes
            .lines()
            .any(|l| l.starts_with(LAN_B_NET) && l.contains(CLIENT_TUN)),
        "gateway A did not push office B's LAN {LAN_B_NET}; routes:\n{routes}"
    );

    let w = rw.worker("w1")?;
    wait_ping(&w.ns, LAN_B_HOST, PING_TIMEOUT).context("w1 -> LAN B")?;
    let mut reporter =
        PeerReporter::start(&rw.t.net.lan_b, 7000, &rw.t.dir.join("peer-reporter.log"))?;
    let w = rw.worker("w1")?;
    let seen = reporter.ask(&w.ns, LAN_B_HOST)?;
    ensure!(
        seen == addr,
        "the host in office B saw {seen}, not the worker's virtual address {addr}"
    );
    transfer(rw, "w1", true, 5201)?;
    rw.t.ensure_running()
}

// ---------------------------------------------------------------------------------------------
// 3. kill -9 gateway A and restart it: addresses stay, traffic resumes, no duplicates.

#[test]
fn gateway_kill9_and_restart_keeps_worker_addresses() {
    let mut s = workers(&[
        WorkerSpec::auto("w1"),
        WorkerSpec::auto("w2"),
        WorkerSpec::auto("w3"),
        WorkerSpec::auto("w4"),
    ]);
    s.pool.lease_time = 60;
    let Some(mut rw) = setup("rw-gw-restart", &s, &[]) else {
        return;
    };
    must(rw.t.start_a());
    must(gateway_restart(&mut rw));
}

fn gateway_restart(rw: &mut RemoteWorkers) -> Result<()> {
    let names = ["w1", "w2", "w3"];
    let addrs = start_and_bind(rw, &names)?;
    ensure_distinct(&addrs)?;
    for name in names {
        let w = rw.worker(name)?;
        wait_ping(&w.ns, LAN_A_HOST, PING_TIMEOUT).with_context(|| format!("{name} before"))?;
    }

    rw.t.gw_a
        .as_mut()
        .context("gateway A not started")?
        .kill9()?;
    std::thread::sleep(Duration::from_secs(1));
    rw.t.start_a().context("restarting gateway A")?;
    let restarted = Instant::now();

    // Traffic resumes for every worker, and no worker's address changes meanwhile.
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut pending: Vec<&str> = names.to_vec();
    while !pending.is_empty() {
        for (name, addr) in names.iter().zip(&addrs) {
            let w = rw.worker(name)?;
            w.daemon()?.ensure_running()?;
            let now = w.status_address()?;
            ensure!(
                now == Some(*addr),
                "{name}'s address changed across the gateway restart: {addr} -> {now:?}"
            );
        }
        let mut still = Vec::new();
        for name in pending {
            let w = rw.worker(name)?;
            if !common::traffic::ping(&w.ns, LAN_A_HOST) {
                still.push(name);
            }
        }
        pending = still;
        if !pending.is_empty() && Instant::now() > deadline {
            bail!(
                "traffic did not resume after the gateway restart for {pending:?}; \
                 gateway log:\n{}",
                rw.t.gw_a
                    .as_ref()
                    .map(|d| d.log_tail(40))
                    .unwrap_or_default()
            );
        }
    }
    eprintln!(
        "traffic resumed for all workers {:?} after gateway A restarted",
        restarted.elapsed()
    );
    ensure_leases(
        rw,
        &[("w1", addrs[0]), ("w2", addrs[1]), ("w3", addrs[2])],
        true,
    )?;
    transfer(rw, "w2", false, 5301)?;

    let w4 = start_and_bind(rw, &["w4"])?[0];
    ensure!(
        !addrs.contains(&w4),
        "a new client after the restart got {w4}, already leased to one of {addrs:?}"
    );
    ensure_leases(
        rw,
        &[
            ("w1", addrs[0]),
            ("w2", addrs[1]),
            ("w3", addrs[2]),
            ("w4", w4),
        ],
        true,
    )?;
    let w = rw.worker("w4")?;
    wait_ping(&w.ns, LAN_A_HOST, PING_TIMEOUT).context("w4 -> LAN A")?;
    rw.t.ensure_running()
}

/// Renewals are durable: with a 20 s lease, w1 and w2 renew twice (their first lease's end has
/// passed), gateway A is killed and restarted, and a third client asking right then finds the pool
/// of two still full, while w1 and w2 keep their addresses through a renewal with the new
/// process.
#[test]
fn renewed_leases_survive_gateway_kill9() {
    let mut s = workers(&[
        WorkerSpec::auto("w1"),
        WorkerSpec::auto("w2"),
        WorkerSpec::auto("w3"),
    ]);
    s.pool = two_address_pool(20);
    let Some(mut rw) = setup("rw-renewed", &s, &[]) else {
        return;
    };
    must(rw.t.start_a());
    must(renewed_survive(&mut rw));
}

fn renewed_survive(rw: &mut RemoteWorkers) -> Result<()> {
    let addrs = start_and_bind(rw, &["w1", "w2"])?;
    ensure_distinct(&addrs)?;
    std::thread::sleep(Duration::from_secs(25));
    for (name, addr) in [("w1", addrs[0]), ("w2", addrs[1])] {
        let w = rw.worker(name)?;
        ensure!(
            w.status_address()? == Some(addr),
            "{name} lost {addr} before the restart"
        );
    }
    rw.t.gw_a
        .as_mut()
        .context("gateway A not started")?
        .kill9()?;
    rw.t.start_a().context("restarting gateway A")?;
    rw.worker("w3")?.start()?;

    // Through T1 (10 s) of the leases with the new gateway process, and then some.
    let until = Instant::now() + Duration::from_secs(25);
    while Instant::now() < until {
        let w3 = rw.worker("w3")?;
        w3.daemon()?.ensure_running()?;
        ensure!(
            !w3.log().contains("lease bound"),
            "w3 got an address although w1 and w2 hold both (renewed) leases; leases: {}",
            rw.leases()?
        );
        for (name, addr) in [("w1", addrs[0]), ("w2", addrs[1])] {
            let w = rw.worker(name)?;
            w.daemon()?.ensure_running()?;
            let now = w.status_address()?;
            ensure!(
                now == Some(addr),
                "{name}'s address changed after the gateway restart: {addr} -> {now:?}"
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let w3_log = rw.get("w3")?.log();
    ensure!(
        mentions_refusal(&w3_log).is_some(),
        "w3 was neither bound nor refused:\n{w3_log}"
    );
    for name in ["w1", "w2"] {
        let w = rw.worker(name)?;
        wait_ping(&w.ns, LAN_A_HOST, PING_TIMEOUT).with_context(|| format!("{name} -> LAN A"))?;
    }
    ensure_leases(rw, &[("w1", addrs[0]), ("w2", addrs[1])], true)?;
    rw.t.ensure_running()
}

/// On expiry the client drops the address and starts over: gateway A is down for longer than the
/// 6 s lease, so w1 cannot renew or rebind; its address leaves the TUN device and status, and
/// once the gateway is back w1 leases again (its old address: the store and w1 remember it).
#[test]
fn client_drops_an_expired_lease_and_starts_over() {
    let mut s = workers(&[WorkerSpec::auto("w1")]);
    s.pool.lease_time = 6;
    let Some(mut rw) = setup("rw-client-expiry", &s, &[]) else {
        return;
    };
    must(rw.t.start_a());
    must(client_expiry(&mut rw));
}

fn client_expiry(rw: &mut RemoteWorkers) -> Result<()> {
    let addr = start_and_bind(rw, &["w1"])?[0];
    rw.t.gw_a
        .as_mut()
        .context("gateway A not started")?
        .kill9()?;
    let w1 = rw.worker("w1")?;
    let mut last = String::new();
    let dropped = wait_until(
        Duration::from_secs(30),
        "w1 to drop its expired lease",
        || match (w1.status(), w1.tun_addresses()) {
            (Ok(status), Ok(on_tun)) => {
                last = format!("status {status}; {CLIENT_TUN} has {on_tun:?}");
                status["address"].is_null() && !on_tun.contains(&addr)
            }
            (Err(e), _) | (_, Err(e)) => {
                last = format!("{e:#}");
                false
            }
        },
    );
    dropped.with_context(|| format!("last: {last}; log:\n{}", w1.log()))?;
    w1.daemon()?.ensure_running()?;
    ensure!(
        !common::traffic::ping(&w1.ns, LAN_A_HOST),
        "w1 reaches office A with gateway A down"
    );

    rw.t.start_a().context("restarting gateway A")?;
    let w1 = rw.worker("w1")?;
    let mut again = None;
    wait_until(Duration::from_secs(60), "w1 to lease again", || {
        again = w1.status_address().ok().flatten();
        again.is_some()
    })
    .with_context(|| format!("log:\n{}", w1.log()))?;
    ensure!(
        again == Some(addr),
        "w1 had {addr} before its lease ran out, got {again:?} after"
    );
    wait_ping(&w1.ns, LAN_A_HOST, PING_TIMEOUT).context("w1 -> LAN A after leasing again")?;
    ensure_leases(rw, &[("w1", addr)], true)?;
    rw.t.ensure_running()
}

/// While gateway A is down after kill -9, `leases --json` reads the store and shows every lease.
#[test]
fn leases_reads_the_store_while_the_gateway_is_down() {
    let s = workers(&[WorkerSpec::auto("w1"), WorkerSpec::auto("w2")]);
    let Some(mut rw) = setup("rw-offline", &s, &[]) else {
        return;
    };
    must(rw.t.start_a());
    must(offline_leases(&mut rw));
}

fn offline_leases(rw: &mut RemoteWorkers) -> Result<()> {
    let names = ["w1", "w2"];
    let addrs = start_and_bind(rw, &names)?;
    rw.t.gw_a
        .as_mut()
        .context("gateway A not started")?
        .kill9()?;
    let offline = rw.leases().context("leases while gateway A is down")?;
    ensure!(
        offline.raw["offline"] == true,
        "leases answered although gateway A is down: {offline}"
    );
    offline.ensure_no_duplicates()?;
    for (name, addr) in names.iter().zip(&addrs) {
        let key = &rw.get(name)?.keys.public_key;
        ensure!(
            offline.by_key(key).map(|l| l.address) == Some(*addr),
            "the store lost {name}'s lease of {addr} in the kill -9: {offline}"
        );
    }
    // A new start removes the socket file the killed gateway left in /run/sitelink.
    rw.t.start_a()
}

// ---------------------------------------------------------------------------------------------
// 4. Short leases: expiry reclaims a dead client's address; a full pool refuses clearly.

/// A pool of exactly two addresses (10.77.100.10 and .11) with a short lease.
fn two_address_pool(lease_time: u32) -> PoolSpec {
    PoolSpec {
        ranges: vec!["10.77.100.10/31".to_owned()],
        exclude: Vec::new(),
        lease_time,
        ..PoolSpec::default()
    }
}

#[test]
fn expired_lease_of_a_killed_client_is_reclaimed() {
    let mut s = workers(&[
        WorkerSpec::auto("w1"),
        WorkerSpec::auto("w2"),
        WorkerSpec::auto("w3"),
    ]);
    s.pool = two_address_pool(6);
    let Some(mut rw) = setup("rw-expiry", &s, &[]) else {
        return;
    };
    must(rw.t.start_a());
    must(expiry(&mut rw));
}

fn expiry(rw: &mut RemoteWorkers) -> Result<()> {
    let addrs = start_and_bind(rw, &["w1", "w2"])?;
    ensure_distinct(&addrs)?;
    // Let w1 renew at least once (T1 = 3 s) so the short lease is known to be kept alive.
    std::thread::sleep(Duration::from_secs(8));
    let w1_now = rw.worker("w1")?.status_address()?;
    ensure!(
        w1_now == Some(addrs[0]),
        "w1 lost its lease while running: {w1_now:?}"
    );

    rw.worker("w2")?.kill9()?;
    let killed_at = Instant::now();
    // kill -9 sends no release: the lease is still w2's until it expires.
    let leases = rw.leases()?;
    let w2_key = rw.get("w2")?.keys.public_key.clone();
    ensure!(
        leases.by_key(&w2_key).map(|l| l.address) == Some(addrs[1]),
        "right after kill -9, w2 should still hold {}: {leases}",
        addrs[1]
    );
    rw.worker("w3")?.start()?;
    let w3 = rw.worker("w3")?.wait_bound(Duration::from_secs(90))?;
    let waited = killed_at.elapsed();
    // w2 renewed at most T1 = 3 s before it was killed, so its lease ran at least 3 s more (2 s
    // allowing for whole-second expiry times in the store).
    ensure!(
        waited >= Duration::from_secs(2),
        "w3 got w2's address {waited:?} after w2 was killed, before w2's lease can have expired"
    );
    let w3_log = rw.get("w3")?.log();
    ensure!(
        mentions_refusal(&w3_log).is_some(),
        "w3 asked while the pool was full but logged no refusal before getting in:\n{w3_log}"
    );
    ensure!(
        w3 == addrs[1],
        "w3 got {w3}, not w2's expired {} (pool: .10 and .11)",
        addrs[1]
    );
    eprintln!("w3 got w2's address {w3} {waited:?} after w2 was killed (lease 6 s)");
    rw.ensure_no_peer("w2")?;
    rw.ensure_peer("w3", w3)?;
    rw.ensure_peer("w1", addrs[0])?;

    let w = rw.worker("w1")?;
    ensure!(
        w.status_address()? == Some(addrs[0]),
        "w1's address changed"
    );
    wait_ping(&w.ns, LAN_A_HOST, PING_TIMEOUT).context("w1 -> LAN A")?;
    let w = rw.worker("w3")?;
    wait_ping(&w.ns, LAN_A_HOST, PING_TIMEOUT).context("w3 -> LAN A")?;
    ensure_leases(rw, &[("w1", addrs[0]), ("w3", w3)], false)?;
    rw.t.ensure_running()
}

#[test]
fn full_pool_refuses_clearly_then_admits_when_a_lease_frees() {
    let mut s = workers(&[
        WorkerSpec::auto("w1"),
        WorkerSpec::auto("w2"),
        WorkerSpec::auto("w3"),
    ]);
    s.pool = two_address_pool(30);
    let Some(mut rw) = setup("rw-full-pool", &s, &[]) else {
        return;
    };
    must(rw.t.start_a());
    must(exhaustion(&mut rw));
}

/// Words a refusal line may use, lower-cased.
const REFUSAL_WORDS: &[&str] = &["refus", "exhaust", "pool is full", "pool full"];

/// The first line of `log` whose words (paths left out: test dirs are named after the test)
/// say that a request was refused.
fn mentions_refusal(log: &str) -> Option<String> {
    log.lines()
        .find(|l| {
            let words: Vec<String> = l
                .split_whitespace()
                .filter(|w| !w.contains('/'))
                .map(str::to_ascii_lowercase)
                .collect();
            let text = words.join(" ");
            REFUSAL_WORDS.iter().any(|w| text.contains(w))
        })
        .map(str::to_owned)
}

fn exhaustion(rw: &mut RemoteWorkers) -> Result<()> {
    let addrs = start_and_bind(rw, &["w1", "w2"])?;
    ensure_distinct(&addrs)?;

    rw.worker("w3")?.start()?;
    let mut client_line = None;
    let mut gateway_line = None;
    let waited = wait_until(
        Duration::from_secs(45),
        "refusal logged by w3 and gateway A",
        || {
            client_line = client_line.take().or_else(|| {
                rw.workers[2]
                    .daemon
                    .as_ref()
                    .and_then(|d| mentions_refusal(&d.log()))
            });
            gateway_line = gateway_line
                .take()
                .or_else(|| mentions_refusal(&rw.gw_a_log()));
            client_line.is_some() && gateway_line.is_some()
        },
    );
    waited.with_context(|| {
        format!(
            "client refusal line: {client_line:?}; gateway refusal line: {gateway_line:?}; \
             w3 log:\n{}\ngateway log tail:\n{}",
            rw.workers[2].log(),
            rw.t.gw_a
                .as_ref()
                .map(|d| d.log_tail(30))
                .unwrap_or_default()
        )
    })?;
    eprintln!("w3 logged: {}", client_line.unwrap_or_default());
    eprintln!("gateway logged: {}", gateway_line.unwrap_or_default());
    {
        let w3 = rw.worker("w3")?;
        w3.daemon()?.ensure_running()?;
        let status = w3.status()?;
        ensure!(
            status.get("last_refusal").is_some_and(|r| !r.is_null())
                && status
                    .get("address")
                    .is_some_and(serde_json::Value::is_null),
            "w3's status shows no refusal, or an address: {status}"
        );
        eprintln!("w3 status while refused: {}", status["last_refusal"]);
        ensure!(
            !w3.log().contains("lease bound"),
            "w3 was bound although the pool is full:\n{}",
            w3.log()
        );
        ensure!(
            w3.tun_addresses()?.is_empty(),
            "w3 has an address on {CLIENT_TUN} although refused"
        );
    }
    for (name, addr) in [("w1", addrs[0]), ("w2", addrs[1])] {
        let w = rw.worker(name)?;
        ensure!(
            w.status_address()? == Some(addr),
            "{name}'s address changed"
        );
        wait_ping(&w.ns, LAN_A_HOST, PING_TIMEOUT).with_context(|| format!("{name} -> LAN A"))?;
    }

    // w1 leaves cleanly (release): w3, still retrying, gets in with w1's address.
    rw.worker("w1")?.stop()?;
    let w3 = rw.worker("w3")?.wait_bound(Duration::from_secs(120))?;
    ensure!(
        w3 == addrs[0],
        "w3 got {w3}, not w1's released {}",
        addrs[0]
    );
    let w = rw.worker("w3")?;
    wait_ping(&w.ns, LAN_A_HOST, PING_TIMEOUT).context("w3 -> LAN A")?;
    ensure_leases(rw, &[("w2", addrs[1]), ("w3", w3)], false)?;
    rw.t.ensure_running()
}

// ---------------------------------------------------------------------------------------------
// 5. An unknown key gets no answer; garbage on the port changes nothing.

#[test]
fn unknown_client_gets_no_answer_and_garbage_changes_nothing() {
    let specs = [
        WorkerSpec::auto("w1"),
        WorkerSpec::auto("w2"),
        WorkerSpec::unknown("stranger"),
        WorkerSpec::unknown("noise"),
    ];
    let Some(mut rw) = setup("rw-unknown", &workers(&specs), &["tcpdump"]) else {
        return;
    };
    must(rw.t.start_a());
    must(unknown_and_garbage(&mut rw));
}

/// How long the unknown client keeps trying before the capture is checked.
const STRANGER_TRIES: Duration = Duration::from_secs(12);

fn unknown_and_garbage(rw: &mut RemoteWorkers) -> Result<()> {
    let from_gateway = format!("udp and src host {WAN_A} and src port {LISTEN_PORT}");
    let to_gateway = format!("udp and dst host {WAN_A} and dst port {LISTEN_PORT}");
    // w1's own control handshake, to replay later.
    let w1_out = Capture::start(
        &rw.get("w1")?.ns,
        &format!("{to_gateway} and udp[8] == 0xc1"),
        &rw.t.dir.join("w1-control-init.pcap"),
    )?;
    let addrs = start_and_bind(rw, &["w1", "w2"])?;
    let leases_before = rw.leases()?;

    // The unknown client: it sends (the capture of what goes out proves that), nothing comes back.
    let stranger_in = Capture::start(
        &rw.get("stranger")?.ns,
        &from_gateway,
        &rw.t.dir.join("stranger-in.pcap"),
    )?;
    let stranger_out = Capture::start(
        &rw.get("stranger")?.ns,
        &to_gateway,
        &rw.t.dir.join("stranger-out.pcap"),
    )?;
    let unknown_before = control_counter(rw, "rx_unknown_key")?;
    rw.worker("stranger")?.start()?;
    std::thread::sleep(STRANGER_TRIES);
    let sent = stranger_out.lines()?;
    let got = stranger_in.lines()?;
    {
        let s = rw.worker("stranger")?;
        ensure!(
            !sent.is_empty(),
            "the unknown client sent nothing in {STRANGER_TRIES:?}; log:\n{}",
            s.log()
        );
        ensure!(
            got.is_empty(),
            "the gateway answered an unknown client ({} datagrams sent): {got:#?}",
            sent.len()
        );
        ensure!(
            !s.log().contains("lease bound") && s.tun_addresses()?.is_empty(),
            "the unknown client got an address:\n{}",
            s.log()
        );
    }
    let unknown = control_counter(rw, "rx_unknown_key")? - unknown_before;
    ensure!(
        unknown >= 1,
        "gateway A did not count the unknown client's handshakes (rx_unknown_key +{unknown})"
    );
    eprintln!(
        "unknown client: {} datagrams sent in {STRANGER_TRIES:?}, 0 answered, rx_unknown_key +{unknown}",
        sent.len()
    );

    // Garbage from another worker: random datagrams and WireGuard-shaped ones (wg_load), then
    // datagrams in the control protocol's type range with random contents.
    let noise_in = Capture::start(
        &rw.get("noise")?.ns,
        &from_gateway,
        &rw.t.dir.join("noise-in.pcap"),
    )?;
    let target = format!("{WAN_A}:{LISTEN_PORT}");
    let server = rw.t.a.keys.public_key.clone();
    let summary = {
        let noise = rw.worker("noise")?;
        let out = noise
            .ns
            .command(wg_load_path())
            .args([
                "garbage",
                "--target",
                &target,
                "--server-public-key",
                &server,
                "--kind",
                "mixed",
                "--count",
                "3000",
                "--rate",
                "1000",
            ])
            .output()
            .context("running wg_load")?;
        ensure!(
            out.status.success(),
            "wg_load failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    // w1's handshake init again, as it was and tampered: counted, not answered.
    let counted = |rw: &RemoteWorkers| -> Result<(u64, u64)> {
        let replays = control_counter(rw, "rx_replayed_handshake")?;
        let rejected =
            replays + control_counter(rw, "rx_auth_failed")? + control_counter(rw, "rx_malformed")?;
        Ok((replays, rejected))
    };
    let (replays_before, rejected_before) = counted(rw)?;
    let replayed = replay_control_init(rw, &w1_out, &target)?;
    let mut now = (replays_before, rejected_before);
    let seen = wait_until(
        Duration::from_secs(10),
        "gateway A to count the replayed and tampered inits",
        || {
            now = counted(rw).unwrap_or(now);
            now.0 > replays_before && now.1 >= rejected_before + replayed as u64
        },
    );
    seen.with_context(|| {
        format!(
            "replayed handshakes +{}, all rejected +{} of {replayed} sent; control counters: {}",
            now.0 - replays_before,
            now.1 - rejected_before,
            rw.t.status_a()
                .map(|s| s.0["control"].to_string())
                .unwrap_or_default()
        )
    })?;
    let sent_control = send_control_garbage(rw, &target)?;
    // Clients keep working through the garbage.
    for (name, addr) in [("w1", addrs[0]), ("w2", addrs[1])] {
        let w = rw.worker(name)?;
        w.daemon()?.ensure_running()?;
        wait_ping(&w.ns, LAN_A_HOST, PING_TIMEOUT)
            .with_context(|| format!("{name} -> LAN A after garbage"))?;
        ensure!(
            w.status_address()? == Some(addr),
            "{name}'s address changed after garbage"
        );
    }
    transfer(rw, "w1", false, 5501)?;
    let got = noise_in.lines()?;
    ensure!(
        got.is_empty(),
        "the gateway answered garbage: {got:#?}; wg_load: {summary}"
    );
    eprintln!(
        "garbage: wg_load {summary}; {sent_control} control-shaped datagrams; {replayed} replayed \
         or tampered copies of w1's control handshake; 0 answered"
    );
    let leases_after = rw.leases()?;
    leases_after.ensure_no_duplicates()?;
    ensure_leases(rw, &[("w1", addrs[0]), ("w2", addrs[1])], true)
        .with_context(|| format!("leases before the garbage: {leases_before}"))?;
    rw.t.ensure_running()
}

/// Sends control-protocol-shaped garbage from the `noise` worker with `socat`: every reserved
/// and used type byte (0xC0–0xCF) with version 1, at the lengths of a handshake init (116), a
/// response (60) and transports (32, 100, 1232), random after the header. Returns how many.
fn send_control_garbage(rw: &mut RemoteWorkers, target: &str) -> Result<usize> {
    let dir = rw.t.dir.path().to_owned();
    let noise = rw.worker("noise")?;
    let mut seed: u64 = u64::from(std::process::id()) | 1;
    let mut rand = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed as u8
    };
    let mut n = 0;
    for ty in 0xC0u8..=0xCF {
        for len in [116usize, 60, 32, 100, 1232] {
            let mut d: Vec<u8> = (0..len).map(|_| rand()).collect();
            d[0] = ty;
            d[1] = 1;
            d[2] = 0;
            d[3] = 0;
            let file = dir.join("control-garbage.bin");
            std::fs::write(&file, &d)?;
            let src = format!("OPEN:{}", file.display());
            let dst = format!("UDP:{target}");
            noise.ns.run(&["socat", "-u", &src, &dst])?;
            n += 1;
        }
    }
    Ok(n)
}

/// Sends, from the `noise` worker, w1's captured control handshake init again as it was, and with
/// one byte flipped in the encrypted static key, in the encrypted timestamp and in the header's
/// reserved bytes. Returns how many datagrams.
fn replay_control_init(rw: &mut RemoteWorkers, w1_out: &Capture, target: &str) -> Result<usize> {
    let inits = w1_out.udp_payloads()?;
    let init = inits
        .first()
        .context("captured no control handshake init from w1")?
        .clone();
    ensure!(
        init.len() == 116 && init[0] == 0xC1,
        "w1's first control packet is not a 116-byte init: {init:02x?}"
    );
    let mut variants = vec![init.clone()];
    for at in [50, 100, 2] {
        let mut v = init.clone();
        v[at] ^= 0x01;
        variants.push(v);
    }
    let file = rw.t.dir.join("control-replay.bin");
    let noise = rw.worker("noise")?;
    for v in &variants {
        std::fs::write(&file, v)?;
        let src = format!("OPEN:{}", file.display());
        noise
            .ns
            .run(&["socat", "-u", &src, &format!("UDP:{target}")])?;
    }
    Ok(variants.len())
}

/// A counter of gateway A's control protocol (`status --json` → `control.counters`).
fn control_counter(rw: &RemoteWorkers, name: &str) -> Result<u64> {
    let status = rw.t.status_a()?;
    status.0["control"]["counters"][name]
        .as_u64()
        .with_context(|| format!("no control counter {name} in status: {status}"))
}

/// `target/<profile>/examples/wg_load` (or `$SITELINK_BIN_DIR/examples/wg_load`).
fn wg_load_path() -> std::path::PathBuf {
    let dir = match std::env::var_os("SITELINK_BIN_DIR") {
        Some(dir) => std::path::PathBuf::from(dir),
        None => {
            let exe = std::env::current_exe().expect("current_exe of the test binary");
            let deps = exe.parent().expect("test binary has a parent dir");
            deps.parent().expect("deps has a parent dir").to_owned()
        }
    };
    let path = dir.join("examples").join("wg_load");
    assert!(
        path.is_file(),
        "{} not found: run `cargo build --examples` first",
        path.display()
    );
    path
}

// ---------------------------------------------------------------------------------------------
// The remote-worker demo's configs (examples/remote-worker/) stay valid and their keys match.

#[test]
fn demo_configs_check_and_their_keys_match() {
    must(demo_configs());
}

fn demo_configs() -> Result<()> {
    use std::os::unix::fs::PermissionsExt;

    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let dir = common::TestDir::new("rw-demo-configs")?;
    let ex = dir.join("examples");
    let rw_dir = ex.join("remote-worker");
    std::fs::create_dir_all(&rw_dir)?;
    // Git keeps no file modes; key files must be 0600, as the demo makes them.
    let copy = |from: &std::path::Path, to: &std::path::Path| -> Result<()> {
        std::fs::copy(from, to).with_context(|| format!("copying {}", from.display()))?;
        if to.extension().is_some_and(|e| e == "key" || e == "psk") {
            std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o600))?;
        }
        Ok(())
    };
    for f in ["office-a.key", "office-b.key", "ab.psk"] {
        copy(&root.join(f), &ex.join(f))?;
    }
    for f in [
        "office-a.toml",
        "office-b.toml",
        "alice.toml",
        "bob.toml",
        "alice.key",
        "bob.key",
    ] {
        copy(&root.join("remote-worker").join(f), &rw_dir.join(f))?;
    }
    let checks = [
        (common::bins::GATEWAY, "office-a.toml"),
        (common::bins::GATEWAY, "office-b.toml"),
        (common::bins::CLIENT, "alice.toml"),
        (common::bins::CLIENT, "bob.toml"),
    ];
    for (bin, config) in checks {
        let out = std::process::Command::new(common::bins::bin(bin))
            .args(["check", "--config"])
            .arg(rw_dir.join(config))
            .output()?;
        ensure!(
            out.status.success(),
            "{bin} check {config}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Every public key written in a config is the one of the key file it names.
    let pubkey = |key: &std::path::Path| -> Result<String> {
        let mut child = std::process::Command::new(common::bins::bin(common::bins::KEYS))
            .arg("pubkey")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()?;
        std::io::Write::write_all(
            &mut child.stdin.take().context("stdin")?,
            &std::fs::read(key)?,
        )?;
        let out = child.wait_with_output()?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    };
    let office_a = std::fs::read_to_string(rw_dir.join("office-a.toml"))?;
    let office_b = std::fs::read_to_string(rw_dir.join("office-b.toml"))?;
    let alice = std::fs::read_to_string(rw_dir.join("alice.toml"))?;
    for (text, key, what) in [
        (
            &office_a,
            rw_dir.join("alice.key"),
            "alice in office-a.toml",
        ),
        (&office_a, rw_dir.join("bob.key"), "bob in office-a.toml"),
        (
            &office_a,
            ex.join("office-b.key"),
            "office-b in office-a.toml",
        ),
        (
            &office_b,
            ex.join("office-a.key"),
            "office-a in office-b.toml",
        ),
        (&alice, ex.join("office-a.key"), "the gateway in alice.toml"),
    ] {
        let key = pubkey(&key)?;
        ensure!(
            text.contains(&format!("public_key = \"{key}\"")),
            "{what}: public key {key} not found"
        );
    }
    Ok(())
}
