//! `[nat]` on sitelink gateways: two offices with the same LAN prefix, and a port forward to a
//! host in the other office.
//!
//! ```text
//!  lan-a host 192.168.1.10 ── gw-a 192.168.1.1 | 198.51.100.1 ─┐
//!                                                      inet 198.51.100.254 (bridge + router)
//!  lan-b host 192.168.1.10 ── gw-b 192.168.1.1 | 198.51.100.2 ─┘
//! ```
//!
//! Both offices use 192.168.1.0/24. Gateway A presents its LAN to the tunnel as 10.10.1.0/24,
//! gateway B as 10.10.2.0/24 (`[[nat.netmap]]`), so host A reaches host B as 10.10.2.10 and
//! host B sees host A as 10.10.1.10. Gateway A also forwards TCP 198.51.100.1:5201 to
//! 10.10.2.10:5201 with its tunnel address as the source, so a client on the internet reaches
//! the service on host B.
//!
//! Needs root, iproute2, nftables, /dev/net/tun, ping, socat and ss; skips without them.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use serde_json::Value;

use common::bins::{self, KeyPair};
use common::config::{GatewayConfig, InterfaceConfig, PeerConfig};
use common::sites::start_gateway;
use common::traffic::{tcp_transfer, wait_ping, TransferSpec};
use common::{must, skip_unless_root_and, unique_id, veth, Daemon, Netns, TestDir};

const TOOLS: &[&str] = &["nft", "ping", "socat", "ss"];
const HOST: &str = "192.168.1.10";
const MAPPED_A: &str = "10.10.1.0/24";
const MAPPED_B: &str = "10.10.2.0/24";
const HOST_A_SEEN: &str = "10.10.1.10";
const HOST_B_SEEN: &str = "10.10.2.10";
const WAN_A: &str = "198.51.100.1";
const WAN_B: &str = "198.51.100.2";
const INET: &str = "198.51.100.254";
const PORT: u16 = 51820;
const PING_TIMEOUT: Duration = Duration::from_secs(15);
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(120);

/// Two offices with overlapping LANs, netmapped; the fields drop daemons first.
struct Offices {
    gw_a: Option<Daemon>,
    gw_b: Option<Daemon>,
    lan_a: Netns,
    gw_a_ns: Netns,
    inet: Netns,
    gw_b_ns: Netns,
    lan_b: Netns,
    config_a: PathBuf,
    dir: TestDir,
}

fn config(
    dir: &Path,
    name: &str,
    keys: &KeyPair,
    tun: &str,
    peer: (&str, &KeyPair, &str, &str),
    nat: &str,
) -> Result<PathBuf> {
    let (peer_name, peer_keys, peer_wan, peer_mapped) = peer;
    let peer_tun = if tun == "10.77.0.1" {
        "10.77.0.2"
    } else {
        "10.77.0.1"
    };
    let _ = keys;
    let c = GatewayConfig {
        interface: InterfaceConfig {
            name: "sl0".into(),
            private_key_file: PathBuf::from(format!("{name}.key")),
            listen_port: PORT,
            address: vec![format!("{tun}/24")],
            mtu: Some(1420),
        },
        peers: vec![PeerConfig {
            name: peer_name.into(),
            public_key: peer_keys.public_key.clone(),
            preshared_key_file: None,
            endpoint: Some(format!("{peer_wan}:{PORT}")),
            allowed_ips: vec![format!("{peer_tun}/32"), peer_mapped.into()],
            persistent_keepalive: None,
        }],
    };
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, format!("{}\n{nat}", c.to_toml()))
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

fn offices(test: &str, extra_nat_a: &str) -> Result<Offices> {
    let dir = TestDir::new(test)?;
    let id = unique_id();
    let ns = |role: &str| Netns::new(format!("sl-{id}-{role}"));
    let (lan_a, gw_a_ns, inet, gw_b_ns, lan_b) = (
        ns("lana")?,
        ns("gwa")?,
        ns("inet")?,
        ns("gwb")?,
        ns("lanb")?,
    );
    inet.run(&["ip", "link", "add", "br0", "type", "bridge"])?;
    inet.addr("br0", &format!("{INET}/24"))?;
    inet.enable_forwarding()?;
    for (gw, port, wan, lan) in [
        (&gw_a_ns, "to-a", WAN_A, &lan_a),
        (&gw_b_ns, "to-b", WAN_B, &lan_b),
    ] {
        veth(gw, "wan", &inet, port)?;
        inet.run(&["ip", "link", "set", port, "master", "br0"])?;
        gw.addr("wan", &format!("{wan}/24"))?;
        gw.route_via("default", INET)?;
        gw.enable_forwarding()?;
        veth(lan, "eth0", gw, "lan")?;
        gw.addr("lan", "192.168.1.1/24")?;
        lan.addr("eth0", &format!("{HOST}/24"))?;
        lan.route_via("default", "192.168.1.1")?;
    }
    let key_a = KeyPair::generate(&dir.join("office-a.key"))?;
    let key_b = KeyPair::generate(&dir.join("office-b.key"))?;
    let netmap = |mapped: &str| {
        format!("[[nat.netmap]]\nreal = \"192.168.1.0/24\"\nmapped = \"{mapped}\"\n")
    };
    let config_a = config(
        dir.path(),
        "office-a",
        &key_a,
        "10.77.0.1",
        ("office-b", &key_b, WAN_B, MAPPED_B),
        &format!("{}{extra_nat_a}", netmap(MAPPED_A)),
    )?;
    let config_b = config(
        dir.path(),
        "office-b",
        &key_b,
        "10.77.0.2",
        ("office-a", &key_a, WAN_A, MAPPED_A),
        &netmap(MAPPED_B),
    )?;
    let gw = bins::bin(bins::GATEWAY);
    for config in [&config_a, &config_b] {
        let out = std::process::Command::new(&gw)
            .args(["check", "--config"])
            .arg(config)
            .output()?;
        ensure!(
            out.status.success(),
            "check {}: {}",
            config.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut o = Offices {
        gw_a: None,
        gw_b: None,
        lan_a,
        gw_a_ns,
        inet,
        gw_b_ns,
        lan_b,
        config_a,
        dir,
    };
    o.gw_a = Some(start_gateway(
        &o.gw_a_ns,
        "gateway A",
        &o.config_a,
        &o.dir.join("gw-a.log"),
    )?);
    o.gw_b = Some(start_gateway(
        &o.gw_b_ns,
        "gateway B",
        &config_b,
        &o.dir.join("gw-b.log"),
    )?);
    Ok(o)
}

/// `sitelink-gateway nat --json` on gateway A.
fn nat_json(o: &Offices) -> Result<Value> {
    let gw = bins::bin(bins::GATEWAY);
    let out = o.gw_a_ns.run(&[
        &gw.to_string_lossy(),
        "nat",
        "--json",
        "--config",
        &o.config_a.to_string_lossy(),
    ])?;
    serde_json::from_str(&out).with_context(|| format!("nat --json printed {out:?}"))
}

#[test]
fn overlapping_office_subnets_talk_through_netmaps() {
    if !skip_unless_root_and(TOOLS) {
        return;
    }
    let o = must(offices("nat-netmap", ""));
    must(netmaps(&o));
}

fn netmaps(o: &Offices) -> Result<()> {
    wait_ping(&o.lan_a, HOST_B_SEEN, PING_TIMEOUT).context("host A -> host B as 10.10.2.10")?;
    wait_ping(&o.lan_b, HOST_A_SEEN, PING_TIMEOUT).context("host B -> host A as 10.10.1.10")?;
    for (label, from, to, to_addr) in [
        ("a-to-b", &o.lan_a, &o.lan_b, HOST_B_SEEN),
        ("b-to-a", &o.lan_b, &o.lan_a, HOST_A_SEEN),
    ] {
        tcp_transfer(
            &TransferSpec {
                label,
                from,
                to,
                to_addr,
                port: 5201,
                bytes: 4 << 20,
                dir: o.dir.path(),
            },
            TRANSFER_TIMEOUT,
        )?;
    }
    // The receiving host saw the other office under its mapped prefix.
    let conns = o.lan_b.run(&["ss", "-Htn", "state", "time-wait"])?;
    ensure!(
        conns.contains(HOST_A_SEEN) || conns.is_empty(),
        "host B saw connections from {conns}"
    );
    let report = nat_json(o)?;
    let out = report["lan_side"]["counters"]["translated_out"]
        .as_u64()
        .context(format!("no lan_side counters in {report}"))?;
    let inb = report["lan_side"]["counters"]["translated_in"]
        .as_u64()
        .unwrap_or(0);
    ensure!(out > 0 && inb > 0, "netmap counters: {report}");
    Ok(())
}

#[test]
fn port_forward_reaches_a_host_in_the_other_office() {
    if !skip_unless_root_and(TOOLS) {
        return;
    }
    let forward = format!(
        "\n[[nat.forward]]\nproto = \"tcp\"\nexternal_addr = \"{WAN_A}\"\nexternal_port = 5201\n\
         to = \"{HOST_B_SEEN}:5201\"\nsource = \"10.77.0.1\"\n"
    );
    let o = must(offices("nat-forward", &forward));
    must(port_forward(&o));
}

fn port_forward(o: &Offices) -> Result<()> {
    wait_ping(&o.lan_a, HOST_B_SEEN, PING_TIMEOUT).context("the tunnel is up")?;
    tcp_transfer(
        &TransferSpec {
            label: "inet-to-b-via-a",
            from: &o.inet,
            to: &o.lan_b,
            to_addr: WAN_A,
            port: 5201,
            bytes: 4 << 20,
            dir: o.dir.path(),
        },
        TRANSFER_TIMEOUT,
    )?;
    let report = nat_json(o)?;
    let created = report["tunnel_side"]["counters"]["sessions_created"]
        .as_u64()
        .context(format!("no tunnel_side counters in {report}"))?;
    ensure!(created >= 1, "no forward session: {report}");
    // The gateway's own services on its WAN address are untouched: gateway A still answers
    // pings there, and the tunnel (UDP 51820 on that address) kept working throughout.
    wait_ping(&o.inet, WAN_A, PING_TIMEOUT)?;
    wait_ping(&o.lan_b, HOST_A_SEEN, PING_TIMEOUT)?;
    let _ = (&o.gw_b_ns, &o.gw_a);
    Ok(())
}

#[test]
fn steering_is_removed_on_exit() {
    if !skip_unless_root_and(TOOLS) {
        return;
    }
    let forward = format!(
        "\n[[nat.forward]]\nproto = \"udp\"\nexternal_addr = \"{WAN_A}\"\nexternal_port = 5353\n\
         to = \"{HOST_B_SEEN}\"\n"
    );
    let mut o = must(offices("nat-cleanup", &forward));
    must(cleanup(&mut o));
}

fn cleanup(o: &mut Offices) -> Result<()> {
    let rules = o.gw_a_ns.run(&["ip", "rule"])?;
    ensure!(
        rules.contains("fwmark"),
        "no fwmark rule while up:\n{rules}"
    );
    let tables = o.gw_a_ns.run(&["nft", "list", "tables"])?;
    ensure!(
        tables.contains("sitelink_nat_sl0"),
        "no nft table:\n{tables}"
    );
    let gw = o.gw_a.as_mut().context("gateway A")?;
    let status = gw.terminate(Duration::from_secs(15))?;
    ensure!(status.success(), "gateway A exited with {status}");
    let rules = o.gw_a_ns.run(&["ip", "rule"])?;
    ensure!(
        !rules.contains("fwmark")
            && rules
                .lines()
                .any(|l| l.starts_with("0:") && l.contains("lookup local")),
        "rules left behind:\n{rules}"
    );
    let tables = o.gw_a_ns.run(&["nft", "list", "tables"])?;
    ensure!(
        !tables.contains("sitelink_nat"),
        "nft table left:\n{tables}"
    );
    Ok(())
}
