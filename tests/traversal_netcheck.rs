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
//! - sitelink's own NAT router (`sitelink-nat-router`) in each of its four behaviours →
//!   "full-cone", "restricted-cone", "port-restricted-cone", "symmetric"; for the cone types the
//!   public endpoint netcheck reports is the mapping the router gives a later datagram from the
//!   same local port (endpoint-independent mapping: one mapping for every destination).
//!
//! - a running gateway asks the STUN server from its tunnel socket: `status --json` shows
//!   `interface.public_endpoint`, the mapping conntrack holds for the listen port.
//!
//! Not here yet: the two-office matrix with rendezvous and relay.

mod common;

use std::time::Duration;

use common::nat_router::{probe, udp_socket_in};
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
fn gateway_learns_its_tunnel_sockets_public_endpoint() {
    if !skip_unless_root_and(TOOLS) {
        return;
    }
    let lab = must(NatLab::new("stun-tunnel-socket", RouterKind::Masquerade));
    let config = must(lab.gateway_config(51820, false));
    let gateway = common::bins::bin(common::bins::GATEWAY);
    let gw = must(Daemon::spawn(
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
    let mut public = None;
    must(wait_until(
        Duration::from_secs(30),
        "interface.public_endpoint in status --json",
        || {
            public = status::fetch(&lab.gw, &config).ok().and_then(|s| {
                s.0["interface"]["public_endpoint"]
                    .as_str()
                    .map(str::to_owned)
            });
            public.is_some()
        },
    ));
    let public = public.expect("polled");
    let table = must(lab.conntrack());
    let assigned = conntrack_public_port(&table, 51820)
        .unwrap_or_else(|| panic!("no conntrack entry for the listen port:\n{table}"));
    assert_eq!(
        public,
        format!("{}:{assigned}", lab.wan()),
        "the tunnel socket's mapping\n{table}\n{}",
        gw.log_tail(20)
    );
    eprintln!("status: interface.public_endpoint {public} (conntrack agrees)");
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

/// netcheck behind `sitelink-nat-router --behavior BEHAVIOR`: the NAT type, mapping and
/// filtering it reports, and (for the cone types) its public endpoint against the mapping the
/// router really holds for netcheck's local port.
fn sitelink_router(behavior: &'static str, nat_type: &str, filtering: &str) {
    if !skip_unless_root_and(&["turnserver", "nft"]) {
        return;
    }
    let mut lab = must(NatLab::new(
        &format!("netcheck-slnat-{behavior}"),
        RouterKind::Sitelink(behavior),
    ));
    let config = must(lab.gateway_config(51820, false));
    let json = must(lab.netcheck_json(&config));
    eprintln!("netcheck behind sitelink-nat-router {behavior}: {json}");
    must(lab.ensure_router_running());
    assert_eq!(json["nat_type"], nat_type, "{json}");
    assert_eq!(json["filtering"], filtering, "{json}");
    let symmetric = nat_type == "symmetric";
    let mapping = if symmetric {
        "address-and-port-dependent"
    } else {
        "endpoint-independent"
    };
    assert_eq!(json["mapping"], mapping, "{json}");
    // The hairpinned probe arrives from a new mapping, which a symmetric NAT's filter refuses.
    assert_eq!(json["hairpinning"], !symmetric, "{json}");

    let (public_ip, public_port) = endpoint(&json, "public_endpoint");
    let (_, local_port) = endpoint(&json, "local_endpoint");
    assert_eq!(public_ip, lab.wan(), "{json}");
    // The router keeps the local port when it is free.
    assert_eq!(public_port, local_port, "{json}");
    // The router's log names the mapping of netcheck's session with the primary server.
    let log =
        must(std::fs::read_to_string(lab.dir.join("nat-router.log")).map_err(anyhow::Error::from));
    let session = format!(
        "internal={GW_LAN}:{local_port} external={public_ip}:{public_port} \
         remote={STUN_PRIMARY}:{STUN_PORT}"
    );
    assert!(
        log.lines()
            .any(|l| l.contains("NAT session created") && l.contains(&session)),
        "no `{session}` in the router's log:\n{log}"
    );
    if symmetric {
        return;
    }
    // A datagram from the same local port to a host netcheck never talked to leaves through
    // the same mapping (netcheck's sessions are still alive): the router's own answer.
    let inside = must(udp_socket_in(
        &lab.gw,
        format!("{GW_LAN}:{local_port}").parse().expect("address"),
    ));
    let outside = must(udp_socket_in(
        &lab.stun,
        format!("{STUN_PRIMARY}:40001").parse().expect("address"),
    ));
    let seen = must(probe(&inside, &outside, b"mapping?", 5));
    assert_eq!(
        seen.to_string(),
        format!("{public_ip}:{public_port}"),
        "the router's mapping for {GW_LAN}:{local_port}"
    );
    must(lab.ensure_router_running());
}

#[test]
fn sitelink_router_full_cone() {
    sitelink_router("full-cone", "full-cone", "endpoint-independent");
}

#[test]
fn sitelink_router_restricted_cone() {
    sitelink_router("restricted-cone", "restricted-cone", "address-dependent");
}

#[test]
fn sitelink_router_port_restricted_cone() {
    sitelink_router(
        "port-restricted-cone",
        "port-restricted-cone",
        "address-and-port-dependent",
    );
}

#[test]
fn sitelink_router_symmetric() {
    sitelink_router("symmetric", "symmetric", "address-and-port-dependent");
}
