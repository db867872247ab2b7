//! Writes the seed corpus under `corpus/<target>/` (run from `fuzz/`:
//! `cargo run --example gen_corpus`). Seeds are made with boringtun from the fixed keys in
//! `src/bodies.rs`, so they carry valid MACs for the fuzzed gateway. Ephemeral keys are random:
//! rerunning changes the binary seeds, so commit only when the set of seeds changes.

#[path = "../src/bodies.rs"]
mod bodies;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use boringtun::noise::rate_limiter::RateLimiter;
use boringtun::noise::{Tunn, TunnResult};
use boringtun::x25519::{PublicKey, StaticSecret};

use sitelink_core::nat::Nat;
use sitelink_core::stun::codec::{self, server, Change, TransactionId};

use bodies::{
    nat_config, nat_record, record, GATEWAY_KEY, NAT_SEED, OP_DATAGRAM_FROM_OTHER,
    OP_DATAGRAM_FROM_PEER, OP_TIMER, OP_TUN_PACKET, PEER_KEY, PSK,
};

fn main() -> std::io::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let datagram = root.join("datagram");
    let config = root.join("config");
    std::fs::create_dir_all(&datagram)?;
    std::fs::create_dir_all(&config)?;
    for (name, bytes) in datagram_seeds() {
        std::fs::write(datagram.join(name), bytes)?;
    }
    for (name, text) in config_seeds() {
        std::fs::write(config.join(name), text)?;
    }
    for (target, seeds) in [
        ("nat", nat_seeds()),
        ("stun", stun_seeds()),
        ("traversal", traversal_seeds()),
    ] {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir)?;
        for (name, bytes) in seeds {
            std::fs::write(dir.join(name), bytes)?;
        }
    }
    Ok(())
}

fn out(r: TunnResult<'_>) -> Vec<u8> {
    match r {
        TunnResult::WriteToNetwork(d) => d.to_vec(),
        other => panic!("expected a datagram, got {other:?}"),
    }
}

fn datagram_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let gw_secret = StaticSecret::from(GATEWAY_KEY);
    let gw_public = PublicKey::from(&gw_secret);
    let peer_secret = StaticSecret::from(PEER_KEY);
    let peer_public = PublicKey::from(&peer_secret);
    let mut buf = vec![0u8; 2048];

    // The peer initiates to the gateway.
    let mut peer = Tunn::new(peer_secret.clone(), gw_public, Some(PSK), None, 5, None);
    let init_known = out(peer.format_handshake_initiation(&mut buf, false));

    // Someone the gateway does not know.
    let mut stranger = Tunn::new(
        StaticSecret::from([0x44; 32]),
        gw_public,
        None,
        None,
        9,
        None,
    );
    let init_unknown = out(stranger.format_handshake_initiation(&mut buf, false));

    // The gateway (simulated by a Tunn with its key and peer index 0) initiates; the peer
    // answers. The response is addressed to the gateway's first session index.
    let mut gw_side = Tunn::new(gw_secret, peer_public, Some(PSK), None, 0, None);
    let mut peer_side = Tunn::new(peer_secret, gw_public, Some(PSK), None, 7, None);
    let gw_init = out(gw_side.format_handshake_initiation(&mut buf, false));
    let response = out(peer_side.decapsulate(None, &gw_init, &mut buf));

    // A cookie reply to the gateway's initiation, from an overloaded peer.
    let limiter = RateLimiter::new(&peer_public, 0);
    let peer_ip: IpAddr = "198.51.100.2".parse().expect("address");
    let mut cookie_buf = vec![0u8; 256];
    let cookie = match limiter.verify_packet(Some(peer_ip), &gw_init, &mut cookie_buf) {
        Err(TunnResult::WriteToNetwork(c)) => c.to_vec(),
        _ => panic!("no cookie reply from a limiter with limit 0"),
    };

    // Finish that handshake and send a data packet from the peer's LAN.
    let keepalive = out(gw_side.decapsulate(None, &response, &mut buf));
    let _ = peer_side.decapsulate(None, &keepalive, &mut buf);
    let inner = ipv4([192, 168, 20, 10], [192, 168, 10, 10]);
    let data = out(peer_side.encapsulate(&inner, &mut buf));

    let to_lan_b = ipv4([192, 168, 10, 10], [192, 168, 20, 10]);
    let to_nowhere = ipv4([192, 168, 10, 10], [172, 16, 0, 1]);
    let v6 = ipv6();

    let mut sequence = Vec::new();
    sequence.extend(record(OP_DATAGRAM_FROM_PEER, 0, &init_known));
    sequence.extend(record(OP_TUN_PACKET, 0, &to_lan_b));
    sequence.extend(record(OP_TIMER, 50, &[]));
    sequence.extend(record(OP_DATAGRAM_FROM_OTHER, 3, &init_known));
    sequence.extend(record(OP_TUN_PACKET, 0, &v6));
    sequence.extend(record(OP_DATAGRAM_FROM_PEER, 0, &data));
    sequence.extend(record(OP_TIMER, 63, &[]));

    let mut from_others = Vec::new();
    from_others.extend(record(OP_DATAGRAM_FROM_OTHER, 1, &init_unknown));
    from_others.extend(record(OP_DATAGRAM_FROM_OTHER, 2, &cookie));
    from_others.extend(record(OP_DATAGRAM_FROM_OTHER, 2, &response));
    from_others.extend(record(OP_TUN_PACKET, 0, &to_nowhere));

    vec![
        ("init-known.bin", init_known),
        ("init-unknown.bin", init_unknown),
        ("response.bin", response),
        ("cookie-reply.bin", cookie),
        ("data.bin", data),
        ("tun-ipv4.bin", to_lan_b),
        ("tun-ipv6.bin", v6),
        ("short.bin", vec![4, 0, 0, 0, 1]),
        ("records-handshake-traffic.bin", sequence),
        ("records-others.bin", from_others),
    ]
}

/// A 28-byte IPv4/UDP packet (checksums zero; nothing on this path checks them).
fn ipv4(src: [u8; 4], dst: [u8; 4]) -> Vec<u8> {
    let mut p = vec![0u8; 28];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&28u16.to_be_bytes());
    p[8] = 64;
    p[9] = 17;
    p[12..16].copy_from_slice(&src);
    p[16..20].copy_from_slice(&dst);
    p[20..22].copy_from_slice(&5000u16.to_be_bytes());
    p[22..24].copy_from_slice(&5001u16.to_be_bytes());
    p[24..26].copy_from_slice(&8u16.to_be_bytes());
    p
}

/// A 48-byte IPv6/UDP packet to 2001:db8::2.
fn ipv6() -> Vec<u8> {
    let mut p = vec![0u8; 48];
    p[0] = 0x60;
    p[4..6].copy_from_slice(&8u16.to_be_bytes());
    p[6] = 17;
    p[7] = 64;
    p[8..10].copy_from_slice(&[0x20, 0x01]);
    p[10..12].copy_from_slice(&[0x0d, 0xb8]);
    p[23] = 1;
    p[24..26].copy_from_slice(&[0x20, 0x01]);
    p[26..28].copy_from_slice(&[0x0d, 0xb8]);
    p[39] = 2;
    p
}

fn config_seeds() -> Vec<(&'static str, String)> {
    let peer = |k: u8| {
        sitelink_core::keys::PrivateKey::from_bytes([k; 32])
            .public_key()
            .to_base64()
    };
    let full = format!(
        r#"# A config using every key.
[interface]
name = "sl0"
private_key_file = "fuzz.key"
listen_port = 51820
address = ["10.77.0.1/24", "fd00:77::1/64"]
mtu = 1420

[[peer]]
name = "office-b"
public_key = "{b}"
preshared_key_file = "fuzz.psk"
endpoint = "198.51.100.2:51820"
allowed_ips = ["10.77.0.2/32", "192.168.20.0/24"]
persistent_keepalive = 25

[[peer]]
name = "office-c"
public_key = "{c}"
endpoint = "[2001:db8::3]:51820"
allowed_ips = ["10.77.0.3/32", "fd00:30::/48"]
"#,
        b = peer(0x22),
        c = peer(0x55),
    );
    let minimal = "[interface]\nname = \"sl0\"\nprivate_key_file = \"fuzz.key\"\n\
                   listen_port = 51820\naddress = [\"10.77.0.1/24\"]\n"
        .to_owned();
    let errors = format!(
        r#"[interface]
name = "sl0"
private_key_file = "fuzz.key"
listen_port = 51820
address = ["10.77.0.1/24"]

[[peer]]
name = "office-b"
public_key = "{b}"
allowed_ips = ["192.168.20.0/33"]
unknown_key = true
"#,
        b = peer(0x22),
    );
    vec![
        ("full.toml", full),
        ("minimal.toml", minimal),
        ("errors.toml", errors),
    ]
}

/// The ones' complement sum of `data`, folded and inverted (the Internet checksum).
fn checksum(parts: &[&[u8]]) -> u16 {
    let mut sum = 0u32;
    for part in parts {
        for pair in part.chunks(2) {
            let word = u16::from_be_bytes([pair[0], pair.get(1).copied().unwrap_or(0)]);
            sum += u32::from(word);
        }
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An IPv4 packet around `l4`, with a valid header checksum and, for TCP and UDP, a valid
/// transport checksum (its field at `l4[csum..csum + 2]`).
fn ip4(proto: u8, src: [u8; 4], dst: [u8; 4], mut l4: Vec<u8>) -> Vec<u8> {
    let csum_at = match proto {
        6 => Some(16),
        17 => Some(6),
        _ => None,
    };
    if let Some(at) = csum_at {
        let len = (l4.len() as u16).to_be_bytes();
        let pseudo = [&src[..], &dst[..], &[0, proto], &len[..]].concat();
        let c = checksum(&[&pseudo, &l4]);
        l4[at..at + 2].copy_from_slice(&c.to_be_bytes());
    }
    let mut p = vec![0u8; 20];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&((20 + l4.len()) as u16).to_be_bytes());
    p[8] = 64;
    p[9] = proto;
    p[12..16].copy_from_slice(&src);
    p[16..20].copy_from_slice(&dst);
    let c = checksum(&[&p]);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p.extend(l4);
    p
}

fn udp4(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut l4 = Vec::with_capacity(8 + payload.len());
    l4.extend_from_slice(&sport.to_be_bytes());
    l4.extend_from_slice(&dport.to_be_bytes());
    l4.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    l4.extend_from_slice(&[0, 0]);
    l4.extend_from_slice(payload);
    ip4(17, src, dst, l4)
}

const SYN: u8 = 0x02;
const ACK: u8 = 0x10;
const FIN: u8 = 0x01;
const RST: u8 = 0x04;

fn tcp4(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, flags: u8) -> Vec<u8> {
    let mut l4 = vec![0u8; 20];
    l4[0..2].copy_from_slice(&sport.to_be_bytes());
    l4[2..4].copy_from_slice(&dport.to_be_bytes());
    l4[4..8].copy_from_slice(&1000u32.to_be_bytes());
    l4[12] = 5 << 4;
    l4[13] = flags;
    l4[14..16].copy_from_slice(&65535u16.to_be_bytes());
    ip4(6, src, dst, l4)
}

/// An ICMP echo request (type 8) or reply (type 0).
fn echo4(src: [u8; 4], dst: [u8; 4], kind: u8, id: u16, seq: u16) -> Vec<u8> {
    let mut l4 = vec![kind, 0, 0, 0];
    l4.extend_from_slice(&id.to_be_bytes());
    l4.extend_from_slice(&seq.to_be_bytes());
    l4.extend_from_slice(b"sitelink");
    let c = checksum(&[&l4]);
    l4[2..4].copy_from_slice(&c.to_be_bytes());
    ip4(1, src, dst, l4)
}

/// An ICMP error (`kind`/`code`) from `src` to `dst` quoting the first 28 bytes of `quoted`.
fn icmp_error4(src: [u8; 4], dst: [u8; 4], kind: u8, code: u8, quoted: &[u8]) -> Vec<u8> {
    let mut l4 = vec![kind, code, 0, 0, 0, 0, 0, 0];
    l4.extend_from_slice(&quoted[..quoted.len().min(28)]);
    let c = checksum(&[&l4]);
    l4[2..4].copy_from_slice(&c.to_be_bytes());
    ip4(1, src, dst, l4)
}

/// The source address and port (or ICMP id) of a packet.
fn source_of(p: &[u8]) -> ([u8; 4], u16) {
    let ihl = usize::from(p[0] & 0x0f) * 4;
    let at = if p[9] == 1 { ihl + 4 } else { ihl };
    (
        [p[12], p[13], p[14], p[15]],
        u16::from_be_bytes([p[at], p[at + 1]]),
    )
}

/// A `nat` seed being written, run through an engine made like the fuzzed one (same config,
/// seed and clock steps) so later records can answer what earlier ones got translated to.
struct NatSeed {
    nat: Nat,
    now: Instant,
    bytes: Vec<u8>,
}

impl NatSeed {
    fn new() -> Self {
        let now = Instant::now();
        Self {
            nat: Nat::new(&nat_config(), NAT_SEED, now).expect("the target's config"),
            now,
            bytes: Vec::new(),
        }
    }

    /// Appends a record and returns the packet as the engine left it.
    fn push(&mut self, inbound: bool, advance: u8, packet: &[u8]) -> Vec<u8> {
        self.bytes.extend(nat_record(inbound, advance, packet));
        self.now += Duration::from_secs(u64::from(advance.min(127)));
        if self.nat.poll_timeout().is_some_and(|t| t <= self.now) {
            self.nat.handle_timeout(self.now);
        }
        let mut p = packet.to_vec();
        let _ = if inbound {
            self.nat.translate_inbound(&mut p, self.now)
        } else {
            self.nat.translate_outbound(&mut p, self.now)
        };
        p
    }

    /// Appends an outbound record the engine must masquerade; returns the external endpoint.
    fn out_new(&mut self, packet: &[u8]) -> ([u8; 4], u16) {
        let p = self.push(false, 0, packet);
        assert_ne!(p, packet, "the seed flow is masqueraded");
        source_of(&p)
    }
}

/// Seeds of the `nat` target.
fn nat_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let host = [192, 168, 1, 10];
    let remote = [198, 51, 100, 200];

    // UDP: out, the answer in, more out; then a packet from another remote port (filtered).
    let mut udp = NatSeed::new();
    let udp_out = udp4(host, 5000, remote, 53, b"query");
    let (ext, ext_port) = udp.out_new(&udp_out);
    let udp_in = udp4(remote, 53, ext, ext_port, b"answer");
    udp.push(true, 1, &udp_in);
    udp.push(false, 1, &udp4(host, 5000, remote, 53, b"again"));
    udp.push(true, 0, &udp4(remote, 54, ext, ext_port, b"x"));
    // An hour later the session is gone: the answer finds nothing.
    for _ in 0..30 {
        udp.push(false, 127, &[]);
    }
    udp.push(true, 0, &udp_in);

    // TCP: handshake, FIN both ways; then a RST on a second connection and a new SYN.
    let tcp_host = [192, 168, 2, 20];
    let mut tcp = NatSeed::new();
    let (text, tport) = tcp.out_new(&tcp4(tcp_host, 40100, remote, 443, SYN));
    tcp.push(true, 0, &tcp4(remote, 443, text, tport, SYN | ACK));
    tcp.push(false, 0, &tcp4(tcp_host, 40100, remote, 443, ACK));
    tcp.push(false, 5, &tcp4(tcp_host, 40100, remote, 443, FIN | ACK));
    tcp.push(true, 0, &tcp4(remote, 443, text, tport, FIN | ACK));
    tcp.push(false, 0, &tcp4(tcp_host, 40100, remote, 443, ACK));
    let (text2, tport2) = tcp.out_new(&tcp4(tcp_host, 40101, remote, 443, SYN));
    tcp.push(true, 0, &tcp4(remote, 443, text2, tport2, RST | ACK));
    tcp.push(false, 0, &tcp4(tcp_host, 40101, remote, 443, SYN));

    // ICMP: echo out and the reply in; an error in about a UDP flow, quoting what went out,
    // and an error out about what came in; an error about nothing the NAT knows.
    let icmp_host = [192, 168, 3, 30];
    let mut icmp = NatSeed::new();
    let (iext, iid) = icmp.out_new(&echo4(icmp_host, remote, 8, 0x1234, 1));
    icmp.push(true, 0, &echo4(remote, iext, 0, iid, 1));
    let sent = icmp.push(false, 0, &udp4(icmp_host, 6000, remote, 9999, b"probe"));
    let (uext, uport) = source_of(&sent);
    icmp.push(true, 0, &icmp_error4([203, 0, 113, 77], uext, 3, 3, &sent));
    let answer = icmp.push(true, 0, &udp4(remote, 9999, uext, uport, b"back"));
    icmp.push(false, 0, &icmp_error4(icmp_host, remote, 3, 3, &answer));
    icmp.push(
        true,
        0,
        &icmp_error4(remote, [203, 0, 113, 1], 11, 0, &udp_out),
    );

    // The forward (UDP 53 on every pool address to 192.168.1.53) and its answer; a hairpin
    // from an inside host to the forward through a pool address.
    let client = [198, 51, 100, 7];
    let mut forward = NatSeed::new();
    forward.push(true, 0, &udp4(client, 3333, [203, 0, 113, 2], 53, b"q"));
    forward.push(false, 0, &udp4([192, 168, 1, 53], 53, client, 3333, b"a"));
    forward.push(true, 0, &udp4(client, 3333, [198, 51, 100, 9], 53, b"q"));
    forward.push(
        false,
        0,
        &udp4([192, 168, 4, 40], 7000, [203, 0, 113, 1], 53, b"h"),
    );

    // The netmap both ways.
    let mut netmap = NatSeed::new();
    netmap.push(false, 0, &udp4([10, 1, 2, 3], 1000, remote, 2000, b"n"));
    netmap.push(true, 0, &udp4(remote, 2000, [10, 2, 2, 3], 1000, b"n"));
    netmap.push(false, 0, &tcp4([10, 1, 0, 9], 22, remote, 50000, ACK));
    netmap.push(true, 0, &echo4(remote, [10, 2, 0, 9], 8, 7, 7));

    // One host past its port quota (8), then the pool's 3 x 16 ports and the session limit
    // (64): refusals with ICMP 3/13.
    let mut exhaustion = NatSeed::new();
    for i in 0..12 {
        exhaustion.push(
            false,
            0,
            &udp4([192, 168, 5, 50], 20000 + i, remote, 53, b""),
        );
    }
    for i in 0..70u8 {
        exhaustion.push(false, 0, &udp4([192, 168, 6, i], 20000, remote, 53, b""));
    }

    // Not translatable: IPv6, a fragment, another protocol, truncated headers.
    let mut fragment = udp4(host, 5000, remote, 53, b"fragment");
    fragment[6] = 0x20; // more fragments
    fragment[10..12].copy_from_slice(&[0, 0]);
    let c = checksum(&[&fragment[..20]]);
    fragment[10..12].copy_from_slice(&c.to_be_bytes());
    let gre = ip4(47, host, remote, vec![0; 8]);
    let mut odd = NatSeed::new();
    odd.push(false, 0, &ipv6());
    odd.push(false, 0, &fragment);
    odd.push(true, 0, &gre);
    odd.push(false, 0, &gre);
    odd.push(false, 0, &udp_out[..24]);
    odd.push(true, 0, &[0x45, 0, 0]);

    vec![
        ("udp-flow.bin", udp.bytes),
        ("tcp-flow.bin", tcp.bytes),
        ("icmp.bin", icmp.bytes),
        ("forward-hairpin.bin", forward.bytes),
        ("netmap.bin", netmap.bytes),
        ("exhaustion.bin", exhaustion.bytes),
        ("odd.bin", odd.bytes),
    ]
}

/// Seeds of the `stun` target: responses to the client's transaction (whose ID is the input's
/// bytes 8..20), a request, a response with a bad cookie, WireGuard-looking bytes.
fn stun_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let id = TransactionId(*b"sitelinkseed");
    let mapped: SocketAddr = "203.0.113.2:40000".parse().expect("address");
    let other = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 11)), 3479);
    let success = server::success(id, mapped, None);
    let mut bad_cookie = success.clone();
    bad_cookie[4] ^= 0xff;
    vec![
        ("success.bin", success),
        (
            "success-other-address.bin",
            server::success(id, mapped, Some(other)),
        ),
        ("error.bin", server::error(id, 420, "Unknown Attribute")),
        ("request.bin", codec::encode_request(id, Change::NONE)),
        (
            "request-change.bin",
            codec::encode_request(
                id,
                Change {
                    ip: true,
                    port: true,
                },
            ),
        ),
        ("bad-cookie.bin", bad_cookie),
        ("wireguard.bin", vec![1, 0, 0, 0, 0x11, 0x22, 0x33, 0x44]),
    ]
}

/// Seeds of the `traversal` target: one body of each packet type in sealed mode (peer B named
/// where a body names a peer; the harness seals them), and a raw packet that has a header but
/// no valid tag.
fn traversal_seeds() -> Vec<(&'static str, Vec<u8>)> {
    use bodies::{TRAVERSAL_B_KEY, TRAVERSAL_RAW, TRAVERSAL_SEALED};
    use sitelink_core::control::message::{Candidate, CandidateKind};
    use sitelink_core::keys::PrivateKey;
    use sitelink_core::traversal::packet::{self, Body};

    let b = PrivateKey::from_bytes(TRAVERSAL_B_KEY).public_key();
    let candidate = |kind, addr: &str| Candidate {
        kind,
        addr: addr.parse().expect("address"),
    };
    let wireguard = [&[4u8, 0, 0, 0][..], &[0x5a; 28]].concat();
    let sealed = |body: Body| {
        let mut input = vec![TRAVERSAL_SEALED, body.type_code()];
        body.encode(&mut input);
        input
    };
    let mut raw = vec![TRAVERSAL_RAW, packet::TYPE_PROBE, packet::VERSION];
    raw.resize(1 + packet::OVERHEAD, 0);
    vec![
        ("raw-header-only.bin", raw),
        (
            "sealed-probe.bin",
            sealed(Body::Probe {
                txid: 0x0102_0304_0506_0708,
            }),
        ),
        ("sealed-probe-ack.bin", sealed(Body::ProbeAck { txid: 42 })),
        (
            "sealed-register.bin",
            sealed(Body::Register {
                peer: b,
                candidates: vec![
                    candidate(CandidateKind::Reflexive, "198.51.100.21:40021"),
                    candidate(CandidateKind::Host, "192.168.1.10:51820"),
                ],
            }),
        ),
        (
            "sealed-peer-candidates.bin",
            sealed(Body::PeerCandidates {
                peer: b,
                candidates: vec![candidate(CandidateKind::Reflexive, "198.51.100.22:40022")],
            }),
        ),
        (
            "sealed-relay-to.bin",
            sealed(Body::RelayTo {
                peer: b,
                datagram: &wireguard,
            }),
        ),
        (
            "sealed-relay-from.bin",
            sealed(Body::RelayFrom {
                peer: b,
                datagram: &wireguard,
            }),
        ),
    ]
}
