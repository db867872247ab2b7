//! NAT traversal, first half (issue #5): `netcheck` against coturn behind real Linux NAT
//! routers, and UPnP port mapping through miniupnpd.
//!
//! - nftables `masquerade` (port-preserving) → "port-restricted-cone", and the public endpoint
//!   netcheck reports is the one in the router's conntrack table;
//! - `masquerade fully-random` → "symmetric";
//! - miniupnpd: netcheck sees the IGD and its external address; `up` maps the listen port (seen
//!   in `upnpc -l`), a datagram to the router's WAN address and that port reaches the gateway,
//!   and the mapping is gone after the gateway exits.
//!
//! Not here yet: sitelink's own NAT router in full-cone and restricted modes (another engineer's
//! work in progress), and the two-office matrix with rendezvous and relay.

mod common;

use std::time::Duration;

use common::nat_routers::{NatLab, RouterKind, GW_LAN, STUN_PORT, STUN_PRIMARY};
use common::{must, skip_unless_root_and, status, wait_until, Daemon};
use serde_json::Value;

const TOOLS: &[&str] = &["turnserver", "conntrack", "nft"];

fn endpoint(json: &Value, key: &str) -> (String, u16) {
    let text = json[key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} missing in {json}"));
    let (ip, port) = text.rsplit_once(':').expect("ip:port");
    (ip.to_owned(), port.parse().expect("port"))
}

/// The conntrack line of our Binding request to the primary STUN server from `local_port`:
/// its reply direction names the public port the router really assigned.
fn conntrack_public_port(table: &str, local_port: u16) -> Option<u16> {
    let request = format!("src={GW_LAN} dst={STUN_PRIMARY} sport={local_port} dport={STUN_PORT} ");
    let line = table.lines().find(|l| l.contains(&request))?;
    // "... src=198.51.100.10 dst=<wan> sport=3478 dport=<public port> ..."
    let reply = line.split(&request).nth(1)?;
    reply
        .split_whitespace()
        .find_map(|f| f.strip_prefix("dport="))
        .and_then(|p| p.parse().ok())
}

fn check_against_conntrack(lab: &NatLab, json: &Value) -> u16 {
    let (public_ip, public_port) = endpoint(json, "public_endpoint");
    let (_, local_port) = endpoint(json, "local_endpoint");
    assert_eq!(public_ip, lab.wan(), "{json}");
    let table = must(lab.conntrack());
    let assigned = conntrack_public_port(&table, local_port)
        .unwrap_or_else(|| panic!("no conntrack entry for port {local_port}:\n{table}"));
    assert_eq!(
        public_port, assigned,
        "netcheck's endpoint is what the router assigned\n{table}"
    );
    eprintln!(
        "netcheck: {} → {public_ip}:{public_port} (conntrack agrees), nat_type {}",
        json["local_endpoint"], json["nat_type"]
    );
    local_port
}

#[test]
fn masquerade_is_port_restricted_cone() {
    if !skip_unless_root_and(TOOLS) {
        return;
    }
    let lab = must(NatLab::new("netcheck-masq", RouterKind::Masquerade));
    let config = must(lab.gateway_config(51820, false));
    let json = must(lab.netcheck_json(&config));
    assert_eq!(json["nat_type"], "port-restricted-cone", "{json}");
    assert_eq!(json["mapping"], "endpoint-independent", "{json}");
    assert_eq!(json["filtering"], "address-and-port-dependent", "{json}");
    assert_eq!(json["hairpinning"], false, "{json}");
    assert_eq!(json["upnp"], false, "{json}");
    assert!(json["upnp_external_ip"].is_null(), "{json}");
    assert_eq!(json["stun_other_address"], "198.51.100.11:3479", "{json}");
    let local_port = check_against_conntrack(&lab, &json);
    // Port-preserving: the public port is the local one.
    assert_eq!(endpoint(&json, "public_endpoint").1, local_port, "{json}");

    let text = must(lab.netcheck(&config, false));
    eprintln!("{text}");
    assert!(text.contains("port-restricted cone NAT"), "{text}");
    assert!(
        text.contains(&format!("public endpoint: {}:", lab.wan())),
        "{text}"
    );
    assert!(text.contains("hairpinning:     no"), "{text}");
}

#[test]
fn fully_random_masquerade_is_symmetric() {
    if !skip_unless_root_and(TOOLS) {
        return;
    }
    let lab = must(NatLab::new("netcheck-random", RouterKind::MasqueradeRandom));
    let config = must(lab.gateway_config(51820, false));
    let json = must(lab.netcheck_json(&config));
    assert_eq!(json["nat_type"], "symmetric", "{json}");
    assert_eq!(json["mapping"], "address-and-port-dependent", "{json}");
    check_against_conntrack(&lab, &json);
}

#[test]
fn upnp_maps_the_listen_port_while_the_gateway_runs() {
    if !skip_unless_root_and(&["turnserver", "conntrack", "nft", "miniupnpd", "upnpc"]) {
        return;
    }
    let lab = must(NatLab::new("upnp", RouterKind::Upnp));
    let config = must(lab.gateway_config(51820, true));

    // netcheck sees the IGD and its external address.
    let json = must(lab.netcheck_json(&config));
    assert_eq!(json["upnp"], true, "{json}");
    assert_eq!(json["upnp_external_ip"], lab.wan(), "{json}");
    assert_eq!(json["nat_type"], "port-restricted-cone", "{json}");
    check_against_conntrack(&lab, &json);

    // `up` maps UDP 51820.
    let gateway = common::bins::bin(common::bins::GATEWAY);
    let mut gw = must(Daemon::spawn(
        &lab.gw,
        "gateway",
        &lab.dir.join("gateway.log"),
        &[
            &gateway.to_string_lossy(),
            "up",
            "--config",
            &config.to_string_lossy(),
        ],
    ));
    let mapping = format!("UDP 51820->{GW_LAN}:51820 'sitelink'");
    must(wait_until(
        Duration::from_secs(30),
        "the gateway's mapping in upnpc -l",
        || lab.upnp_list().is_ok_and(|l| l.contains(&mapping)),
    ));
    eprintln!("{}", must(lab.upnp_list()));

    // netcheck next to the running daemon takes another port.
    let json = must(lab.netcheck_json(&config));
    assert_ne!(endpoint(&json, "local_endpoint").1, 51820, "{json}");

    // A datagram from the internet to the router's WAN address reaches the gateway.
    let before = must(status::fetch(&lab.gw, &config))
        .counter("rx_packets")
        .unwrap_or(0);
    let target = format!("/dev/udp/{}/51820", lab.wan());
    must(wait_until(
        Duration::from_secs(20),
        "a datagram through the UPnP mapping",
        || {
            let _ = lab
                .stun
                .run(&["bash", "-c", &format!("echo probe > {target}")]);
            std::thread::sleep(Duration::from_millis(200));
            status::fetch(&lab.gw, &config)
                .ok()
                .and_then(|s| s.counter("rx_packets"))
                .is_some_and(|n| n > before)
        },
    ));

    // SIGTERM: the gateway removes its mapping before it exits.
    let exit = must(gw.terminate(Duration::from_secs(20)));
    assert!(
        exit.success(),
        "gateway exit: {exit:?}\n{}",
        gw.log_tail(30)
    );
    assert!(
        gw.log().contains("upnp: mapping removed"),
        "{}",
        gw.log_tail(30)
    );
    let list = must(lab.upnp_list());
    assert!(!list.contains("sitelink"), "mapping left behind:\n{list}");
}
