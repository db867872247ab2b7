//! The standalone NAT router (`sitelink-nat-router`), probed from inside for each NAT type.
//!
//! ```text
//!  host 192.168.1.10 ── lan 192.168.1.1 [nat] wan 203.0.113.1 ── ext 203.0.113.10, .20, .30
//! ```
//!
//! The inside host sends from one UDP port to 203.0.113.10:3478 and to 203.0.113.20:3478; the
//! external endpoints they see must be equal (endpoint-independent mapping) except for the
//! symmetric NAT. Then unsolicited packets come in to the first mapping from 203.0.113.10:3479
//! (same address, other port) and from 203.0.113.30 (never contacted): they pass only where the
//! filtering behaviour allows. A ping and a TCP transfer cross each router too.
//!
//! Needs root, iproute2, nftables, /dev/net/tun, ping and socat; skips without them.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{ensure, Context, Result};

use common::nat_router::{probe, recv_within, start_nat_router, udp_socket_in};
use common::traffic::{tcp_transfer, wait_ping, TransferSpec};
use common::{must, skip_unless_root_and, unique_id, veth, Netns, TestDir};

const TOOLS: &[&str] = &["nft", "ping", "socat", "ss"];
const EXTERNAL: &str = "203.0.113.1";
const HOST: &str = "192.168.1.10";

struct Lab {
    // Drop order: the router first, then the namespaces, then the files.
    router: Option<common::Daemon>,
    host: Netns,
    nat: Netns,
    ext: Netns,
    dir: TestDir,
}

fn lab(behavior: &str) -> Result<Lab> {
    let dir = TestDir::new(&format!("nat-router-{behavior}"))?;
    let id = unique_id();
    let host = Netns::new(format!("sl-{id}-host"))?;
    let nat = Netns::new(format!("sl-{id}-nat"))?;
    let ext = Netns::new(format!("sl-{id}-ext"))?;
    veth(&host, "eth0", &nat, "lan")?;
    veth(&nat, "wan", &ext, "eth0")?;
    host.addr("eth0", &format!("{HOST}/24"))?;
    host.route_via("default", "192.168.1.1")?;
    nat.addr("lan", "192.168.1.1/24")?;
    nat.addr("wan", &format!("{EXTERNAL}/24"))?;
    for a in ["203.0.113.10/24", "203.0.113.20/24", "203.0.113.30/24"] {
        ext.addr("eth0", a)?;
    }
    // A route to the inside network: the router must still not let unsolicited packets in.
    ext.route_via("192.168.1.0/24", EXTERNAL)?;
    let router = start_nat_router(
        &nat,
        "lan",
        "wan",
        EXTERNAL,
        behavior,
        &dir.join("router.log"),
        &[],
    )?;
    Ok(Lab {
        router: Some(router),
        host,
        nat,
        ext,
        dir,
    })
}

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("test address")
}

/// Which unsolicited senders get through, per NAT type: (same address other port, new address).
fn expected(behavior: &str) -> (bool, bool, bool) {
    // (mapping is endpoint-independent, other port passes, other address passes)
    match behavior {
        "full-cone" => (true, true, true),
        "restricted-cone" => (true, true, false),
        "port-restricted-cone" => (true, false, false),
        _ => (false, false, false),
    }
}

/// Builds the lab and probes it; panics (with the router's log) while the lab is alive.
fn check(behavior: &str) {
    let mut lab = must(lab(behavior));
    must(probe_lab(&lab, behavior));
    if let Some(r) = lab.router.as_mut() {
        must(r.ensure_running());
    }
}

fn probe_lab(lab: &Lab, behavior: &str) -> Result<()> {
    let (eim, other_port_passes, other_addr_passes) = expected(behavior);
    let inside = udp_socket_in(&lab.host, addr(&format!("{HOST}:40000")))?;
    let x1 = udp_socket_in(&lab.ext, addr("203.0.113.10:3478"))?;
    let x2 = udp_socket_in(&lab.ext, addr("203.0.113.10:3479"))?;
    let y = udp_socket_in(&lab.ext, addr("203.0.113.20:3478"))?;
    let z = udp_socket_in(&lab.ext, addr("203.0.113.30:3478"))?;

    let m1 = probe(&inside, &x1, b"to-x1", 5).context("inside -> x1")?;
    let m2 = probe(&inside, &y, b"to-y", 5).context("inside -> y")?;
    ensure!(
        m1.ip().to_string() == EXTERNAL && m2.ip().to_string() == EXTERNAL,
        "mappings {m1}, {m2} are not on {EXTERNAL}"
    );
    ensure!(
        m1.port() == 40000,
        "the first mapping {m1} did not keep the port"
    );
    if eim {
        ensure!(
            m1 == m2,
            "{behavior}: mapping changed per destination: {m1} vs {m2}"
        );
    } else {
        ensure!(
            m1 != m2,
            "{behavior}: same mapping {m1} for two destinations"
        );
    }

    // Solicited: the remote the inside host sent to answers, on each mapping.
    x1.send_to(b"reply-x1", m1)?;
    let got = recv_within(&inside, Duration::from_secs(3)).context("no reply from x1")?;
    ensure!(
        got == (b"reply-x1".to_vec(), addr("203.0.113.10:3478")),
        "{got:?}"
    );
    y.send_to(b"reply-y", m2)?;
    let got = recv_within(&inside, Duration::from_secs(3)).context("no reply from y")?;
    ensure!(
        got == (b"reply-y".to_vec(), addr("203.0.113.20:3478")),
        "{got:?}"
    );

    // Unsolicited: same address, another port; then an address never contacted.
    for (sender, from, should_pass, what) in [
        (
            &x2,
            "203.0.113.10:3479",
            other_port_passes,
            "x1's address, another port",
        ),
        (
            &z,
            "203.0.113.30:3478",
            other_addr_passes,
            "an address never contacted",
        ),
    ] {
        sender.send_to(b"unsolicited", m1)?;
        let got = recv_within(&inside, Duration::from_millis(1500));
        match (should_pass, got) {
            (true, Some((payload, seen))) => ensure!(
                payload == b"unsolicited" && seen == addr(from),
                "{behavior}: from {what}: got {payload:?} from {seen}"
            ),
            (true, None) => anyhow::bail!("{behavior}: a packet from {what} did not pass"),
            (false, None) => {}
            (false, Some((payload, seen))) => anyhow::bail!(
                "{behavior}: a packet from {what} passed ({:?} from {seen})",
                String::from_utf8_lossy(&payload)
            ),
        }
    }

    // ICMP and TCP cross it as well.
    wait_ping(&lab.host, "203.0.113.20", Duration::from_secs(10))?;
    tcp_transfer(
        &TransferSpec {
            label: "through-nat",
            from: &lab.host,
            to: &lab.ext,
            to_addr: "203.0.113.30",
            port: 5201,
            bytes: 1 << 20,
            dir: lab.dir.path(),
        },
        Duration::from_secs(60),
    )?;
    // Nothing reaches the inside host without going through the NAT.
    ensure!(
        !lab.ext.succeeds(&[
            "ping",
            "-n",
            "-q",
            "-c",
            "1",
            "-W",
            "1",
            "-I",
            "203.0.113.30",
            HOST
        ]),
        "the inside host answered a ping from outside"
    );
    let _ = &lab.nat;
    Ok(())
}

#[test]
fn full_cone() {
    if skip_unless_root_and(TOOLS) {
        check("full-cone");
    }
}

#[test]
fn restricted_cone() {
    if skip_unless_root_and(TOOLS) {
        check("restricted-cone");
    }
}

#[test]
fn port_restricted_cone() {
    if skip_unless_root_and(TOOLS) {
        check("port-restricted-cone");
    }
}

#[test]
fn symmetric() {
    if skip_unless_root_and(TOOLS) {
        check("symmetric");
    }
}
