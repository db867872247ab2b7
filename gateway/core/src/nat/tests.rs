//! Unit tests of the engine, on a hand-moved clock, with packets built by etherparse.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use etherparse::icmpv4::DestUnreachableHeader;
use etherparse::{
    Icmpv4Slice, Icmpv4Type, Ipv4HeaderSlice, PacketBuilder, TcpHeaderSlice, UdpHeaderSlice,
};

use super::checksum::full;
use super::*;

/// What to build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Udp,
    Tcp {
        syn: bool,
        ack: bool,
        fin: bool,
        rst: bool,
    },
    /// Echo request; the id is the source "port".
    EchoRequest,
    /// Echo reply; the id is the destination "port".
    EchoReply,
}

pub(super) const SYN: Kind = Kind::Tcp {
    syn: true,
    ack: false,
    fin: false,
    rst: false,
};
pub(super) const SYNACK: Kind = Kind::Tcp {
    syn: true,
    ack: true,
    fin: false,
    rst: false,
};
pub(super) const ACK: Kind = Kind::Tcp {
    syn: false,
    ack: true,
    fin: false,
    rst: false,
};
pub(super) const FIN: Kind = Kind::Tcp {
    syn: false,
    ack: true,
    fin: true,
    rst: false,
};
pub(super) const RST: Kind = Kind::Tcp {
    syn: false,
    ack: false,
    fin: false,
    rst: true,
};

pub(super) fn sa(s: &str) -> SocketAddrV4 {
    s.parse().expect("test socket address")
}

pub(super) fn ip(s: &str) -> Ipv4Addr {
    s.parse().expect("test address")
}

/// An IPv4 packet with correct checksums.
pub(super) fn build(kind: Kind, src: SocketAddrV4, dst: SocketAddrV4, payload: &[u8]) -> Vec<u8> {
    let b = PacketBuilder::ipv4(src.ip().octets(), dst.ip().octets(), 64);
    let mut out = Vec::new();
    let r = match kind {
        Kind::Udp => b.udp(src.port(), dst.port()).write(&mut out, payload),
        Kind::Tcp { syn, ack, fin, rst } => {
            let mut t = b.tcp(src.port(), dst.port(), 1000, 65535);
            if syn {
                t = t.syn();
            }
            if ack {
                t = t.ack(1);
            }
            if fin {
                t = t.fin();
            }
            if rst {
                t = t.rst();
            }
            t.write(&mut out, payload)
        }
        Kind::EchoRequest => b
            .icmpv4_echo_request(src.port(), 1)
            .write(&mut out, payload),
        Kind::EchoReply => b.icmpv4_echo_reply(dst.port(), 1).write(&mut out, payload),
    };
    r.expect("builds");
    out
}

pub(super) fn udp(src: &str, dst: &str) -> Vec<u8> {
    build(Kind::Udp, sa(src), sa(dst), b"payload")
}

pub(super) fn tcp(kind: Kind, src: &str, dst: &str) -> Vec<u8> {
    build(kind, sa(src), sa(dst), b"")
}

/// An ICMP error from `from` to `to` quoting `quoted`.
pub(super) fn icmp_error(t: Icmpv4Type, from: Ipv4Addr, to: Ipv4Addr, quoted: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ipv4(from.octets(), to.octets(), 64)
        .icmpv4(t)
        .write(&mut out, quoted)
        .expect("builds");
    out
}

pub(super) fn port_unreachable() -> Icmpv4Type {
    Icmpv4Type::DestinationUnreachable(DestUnreachableHeader::Port)
}

/// Source and destination endpoints (ICMP queries: the id as both ports).
pub(super) fn ends(p: &[u8]) -> (SocketAddrV4, SocketAddrV4) {
    let h = packet::parse(p).expect("parses");
    let (_, sp, dp) = h.ports().unwrap_or((Proto::Udp, 0, 0));
    (
        SocketAddrV4::new(Ipv4Addr::from(h.src), sp),
        SocketAddrV4::new(Ipv4Addr::from(h.dst), dp),
    )
}

/// Whether every checksum of `p` equals a full recomputation (etherparse for TCP and UDP); for
/// ICMP errors also those of the quoted packet when it is quoted whole.
pub(super) fn checksums_ok(p: &[u8]) -> bool {
    let Ok(ip) = Ipv4HeaderSlice::from_slice(p) else {
        return false;
    };
    if full(ip.slice()) != 0 {
        return false;
    }
    let payload = &p[ip.slice().len()..usize::from(ip.total_len())];
    match ip.protocol().0 {
        6 => {
            let Ok(t) = TcpHeaderSlice::from_slice(payload) else {
                return false;
            };
            let data = &payload[t.slice().len()..];
            t.calc_checksum_ipv4(&ip, data).ok() == Some(t.checksum())
        }
        17 => {
            let Ok(u) = UdpHeaderSlice::from_slice(payload) else {
                return false;
            };
            u.checksum() == 0
                || u.to_header()
                    .calc_checksum_ipv4_raw(ip.source(), ip.destination(), &payload[8..])
                    .ok()
                    == Some(u.checksum())
        }
        1 => {
            if full(payload) != 0 {
                return false;
            }
            let Ok(icmp) = Icmpv4Slice::from_slice(payload) else {
                return false;
            };
            if matches!(icmp.type_u8(), 3 | 11 | 12) {
                let quoted = &payload[8..];
                let Ok(q) = Ipv4HeaderSlice::from_slice(quoted) else {
                    return false;
                };
                if full(q.slice()) != 0 {
                    return false;
                }
                if usize::from(q.total_len()) == quoted.len() {
                    return checksums_ok(quoted);
                }
            }
            true
        }
        _ => true,
    }
}

pub(super) fn config(s: &str) -> NatConfig {
    toml::from_str(s).expect("test config parses")
}

/// One pool address, one preset, for every inside source.
pub(super) fn masq(preset: &str) -> NatConfig {
    config(&format!(
        "[[masquerade]]\npool = [\"203.0.113.1\"]\npreset = \"{preset}\"\n"
    ))
}

pub(super) struct Harness {
    pub(super) nat: Nat,
    pub(super) t0: Instant,
}

impl Harness {
    pub(super) fn new(c: &NatConfig) -> Self {
        let t0 = Instant::now();
        Self {
            nat: Nat::new(c, 7, t0).expect("valid config"),
            t0,
        }
    }
    pub(super) fn at(&self, secs: u64) -> Instant {
        self.t0 + Duration::from_secs(secs)
    }
    /// Translates outbound at `secs`; returns the verdict and the packet.
    pub(super) fn out(&mut self, mut p: Vec<u8>, secs: u64) -> (Verdict, Vec<u8>) {
        let v = self.nat.translate_outbound(&mut p, self.at(secs));
        (v, p)
    }
    pub(super) fn inb(&mut self, mut p: Vec<u8>, secs: u64) -> (Verdict, Vec<u8>) {
        let v = self.nat.translate_inbound(&mut p, self.at(secs));
        (v, p)
    }
    /// Sends `p` out, expects it translated with valid checksums, returns its external source.
    pub(super) fn out_ok(&mut self, p: Vec<u8>, secs: u64) -> SocketAddrV4 {
        let (v, p) = self.out(p, secs);
        assert_eq!(v, Verdict::Forward);
        assert!(checksums_ok(&p));
        ends(&p).0
    }
    pub(super) fn tick(&mut self, secs: u64) {
        self.nat.handle_timeout(self.at(secs));
    }
}

const REMOTE: &str = "198.51.100.7:53";
const HOST: &str = "192.168.1.10:5000";

/// Sends the reply from `REMOTE` to the external endpoint `ext` in at `secs`.
fn reply_udp(h: &mut Harness, ext: SocketAddrV4, secs: u64) -> Verdict {
    h.inb(udp(REMOTE, &ext.to_string()), secs).0
}

#[test]
fn port_preserved_and_reply_translated_back() {
    let mut h = Harness::new(&masq("port-restricted-cone"));
    let ext = h.out_ok(udp(HOST, REMOTE), 0);
    assert_eq!(ext, sa("203.0.113.1:5000"));
    let (v, p) = h.inb(udp(REMOTE, "203.0.113.1:5000"), 1);
    assert_eq!(v, Verdict::Forward);
    assert_eq!(p, udp(REMOTE, HOST));
    let c = h.nat.counters();
    assert_eq!(
        (c.translated_out, c.translated_in, c.sessions, c.mappings),
        (1, 1, 1, 1)
    );
}

#[test]
fn udp_mapping_lives_120s_rfc4787_req5() {
    let mut c = masq("port-restricted-cone");
    c.timeouts.udp = 120;
    let mut h = Harness::new(&c);
    let ext = h.out_ok(udp(HOST, REMOTE), 0);
    assert_eq!(reply_udp(&mut h, ext, 1), Verdict::Forward);
    // Idle from t=1: alive at 120, gone at 121.
    h.tick(120);
    assert_eq!(reply_udp(&mut h, ext, 120), Verdict::Forward);
    h.tick(240);
    assert_eq!(h.nat.counters().sessions, 0);
    assert_eq!(h.nat.counters().sessions_expired, 1);
    assert_eq!(
        reply_udp(&mut h, ext, 241),
        Verdict::Drop(DropReason::NoSession)
    );
}

#[test]
fn udp_single_unanswered_packet_is_short_lived() {
    let mut h = Harness::new(&masq("port-restricted-cone"));
    let ext = h.out_ok(udp(HOST, REMOTE), 0);
    h.tick(29);
    assert_eq!(h.nat.counters().sessions, 1);
    h.tick(30);
    assert_eq!(h.nat.counters().sessions, 0);
    assert_eq!(
        reply_udp(&mut h, ext, 31),
        Verdict::Drop(DropReason::NoSession)
    );
    // Two outbound packets: the full UDP timeout.
    let ext = h.out_ok(udp(HOST, REMOTE), 200);
    h.out_ok(udp(HOST, REMOTE), 201);
    assert_eq!(reply_udp(&mut h, ext, 201 + 299), Verdict::Forward);
}

#[test]
fn outbound_refreshes_rfc4787_req6() {
    let mut c = masq("port-restricted-cone");
    c.timeouts.udp = 120;
    let mut h = Harness::new(&c);
    let ext = h.out_ok(udp(HOST, REMOTE), 0);
    // The second packet comes within the 30 s of a single packet; then 120 s each.
    for t in [20, 130, 240] {
        h.tick(t);
        assert_eq!(h.out_ok(udp(HOST, REMOTE), t), ext);
    }
    h.tick(359);
    assert_eq!(reply_udp(&mut h, ext, 359), Verdict::Forward);
}

#[test]
fn inbound_refreshes_when_the_filter_lets_it_in() {
    let mut c = masq("port-restricted-cone");
    c.timeouts.udp = 120;
    let mut h = Harness::new(&c);
    let ext = h.out_ok(udp(HOST, REMOTE), 0);
    for t in [1, 100, 200, 300] {
        assert_eq!(reply_udp(&mut h, ext, t), Verdict::Forward);
        h.tick(t);
    }
    // A remote the filter refuses does not refresh (nor get in).
    assert_eq!(
        h.inb(udp("198.51.100.7:54", &ext.to_string()), 400).0,
        Verdict::Drop(DropReason::NoSession)
    );
    h.tick(420);
    assert_eq!(h.nat.counters().sessions, 0);
}

#[test]
fn icmp_errors_do_not_refresh() {
    let mut c = masq("port-restricted-cone");
    c.timeouts.udp = 120;
    let mut h = Harness::new(&c);
    let (v, sent) = h.out(udp(HOST, REMOTE), 0);
    assert_eq!(v, Verdict::Forward);
    assert_eq!(reply_udp(&mut h, ends(&sent).0, 0), Verdict::Forward);
    let err = icmp_error(
        port_unreachable(),
        ip("198.51.100.1"),
        ip("203.0.113.1"),
        &sent,
    );
    let (v, _) = h.inb(err.clone(), 100);
    assert_eq!(v, Verdict::Forward);
    h.tick(120);
    assert_eq!(h.nat.counters().sessions, 0);
    assert_eq!(
        h.inb(err, 121).0,
        Verdict::Drop(DropReason::IcmpErrorUnmatched)
    );
}

#[test]
fn tcp_established_lives_2h4m_rfc5382() {
    let mut h = Harness::new(&masq("port-restricted-cone"));
    let ext = h.out_ok(tcp(SYN, HOST, "198.51.100.7:443"), 0);
    let back = |kind| tcp(kind, "198.51.100.7:443", &ext.to_string());
    assert_eq!(h.inb(back(SYNACK), 1).0, Verdict::Forward);
    h.out_ok(tcp(ACK, HOST, "198.51.100.7:443"), 2);
    h.tick(2 + 7439);
    assert_eq!(h.inb(back(ACK), 2 + 7439).0, Verdict::Forward);
    h.tick(2 + 7439 + 7440);
    assert_eq!(h.nat.counters().sessions, 0);
    assert_eq!(
        h.inb(back(ACK), 2 + 7439 + 7441).0,
        Verdict::Drop(DropReason::NoSession)
    );
}

#[test]
fn tcp_transitory_4min_rfc5382() {
    let dst = "198.51.100.7:443";
    // Only a SYN: transitory.
    let mut h = Harness::new(&masq("port-restricted-cone"));
    h.out_ok(tcp(SYN, HOST, dst), 0);
    h.tick(239);
    assert_eq!(h.nat.counters().sessions, 1);
    h.tick(240);
    assert_eq!(h.nat.counters().sessions, 0);

    // Established, then FINs both ways: transitory again.
    let ext = h.out_ok(tcp(SYN, HOST, dst), 1000);
    let back = |kind| tcp(kind, dst, &ext.to_string());
    assert_eq!(h.inb(back(SYNACK), 1000).0, Verdict::Forward);
    h.out_ok(tcp(FIN, HOST, dst), 1001);
    h.tick(1001 + 240);
    assert_eq!(
        h.nat.counters().sessions,
        1,
        "half-closed stays established"
    );
    assert_eq!(h.inb(back(FIN), 1300).0, Verdict::Forward);
    h.tick(1300 + 239);
    assert_eq!(h.nat.counters().sessions, 1);
    h.tick(1300 + 240);
    assert_eq!(h.nat.counters().sessions, 0);

    // A RST: transitory.
    let ext = h.out_ok(tcp(SYN, HOST, dst), 5000);
    let back = |kind| tcp(kind, dst, &ext.to_string());
    assert_eq!(h.inb(back(SYNACK), 5000).0, Verdict::Forward);
    assert_eq!(h.inb(back(RST), 5001).0, Verdict::Forward);
    h.tick(5001 + 240);
    assert_eq!(h.nat.counters().sessions, 0);
}

#[test]
fn icmp_query_lives_60s_rfc5508() {
    let mut h = Harness::new(&masq("port-restricted-cone"));
    let req = build(
        Kind::EchoRequest,
        sa("192.168.1.10:777"),
        sa("198.51.100.7:0"),
        b"ping",
    );
    let ext = h.out_ok(req, 0);
    assert_eq!(ext, sa("203.0.113.1:777"));
    let reply = |h: &mut Harness, t| {
        h.inb(
            build(Kind::EchoReply, sa("198.51.100.7:0"), ext, b"ping"),
            t,
        )
    };
    let (v, p) = reply(&mut h, 59);
    assert_eq!(v, Verdict::Forward);
    assert_eq!(
        p,
        build(
            Kind::EchoReply,
            sa("198.51.100.7:0"),
            sa("192.168.1.10:777"),
            b"ping"
        )
    );
    h.tick(59 + 59);
    assert_eq!(h.nat.counters().sessions, 1);
    h.tick(59 + 60);
    assert_eq!(h.nat.counters().sessions, 0);
}

#[test]
fn well_known_and_ephemeral_ports_stay_apart_rfc4787_req3() {
    let mut h = Harness::new(&masq("symmetric"));
    // Symmetric: the second flow from the same port needs another port, in the same range.
    assert_eq!(
        h.out_ok(udp("192.168.1.10:53", REMOTE), 0),
        sa("203.0.113.1:53")
    );
    let p = h
        .out_ok(udp("192.168.1.10:53", "198.51.100.8:53"), 0)
        .port();
    assert!((1..1024).contains(&p), "{p}");
    assert_eq!(h.out_ok(udp("192.168.1.10:1024", REMOTE), 0).port(), 1024);
    let p = h
        .out_ok(udp("192.168.1.10:1024", "198.51.100.8:53"), 0)
        .port();
    assert!(p >= 1024, "{p}");
}

#[test]
fn freed_port_not_reused_for_120s() {
    let mut h = Harness::new(&masq("port-restricted-cone"));
    assert_eq!(h.out_ok(udp(HOST, REMOTE), 0), sa("203.0.113.1:5000"));
    h.tick(30);
    assert_eq!(h.nat.counters().mappings, 0);
    // Another host with the same source port, within the delay: another port.
    assert_ne!(
        h.out_ok(udp("192.168.1.11:5000", REMOTE), 31),
        sa("203.0.113.1:5000")
    );
    h.tick(30 + 119);
    assert_ne!(
        h.out_ok(udp("192.168.1.12:5000", REMOTE), 30 + 119),
        sa("203.0.113.1:5000")
    );
    h.tick(30 + 120);
    assert_eq!(
        h.out_ok(udp("192.168.1.13:5000", REMOTE), 30 + 120),
        sa("203.0.113.1:5000")
    );
}

/// Checks a refusal: the ICMP type 3 code 13 reply to the sender quoting the packet.
fn assert_prohibited(v: &Verdict, original: &[u8], reason: DropReason) {
    let Verdict::Reply { reason: r, packet } = v else {
        panic!("expected a reply, got {v:?}");
    };
    assert_eq!(*r, reason);
    assert!(checksums_ok(packet));
    let ip = Ipv4HeaderSlice::from_slice(packet).expect("IPv4");
    assert_eq!(ip.destination(), original[12..16]);
    let icmp = Icmpv4Slice::from_slice(&packet[20..]).expect("ICMP");
    assert_eq!((icmp.type_u8(), icmp.code_u8()), (3, 13));
    assert_eq!(&packet[28..], original);
}

#[test]
fn exhausted_pool_replies_code_13_and_existing_flows_keep_working() {
    let mut h = Harness::new(&config(
        "host_port_quota = 0\n[[masquerade]]\npool = [\"203.0.113.1\", \"203.0.113.2\"]\npreset = \"symmetric\"\n",
    ));
    // 1023 well-known ports on each pool address: the second address takes over, then none.
    let mut seen = std::collections::HashSet::new();
    let mut first = None;
    for i in 0..2046u32 {
        let remote = format!("198.51.{}.{}:53", 100 + i / 250, i % 250 + 1);
        let ext = h.out_ok(udp("192.168.1.10:53", &remote), 0);
        assert!(ext.port() < 1024);
        assert!(seen.insert(ext));
        first.get_or_insert((remote, ext));
    }
    let addrs: std::collections::HashSet<_> = seen.iter().map(|e| *e.ip()).collect();
    assert_eq!(addrs.len(), 2);
    let refused = udp("192.168.1.10:53", "198.51.200.1:53");
    let (v, _) = h.out(refused.clone(), 1);
    assert_prohibited(&v, &refused, DropReason::PortsExhausted);
    let c = h.nat.counters();
    assert_eq!(
        (
            c.port_exhaustion_hits,
            c.dropped.ports_exhausted,
            c.icmp_replies_sent
        ),
        (1, 1, 1)
    );
    assert_eq!(
        h.nat.poll_event(),
        Some(NatEvent::LimitReached {
            reason: DropReason::PortsExhausted,
            host: ip("192.168.1.10")
        })
    );
    // The ephemeral range is not affected, and existing flows go on both ways.
    h.out_ok(udp("192.168.1.10:40000", "198.51.200.1:53"), 1);
    let (remote, ext) = first.expect("flows");
    assert_eq!(h.out_ok(udp("192.168.1.10:53", &remote), 2), ext);
    assert_eq!(h.inb(udp(&remote, &ext.to_string()), 2).0, Verdict::Forward);
}

#[test]
fn per_host_port_quota_rfc6888() {
    let mut h = Harness::new(&config(
        "host_port_quota = 3\n[[masquerade]]\npool = [\"203.0.113.1\"]\n",
    ));
    for port in 5000..5003 {
        h.out_ok(udp(&format!("192.168.1.10:{port}"), REMOTE), 0);
    }
    // More flows on an existing mapping are fine (endpoint-independent mapping).
    h.out_ok(udp("192.168.1.10:5000", "198.51.100.9:80"), 0);
    let refused = udp("192.168.1.10:5003", REMOTE);
    let (v, _) = h.out(refused.clone(), 0);
    assert_prohibited(&v, &refused, DropReason::HostQuota);
    assert_eq!(h.nat.counters().host_quota_hits, 1);
    // Other hosts have their own quota.
    h.out_ok(udp("192.168.1.11:5003", REMOTE), 0);
}

#[test]
fn session_limit_counts_and_refuses() {
    let mut h = Harness::new(&config(
        "session_limit = 2\n[[masquerade]]\npool = [\"203.0.113.1\"]\n",
    ));
    let ext = h.out_ok(udp(HOST, REMOTE), 0);
    h.out_ok(udp(HOST, "198.51.100.9:80"), 0);
    let refused = udp(HOST, "198.51.100.10:80");
    let (v, _) = h.out(refused.clone(), 0);
    assert_prohibited(&v, &refused, DropReason::SessionLimit);
    let c = h.nat.counters();
    assert_eq!(
        (c.session_limit_hits, c.dropped.session_limit, c.sessions),
        (1, 1, 2)
    );
    assert!(matches!(
        h.nat.poll_event(),
        Some(NatEvent::LimitReached {
            reason: DropReason::SessionLimit,
            ..
        })
    ));
    // Existing flows go on.
    assert_eq!(reply_udp(&mut h, ext, 1), Verdict::Forward);
}

#[test]
fn icmp_replies_are_rate_limited() {
    let mut h = Harness::new(&config(
        "session_limit = 1\nicmp_reply_rate = 2\n[[masquerade]]\npool = [\"203.0.113.1\"]\n",
    ));
    h.out_ok(udp(HOST, REMOTE), 0);
    let kinds: Vec<bool> = (0..4)
        .map(|i| {
            matches!(
                h.out(udp(HOST, &format!("198.51.100.{}:1", 20 + i)), 0).0,
                Verdict::Reply { .. }
            )
        })
        .collect();
    assert_eq!(kinds, [true, true, false, false]);
    assert!(matches!(
        h.out(udp(HOST, "198.51.100.30:1"), 1).0,
        Verdict::Reply { .. }
    ));
    assert_eq!(h.nat.counters().icmp_replies_rate_limited, 2);
}

const FORWARDS: &str = "[[masquerade]]\npool = [\"203.0.113.1\"]\n\
    [[forward]]\nproto = \"tcp\"\nexternal_port = 8443\nto = \"192.168.1.20:443\"\n\
    [[forward]]\nproto = \"udp\"\nexternal_port = 5353\nexternal_addr = \"203.0.113.9\"\nto = \"192.168.1.21\"\n";

#[test]
fn port_forward_tcp_and_udp() {
    let mut h = Harness::new(&config(FORWARDS));
    let client = "198.51.100.50:40000";
    let (v, p) = h.inb(tcp(SYN, client, "203.0.113.1:8443"), 0);
    assert_eq!(v, Verdict::Forward);
    assert_eq!(p, tcp(SYN, client, "192.168.1.20:443"));
    let (v, p) = h.out(tcp(SYNACK, "192.168.1.20:443", client), 0);
    assert_eq!(v, Verdict::Forward);
    assert_eq!(p, tcp(SYNACK, "203.0.113.1:8443", client));
    // UDP to a forward with its own address, port kept.
    let (v, p) = h.inb(udp(client, "203.0.113.9:5353"), 0);
    assert_eq!(v, Verdict::Forward);
    assert_eq!(p, udp(client, "192.168.1.21:5353"));
    let (_, p) = h.out(udp("192.168.1.21:5353", client), 0);
    assert_eq!(p, udp("203.0.113.9:5353", client));
    // Not the wrong protocol, address or port.
    assert_eq!(
        h.inb(udp(client, "203.0.113.1:8443"), 0).0,
        Verdict::Drop(DropReason::NoSession)
    );
    assert_eq!(
        h.inb(tcp(SYN, client, "203.0.113.1:8444"), 0).0,
        Verdict::Drop(DropReason::NoSession)
    );
    // Masquerading never hands out a forwarded port.
    assert_ne!(
        h.out_ok(tcp(SYN, "192.168.1.30:8443", client), 0),
        sa("203.0.113.1:8443")
    );
    let listed: Vec<_> = h.nat.sessions(h.at(0)).collect();
    assert_eq!(
        listed
            .iter()
            .filter(|s| s.kind == SessionKind::Forward)
            .count(),
        2
    );
}

#[test]
fn hairpin_rfc4787_req9() {
    let mut h = Harness::new(&config(FORWARDS));
    // Inside host A reaches the forwarded server B through the external address.
    let a = "192.168.1.10:6000";
    let (v, p) = h.out(tcp(SYN, a, "203.0.113.1:8443"), 0);
    assert_eq!(v, Verdict::Hairpin);
    assert!(checksums_ok(&p));
    let (src, dst) = ends(&p);
    assert_eq!(src, sa("203.0.113.1:6000"), "B sees A's external endpoint");
    assert_eq!(dst, sa("192.168.1.20:443"));
    // B answers A's external endpoint; it comes back to A from the forward's endpoint.
    let (v, p) = h.out(tcp(SYNACK, "192.168.1.20:443", "203.0.113.1:6000"), 0);
    assert_eq!(v, Verdict::Hairpin);
    assert_eq!(p, tcp(SYNACK, "203.0.113.1:8443", a));
    assert_eq!(h.nat.counters().hairpinned, 2);

    // Between two masqueraded hosts with a full-cone mapping.
    let mut h = Harness::new(&masq("full-cone"));
    let b_ext = h.out_ok(udp("192.168.1.20:7000", REMOTE), 0);
    let (v, p) = h.out(udp("192.168.1.10:6000", &b_ext.to_string()), 0);
    assert_eq!(v, Verdict::Hairpin);
    assert_eq!(p, udp("203.0.113.1:6000", "192.168.1.20:7000"));
}

#[test]
fn icmp_error_inbound_translates_the_quoted_packet_rfc5508() {
    let mut h = Harness::new(&masq("port-restricted-cone"));
    for original in [
        udp(HOST, REMOTE),
        tcp(SYN, HOST, "198.51.100.7:443"),
        build(
            Kind::EchoRequest,
            sa("192.168.1.10:99"),
            sa("198.51.100.7:0"),
            b"x",
        ),
    ] {
        let (v, sent) = h.out(original.clone(), 0);
        assert_eq!(v, Verdict::Forward);
        for quote in [sent.len(), 28] {
            let err = icmp_error(
                port_unreachable(),
                ip("198.51.100.1"),
                ip("203.0.113.1"),
                &sent[..quote],
            );
            let (v, p) = h.inb(err, 1);
            assert_eq!(v, Verdict::Forward);
            assert!(checksums_ok(&p), "{p:02x?}");
            assert_eq!(ends(&p).1.ip(), &ip("192.168.1.10"));
            // The quoted packet is the original again (only the first 28 bytes when cut; the
            // cut quote still has the transport checksum of UDP and ICMP updated).
            assert_eq!(&p[28..], &original[..quote]);
        }
    }
    assert_eq!(h.nat.counters().icmp_errors_translated, 6);
    // An error about no known flow is dropped.
    let stray = icmp_error(
        port_unreachable(),
        ip("198.51.100.1"),
        ip("203.0.113.1"),
        &udp("203.0.113.1:9", REMOTE),
    );
    assert_eq!(
        h.inb(stray, 1).0,
        Verdict::Drop(DropReason::IcmpErrorUnmatched)
    );
}

#[test]
fn icmp_error_outbound_translates_the_quoted_packet() {
    let mut h = Harness::new(&config(FORWARDS));
    let client = "198.51.100.50:40000";
    let (_, received) = h.inb(udp(client, "203.0.113.9:5353"), 0);
    // The server answers with port unreachable quoting what it received.
    let err = icmp_error(
        port_unreachable(),
        ip("192.168.1.21"),
        ip("198.51.100.50"),
        &received,
    );
    let (v, p) = h.out(err, 0);
    assert_eq!(v, Verdict::Forward);
    assert!(checksums_ok(&p));
    assert_eq!(ends(&p).0.ip(), &ip("203.0.113.9"));
    assert_eq!(&p[28..], &udp(client, "203.0.113.9:5353")[..]);
}

#[test]
fn netmap_both_ways_without_state() {
    let mut h = Harness::new(&config(
        "[[netmap]]\nreal = \"192.168.1.0/24\"\nmapped = \"10.10.1.0/24\"\n",
    ));
    let (v, p) = h.out(tcp(SYN, "192.168.1.5:1234", "10.20.0.1:80"), 0);
    assert_eq!(v, Verdict::Forward);
    assert_eq!(p, tcp(SYN, "10.10.1.5:1234", "10.20.0.1:80"));
    let (v, p) = h.inb(udp("10.20.0.1:53", "10.10.1.7:53"), 0);
    assert_eq!(v, Verdict::Forward);
    assert_eq!(p, udp("10.20.0.1:53", "192.168.1.7:53"));
    assert_eq!(h.nat.counters().sessions, 0);
    // Outside the prefixes: untouched.
    let other = udp("192.168.2.5:1", "10.20.0.1:53");
    assert_eq!(h.out(other.clone(), 0), (Verdict::Pass, other));
    // Fragments are translated too (addresses only).
    let mut frag = udp("192.168.1.5:1", "10.20.0.1:53");
    frag[6] = 0x20; // more fragments
    let c = full(&{
        let mut hdr = frag[..20].to_vec();
        hdr[10] = 0;
        hdr[11] = 0;
        hdr
    });
    frag[10..12].copy_from_slice(&c.to_be_bytes());
    let (v, p) = h.out(frag, 0);
    assert_eq!(v, Verdict::Forward);
    assert_eq!(&p[12..16], &[10, 10, 1, 5]);
    assert_eq!(full(&p[..20]), 0);
}

/// Each preset's mapping and filtering, probed from two outside hosts.
#[test]
fn presets_mapping_and_filtering_rfc4787() {
    // (preset, same external port for a second remote, let in: same host other port, other host)
    let cases = [
        ("full-cone", true, true, true),
        ("restricted-cone", true, true, false),
        ("port-restricted-cone", true, false, false),
        ("symmetric", false, false, false),
    ];
    for (preset, same_mapping, other_port_in, other_host_in) in cases {
        let mut h = Harness::new(&masq(preset));
        let ext = h.out_ok(udp(HOST, "198.51.100.1:1000"), 0);
        // Filtering, before the host sent anything to the second remote.
        let from = |s: &str| udp(s, &ext.to_string());
        assert_eq!(
            h.inb(from("198.51.100.1:1000"), 1).0,
            Verdict::Forward,
            "{preset}"
        );
        let v = h.inb(from("198.51.100.1:1001"), 1).0;
        assert_eq!(v == Verdict::Forward, other_port_in, "{preset}: {v:?}");
        let v = h.inb(from("198.51.100.2:2000"), 1).0;
        assert_eq!(v == Verdict::Forward, other_host_in, "{preset}: {v:?}");
        // Mapping: the second remote sees the same external endpoint or not.
        let ext2 = h.out_ok(udp(HOST, "198.51.100.2:2000"), 2);
        assert_eq!(ext2 == ext, same_mapping, "{preset}");
    }
}

#[test]
fn address_dependent_mapping() {
    let mut h = Harness::new(&config(
        "[[masquerade]]\npool = [\"203.0.113.1\"]\nmapping = \"address-dependent\"\nfiltering = \"address-dependent\"\n",
    ));
    let a = h.out_ok(udp(HOST, "198.51.100.1:1000"), 0);
    assert_eq!(h.out_ok(udp(HOST, "198.51.100.1:1001"), 0), a);
    assert_ne!(h.out_ok(udp(HOST, "198.51.100.2:1000"), 0), a);
}

#[test]
fn address_dependent_mapping_with_open_filter_keeps_flows_apart() {
    let mut h = Harness::new(&config(
        "[[masquerade]]\npool = [\"203.0.113.1\"]\nmapping = \"address-dependent\"\nfiltering = \"endpoint-independent\"\n",
    ));
    let a = h.out_ok(udp(HOST, "198.51.100.1:1000"), 0);
    let b = h.out_ok(udp(HOST, "198.51.100.2:1000"), 0);
    assert_ne!(a, b);
    // The second remote answers on its own mapping, not on the first one's port (the inside
    // endpoint already has that flow, through the other mapping).
    let from2 = |to: SocketAddrV4| udp("198.51.100.2:1000", &to.to_string());
    assert_eq!(
        h.inb(from2(b), 1),
        (Verdict::Forward, udp("198.51.100.2:1000", HOST))
    );
    assert_eq!(h.inb(from2(a), 1).0, Verdict::Drop(DropReason::Filtered));
    // Anyone else may use either (endpoint-independent filtering).
    assert_eq!(
        h.inb(udp("198.51.100.3:9", &a.to_string()), 1).0,
        Verdict::Forward
    );
}

#[test]
fn udp_zero_checksum_stays_zero() {
    let mut h = Harness::new(&masq("full-cone"));
    let mut p = udp(HOST, REMOTE);
    p[26] = 0;
    p[27] = 0;
    let (v, p) = h.out(p, 0);
    assert_eq!(v, Verdict::Forward);
    assert_eq!(&p[26..28], &[0, 0]);
    assert!(checksums_ok(&p));
}

#[test]
fn drops_and_passes() {
    let mut h = Harness::new(&config(
        "[[masquerade]]\nsource = [\"192.168.1.0/24\"]\npool = [\"203.0.113.1\"]\n",
    ));
    assert_eq!(
        h.out(vec![0x45, 0], 0).0,
        Verdict::Drop(DropReason::Malformed)
    );
    let mut v6 = vec![0u8; 40];
    v6[0] = 0x60;
    assert_eq!(h.out(v6, 0).0, Verdict::Pass);
    // Not covered by the rule: untouched.
    let other = udp("192.168.2.1:1", REMOTE);
    assert_eq!(h.out(other.clone(), 0), (Verdict::Pass, other));
    // GRE from a masqueraded host cannot be port-translated.
    let mut gre = udp(HOST, REMOTE);
    gre[9] = 47;
    gre[10] = 0;
    gre[11] = 0;
    let c = full(&gre[..20]);
    gre[10..12].copy_from_slice(&c.to_be_bytes());
    assert_eq!(
        h.out(gre, 0).0,
        Verdict::Drop(DropReason::UnsupportedProtocol(47))
    );
    // Unsolicited inbound to the external address.
    assert_eq!(
        h.inb(udp(REMOTE, "203.0.113.1:9999"), 0).0,
        Verdict::Drop(DropReason::NoSession)
    );
    // Inbound to an address that is not ours: untouched.
    assert_eq!(h.inb(udp(REMOTE, "203.0.113.77:9999"), 0).0, Verdict::Pass);
    let c = h.nat.counters();
    assert_eq!(c.dropped.malformed, 1);
    assert_eq!(c.dropped.unsupported_protocol, 1);
    assert_eq!(c.dropped.no_session, 1);
    assert_eq!(c.passed, 3);
}

#[test]
fn poll_timeout_and_listing() {
    let mut h = Harness::new(&masq("port-restricted-cone"));
    assert_eq!(h.nat.poll_timeout(), None);
    h.out_ok(tcp(SYN, HOST, "198.51.100.7:443"), 0);
    let at = h.nat.poll_timeout().expect("a sweep is due");
    h.nat.handle_timeout(at);
    assert!(h.nat.poll_timeout().expect("next sweep") > at);
    let list: Vec<_> = h.nat.sessions(h.at(10)).collect();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].state, "opening");
    assert_eq!(list[0].expires_in, 230);
    let json = serde_json::to_string(&list[0]).expect("serializes");
    assert!(json.contains("\"proto\":\"tcp\""), "{json}");
    assert!(json.contains("\"external\":\"203.0.113.1:5000\""), "{json}");
    let counters = serde_json::to_string(&h.nat.counters()).expect("serializes");
    assert!(counters.contains("\"sessions_created\":1"), "{counters}");
    // After expiry and the reuse delay, nothing is left to wait for.
    h.tick(240);
    h.tick(240 + 120);
    assert_eq!(h.nat.poll_timeout(), None);
}

#[test]
fn masquerade_destination_picks_the_pool() {
    let c = config(
        "[[masquerade]]\nsource = [\"10.77.100.0/24\"]\ndestination = [\"192.168.10.0/24\"]\npool = [\"192.168.10.1\"]\n\
         [[masquerade]]\nsource = [\"10.77.100.0/24\"]\npool = [\"198.51.100.1\"]\n",
    );
    let mut h = Harness::new(&c);
    let lan = h.out_ok(udp("10.77.100.50:5000", "192.168.10.10:53"), 0);
    assert_eq!(*lan.ip(), Ipv4Addr::new(192, 168, 10, 1));
    let wan = h.out_ok(udp("10.77.100.50:5001", "203.0.113.9:53"), 0);
    assert_eq!(*wan.ip(), Ipv4Addr::new(198, 51, 100, 1));
    // Other sources are not masqueraded.
    let (v, _) = h.out(udp("10.77.0.2:5000", "203.0.113.9:53"), 0);
    assert_eq!(v, Verdict::Pass);
}

#[test]
fn port_range_holds_every_mapping() {
    let mut c = masq("symmetric");
    c.port_range = Some(PortRange {
        lo: 61000,
        hi: 61001,
    });
    let mut h = Harness::new(&c);
    let a = h.out_ok(udp(HOST, "198.51.100.7:53"), 0);
    let b = h.out_ok(udp("192.168.1.10:53", "198.51.100.8:53"), 0);
    let mut ports = [a.port(), b.port()];
    ports.sort_unstable();
    assert_eq!(ports, [61000, 61001]);
    let (v, _) = h.out(udp(HOST, "198.51.100.9:53"), 0);
    assert!(
        matches!(
            v,
            Verdict::Reply {
                reason: DropReason::PortsExhausted,
                ..
            }
        ),
        "{v:?}"
    );
}
