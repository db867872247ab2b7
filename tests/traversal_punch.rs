//! NAT traversal end to end (issue #5): two offices, each behind its own `sitelink-nat-router`
//! of some NAT type, and a hub gateway on the simulated internet that both name as
//! `rendezvous`. Every pair must get connectivity (ping and a TCP transfer checked by hash);
//! pairs that can punch get a direct path, the others are relayed through the hub. Each test
//! prints a line of the matrix: path on both sides and the time to the direct path.
//!
//! An office whose NAT is `upnp` sits behind an nftables masquerade router running miniupnpd
//! instead (see `common::nat_routers`); its gateway runs with `upnp = true` and offers the
//! mapped port as a candidate. miniupnpd refuses a documentation address on its WAN, so that
//! router's WAN is `11.77.0.1/32` (an address that exists only inside these namespaces), which
//! the hub and the other NAT router reach by an on-link route.
//!
//! ```text
//!  office-a 192.168.1.2 ── nat-a 192.168.1.1 | 198.51.100.1 ─┐
//!                                                            br0 (inet) ── hub 198.51.100.3
//!  office-b 192.168.2.2 ── nat-b 192.168.2.1 | 198.51.100.2 ─┘
//! ```
//!
//! Needs root, iproute2, ping and socat; skips without them.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use common::nat_router::start_nat_router;
use common::nat_routers::{ruleset, start_miniupnpd, RouterKind, WAN_UPNP};
use common::sites::start_gateway;
use common::status::{self, Status};
use common::traffic::{tcp_transfer, wait_ping, TransferSpec};
use common::{bins, must, skip_unless_root_and, unique_id, veth, Daemon, Netns, TestDir};

const TOOLS: &[&str] = &["ping", "socat", "ss"];
/// What a `upnp` office's router needs on top.
const UPNP_TOOLS: &[&str] = &["ping", "socat", "ss", "nft", "miniupnpd"];
/// The NAT "type" that means: masquerade router with miniupnpd.
const UPNP: &str = "upnp";
const HUB: &str = "198.51.100.3";
const PORT: u16 = 51820;

/// A `[[peer]]`: name, public key, endpoint, allowed IP, rendezvous.
type PeerLine<'a> = (&'a str, &'a str, Option<&'a str>, &'a str, Option<&'a str>);

struct Lab {
    // Daemons first: killed before their namespaces go.
    gateways: Vec<Daemon>,
    routers: Vec<Daemon>,
    offices: [Netns; 2],
    hub: Netns,
    _nats: [Netns; 2],
    _inet: Netns,
    configs: [PathBuf; 3],
    dir: TestDir,
}

impl Drop for Lab {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for d in self.gateways.iter().chain(&self.routers) {
                eprintln!("--- {} ---\n{}", d.log_path().display(), d.log_tail(40));
            }
        }
    }
}

fn config(name: &str, addr: &str, peers: &[PeerLine<'_>], hub: bool, upnp: bool) -> String {
    let mut s = format!(
        "[interface]\nname = \"sl0\"\nprivate_key_file = \"{name}.key\"\nlisten_port = {PORT}\n\
         address = [\"{addr}/24\"]\nmtu = 1280\n\n[traversal]\nupnp = {upnp}\nrendezvous = {hub}\n"
    );
    for (peer, key, endpoint, allowed, rendezvous) in peers {
        s.push_str(&format!(
            "\n[[peer]]\nname = \"{peer}\"\npublic_key = \"{key}\"\nallowed_ips = [\"{allowed}\"]\n"
        ));
        if let Some(e) = endpoint {
            s.push_str(&format!("endpoint = \"{e}\"\npersistent_keepalive = 25\n"));
        }
        if let Some(r) = rendezvous {
            s.push_str(&format!("rendezvous = \"{r}\"\n"));
        }
    }
    s
}

fn lab(a_nat: &str, b_nat: &str) -> Result<Lab> {
    let dir = TestDir::new(&format!("punch-{a_nat}-{b_nat}"))?;
    let id = unique_id();
    let inet = Netns::new(format!("sl-{id}-inet"))?;
    let hub = Netns::new(format!("sl-{id}-hub"))?;
    let offices = [
        Netns::new(format!("sl-{id}-oa"))?,
        Netns::new(format!("sl-{id}-ob"))?,
    ];
    let nats = [
        Netns::new(format!("sl-{id}-na"))?,
        Netns::new(format!("sl-{id}-nb"))?,
    ];
    inet.run(&["ip", "link", "add", "br0", "type", "bridge"])?;
    inet.up("br0")?;
    veth(&hub, "wan0", &inet, "hub")?;
    hub.addr("wan0", &format!("{HUB}/24"))?;
    inet.run(&["ip", "link", "set", "hub", "master", "br0"])?;
    inet.up("hub")?;
    let mut routers = Vec::new();
    // The on-link route to a UPnP router's WAN address, for the hub and the other router.
    if a_nat == UPNP || b_nat == UPNP {
        hub.run(&[
            "ip",
            "route",
            "add",
            &format!("{WAN_UPNP}/32"),
            "dev",
            "wan0",
        ])?;
    }
    for (i, (office, nat)) in offices.iter().zip(&nats).enumerate() {
        let n = i + 1;
        let port = format!("n{n}");
        let behavior = if i == 0 { a_nat } else { b_nat };
        if behavior == UPNP {
            // nftables masquerade + miniupnpd: interfaces as `nat_routers` names them.
            veth(office, "lan0", nat, "lan0")?;
            veth(nat, "wan0", &inet, &port)?;
            inet.run(&["ip", "link", "set", &port, "master", "br0"])?;
            inet.up(&port)?;
            office.addr("lan0", &format!("192.168.{n}.2/24"))?;
            office.route_via("default", &format!("192.168.{n}.1"))?;
            nat.addr("lan0", &format!("192.168.{n}.1/24"))?;
            nat.addr("wan0", &format!("{WAN_UPNP}/32"))?;
            nat.run(&[
                "ip",
                "route",
                "add",
                "198.51.100.0/24",
                "dev",
                "wan0",
                "src",
                WAN_UPNP,
            ])?;
            nat.enable_forwarding()?;
            nat.sh(&format!(
                "nft -f - <<'EOF'\n{}\nEOF",
                ruleset(RouterKind::Upnp)
            ))?;
            // One UPnP router per lab: its files go in the lab's directory.
            routers.push(start_miniupnpd(nat, &dir, &format!("192.168.{n}.0/24"))?);
            continue;
        }
        veth(office, "lan0", nat, "lan")?;
        veth(nat, "wan", &inet, &port)?;
        inet.run(&["ip", "link", "set", &port, "master", "br0"])?;
        inet.up(&port)?;
        office.addr("lan0", &format!("192.168.{n}.2/24"))?;
        office.route_via("default", &format!("192.168.{n}.1"))?;
        nat.addr("lan", &format!("192.168.{n}.1/24"))?;
        let wan = format!("198.51.100.{n}");
        nat.addr("wan", &format!("{wan}/24"))?;
        if a_nat == UPNP || b_nat == UPNP {
            nat.run(&[
                "ip",
                "route",
                "add",
                &format!("{WAN_UPNP}/32"),
                "dev",
                "wan",
            ])?;
        }
        routers.push(start_nat_router(
            nat,
            "lan",
            "wan",
            &wan,
            behavior,
            &dir.join(&format!("nat-{n}.log")),
            &[],
        )?);
    }

    let keys: Vec<bins::KeyPair> = ["hub", "a", "b"]
        .iter()
        .map(|k| bins::KeyPair::generate(&dir.join(&format!("{k}.key"))))
        .collect::<Result<_>>()?;
    let hub_ep = format!("{HUB}:{PORT}");
    let texts = [
        config(
            "hub",
            "10.77.0.3",
            &[
                ("office-a", &keys[1].public_key, None, "10.77.0.1/32", None),
                ("office-b", &keys[2].public_key, None, "10.77.0.2/32", None),
            ],
            true,
            false,
        ),
        config(
            "a",
            "10.77.0.1",
            &[
                (
                    "hub",
                    &keys[0].public_key,
                    Some(&hub_ep),
                    "10.77.0.3/32",
                    None,
                ),
                (
                    "office-b",
                    &keys[2].public_key,
                    None,
                    "10.77.0.2/32",
                    Some("hub"),
                ),
            ],
            false,
            a_nat == UPNP,
        ),
        config(
            "b",
            "10.77.0.2",
            &[
                (
                    "hub",
                    &keys[0].public_key,
                    Some(&hub_ep),
                    "10.77.0.3/32",
                    None,
                ),
                (
                    "office-a",
                    &keys[1].public_key,
                    None,
                    "10.77.0.1/32",
                    Some("hub"),
                ),
            ],
            false,
            b_nat == UPNP,
        ),
    ];
    let configs = ["hub", "a", "b"].map(|n| dir.join(&format!("{n}.toml")));
    for (path, text) in configs.iter().zip(&texts) {
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(Lab {
        gateways: Vec::new(),
        routers,
        offices,
        hub,
        _nats: nats,
        _inet: inet,
        configs,
        dir,
    })
}

fn path_of(s: &Status, peer: &str) -> String {
    s.peer(peer)
        .and_then(|p| p["path"].as_str())
        .unwrap_or("?")
        .to_owned()
}

fn traversal_of(s: &Status, peer: &str) -> serde_json::Value {
    s.peer(peer)
        .map(|p| p["traversal"].clone())
        .unwrap_or_default()
}

/// Runs one cell of the matrix; `direct` says whether a direct path is expected.
fn punch(a_nat: &str, b_nat: &str, direct: bool) {
    let upnp = a_nat == UPNP || b_nat == UPNP;
    if !skip_unless_root_and(if upnp { UPNP_TOOLS } else { TOOLS }) {
        return;
    }
    let mut lab = must(lab(a_nat, b_nat));
    must(run(&mut lab, a_nat, b_nat, direct));
}

fn run(lab: &mut Lab, a_nat: &str, b_nat: &str, direct: bool) -> Result<()> {
    let log = |n: &str| lab.dir.join(&format!("{n}.log"));
    let hub = start_gateway(&lab.hub, "hub", &lab.configs[0], &log("hub"))?;
    lab.gateways.push(hub);
    let started = Instant::now();
    // A UPnP office comes up first and holds its mapping before the other office probes it: a
    // probe that reaches the router before the mapping leaves a conntrack entry without the
    // port forward, which the other side's probes keep alive (see the README).
    let mut offices: [Option<Daemon>; 2] = [None, None];
    let order = if b_nat == UPNP { [1, 0] } else { [0, 1] };
    for i in order {
        let (label, name) = [("office-a", "a"), ("office-b", "b")][i];
        let mut gw = start_gateway(&lab.offices[i], label, &lab.configs[i + 1], &log(name))?;
        if [a_nat, b_nat][i] == UPNP {
            // 90 s: one SSDP discovery lost on a busy machine is retried after 60 s.
            gw.wait_for_log("traversal: port mapping candidate", Duration::from_secs(90))?;
        }
        offices[i] = Some(gw);
    }
    lab.gateways.extend(offices.into_iter().flatten());

    // Connectivity first, whatever the path: ping both ways, then a TCP transfer.
    wait_ping(&lab.offices[0], "10.77.0.2", Duration::from_secs(40))?;
    wait_ping(&lab.offices[1], "10.77.0.1", Duration::from_secs(20))?;
    let connected = started.elapsed();
    tcp_transfer(
        &TransferSpec {
            label: "a-to-b",
            from: &lab.offices[0],
            to: &lab.offices[1],
            to_addr: "10.77.0.2",
            port: 5201,
            bytes: 1 << 20,
            dir: lab.dir.path(),
        },
        Duration::from_secs(60),
    )?;

    let want = if direct { "direct" } else { "relayed" };
    let mut last = (String::new(), String::new());
    let ok = common::wait_until(
        Duration::from_secs(60),
        &format!("both paths {want}"),
        || {
            let sa = status::fetch(&lab.offices[0], &lab.configs[1]);
            let sb = status::fetch(&lab.offices[1], &lab.configs[2]);
            match (sa, sb) {
                (Ok(sa), Ok(sb)) => {
                    last = (path_of(&sa, "office-b"), path_of(&sb, "office-a"));
                    last.0 == want && last.1 == want
                }
                _ => false,
            }
        },
    );
    let sa = status::fetch(&lab.offices[0], &lab.configs[1])?;
    let sb = status::fetch(&lab.offices[1], &lab.configs[2])?;
    let ta = traversal_of(&sa, "office-b");
    let tb = traversal_of(&sb, "office-a");
    eprintln!(
        "MATRIX | {a_nat} | {b_nat} | a: {} ({}) | b: {} ({}) | time to direct a/b: {} / {} ms | connected after {:.1} s",
        last.0,
        ta["via"],
        last.1,
        tb["via"],
        ta["time_to_direct_ms"],
        tb["time_to_direct_ms"],
        connected.as_secs_f64(),
    );
    ok.with_context(|| format!("paths seen: {last:?}; a: {ta}; b: {tb}"))?;
    // A UPnP office offered its mapping, and the other side went direct to it.
    let mapped = format!("{WAN_UPNP}:{PORT}");
    for (i, (nat, other_via)) in [(a_nat, &tb["via"]), (b_nat, &ta["via"])]
        .into_iter()
        .enumerate()
    {
        if nat != UPNP {
            continue;
        }
        let log = lab.gateways[i + 1].log();
        anyhow::ensure!(
            log.contains("traversal: port mapping candidate") && log.contains(&mapped),
            "the UPnP office never offered {mapped} as a candidate"
        );
        if direct {
            anyhow::ensure!(
                other_via.as_str() == Some(mapped.as_str()),
                "the other office's direct path is {other_via}, not the mapping {mapped}"
            );
        }
    }
    // Still connected on the final path.
    wait_ping(&lab.offices[0], "10.77.0.2", Duration::from_secs(10))?;
    Ok(())
}

#[test]
fn full_cone_and_full_cone_go_direct() {
    punch("full-cone", "full-cone", true);
}

#[test]
fn restricted_and_port_restricted_go_direct() {
    punch("restricted-cone", "port-restricted-cone", true);
}

#[test]
fn port_restricted_pair_goes_direct() {
    punch("port-restricted-cone", "port-restricted-cone", true);
}

#[test]
fn symmetric_and_full_cone_go_direct() {
    punch("symmetric", "full-cone", true);
}

#[test]
fn symmetric_and_restricted_go_direct() {
    punch("symmetric", "restricted-cone", true);
}

#[test]
fn symmetric_and_port_restricted_are_relayed() {
    punch("symmetric", "port-restricted-cone", false);
}

#[test]
fn symmetric_pair_is_relayed() {
    punch("symmetric", "symmetric", false);
}

#[test]
fn symmetric_and_upnp_go_direct() {
    // Without the mapping (port-restricted masquerade) this pair is relayed.
    punch("symmetric", UPNP, true);
}

#[test]
fn port_restricted_and_upnp_go_direct() {
    punch("port-restricted-cone", UPNP, true);
}

#[test]
fn full_cone_and_restricted_go_direct() {
    punch("full-cone", "restricted-cone", true);
}

#[test]
fn full_cone_and_port_restricted_go_direct() {
    punch("full-cone", "port-restricted-cone", true);
}

#[test]
fn restricted_pair_goes_direct() {
    punch("restricted-cone", "restricted-cone", true);
}
