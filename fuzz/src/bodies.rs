//! The bodies of the fuzz targets.
//!
//! Included with `#[path]` by each target in `fuzz_targets/` and by the root package's
//! `tests/fuzz_corpus.rs`, which replays the committed corpus under plain `cargo test`; so it
//! uses only crates both have (`sitelink-core`, `boringtun`, `rand_core`) and nothing here is
//! `pub`.
//!
//! The keys are fixed so the committed seeds (made by `examples/gen_corpus.rs`) stay valid: a
//! seed initiation from [`PEER_KEY`] passes mac1 and reaches the handshake code.

#![allow(dead_code, reason = "each includer uses a different part")]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use boringtun::noise::Tunn;
use sitelink_core::config::GatewayConfig;
use sitelink_core::gateway::{Gateway, Sink};
use sitelink_core::keys::{write_secret_file, PresharedKey, PrivateKey};
use sitelink_core::nat::{
    Dependency, ForwardProto, MasqueradeRule, Nat, NatConfig, NetmapRule, PortForward, PortRange,
    Preset, Verdict,
};
use sitelink_core::peer::PeerSpec;
use sitelink_core::stun::client::{Input, StunClient};
use sitelink_core::stun::codec::{self, Change, Message, TransactionId};
use sitelink_core::stun::RetransmitPolicy;

/// The gateway's private key.
pub(crate) const GATEWAY_KEY: [u8; 32] = [0x11; 32];
/// The one peer's private key (the gateway knows its public key).
pub(crate) const PEER_KEY: [u8; 32] = [0x22; 32];
/// The pre-shared key between them.
pub(crate) const PSK: [u8; 32] = [0x33; 32];
/// The peer's configured endpoint.
pub(crate) const PEER_ENDPOINT: SocketAddr =
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 2)), 51820);
/// Other senders a record can come from: `OTHER_BASE` port + 0..64.
pub(crate) const OTHER_BASE: SocketAddr =
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 66)), 40000);
/// The peer's allowed IPs: 10.77.0.2/32 and 192.168.20.0/24.
const PEER_TUNNEL_ADDR: [u8; 4] = [10, 77, 0, 2];
const PEER_LAN: [u8; 3] = [192, 168, 20];

/// Record opcodes (low two bits of a record's first byte); the upper six bits are an argument.
pub(crate) const OP_DATAGRAM_FROM_PEER: u8 = 0;
pub(crate) const OP_DATAGRAM_FROM_OTHER: u8 = 1;
pub(crate) const OP_TUN_PACKET: u8 = 2;
pub(crate) const OP_TIMER: u8 = 3;

/// Encodes one record of the `datagram` input format.
pub(crate) fn record(op: u8, arg: u8, body: &[u8]) -> Vec<u8> {
    let len = u16::try_from(body.len()).unwrap_or(u16::MAX);
    let mut r = vec![(arg << 2) | (op & 3)];
    r.extend_from_slice(&len.to_le_bytes());
    r.extend_from_slice(&body[..usize::from(len)]);
    r
}

/// A gateway with one peer ("office-b": [`PEER_KEY`], [`PSK`], [`PEER_ENDPOINT`], keepalive).
pub(crate) fn one_peer_gateway(now: Instant) -> Gateway {
    let mut gw = Gateway::new(PrivateKey::from_bytes(GATEWAY_KEY), now);
    let spec = PeerSpec {
        name: "office-b".to_owned(),
        public_key: PrivateKey::from_bytes(PEER_KEY).public_key(),
        preshared_key: Some(PresharedKey::from_bytes(PSK)),
        endpoint: Some(PEER_ENDPOINT),
        allowed_ips: vec![
            "10.77.0.2/32".parse().expect("valid prefix"),
            "192.168.20.0/24".parse().expect("valid prefix"),
        ],
        persistent_keepalive: Some(25),
    };
    gw.add_peer(spec).expect("the first peer is accepted");
    gw
}

/// Feeds `data` to a fresh [`one_peer_gateway`]:
///
/// 1. the whole input as one datagram from the peer's endpoint, then as one TUN packet;
/// 2. the input as records `op: u8, len: u16 (LE), body: [u8; len]` (a short last body is
///    taken as is): `op & 3` is [`OP_DATAGRAM_FROM_PEER`], [`OP_DATAGRAM_FROM_OTHER`] (from
///    `OTHER_BASE` port + `op >> 2`), [`OP_TUN_PACKET`], or [`OP_TIMER`] (the clock moves
///    `(op >> 2) * 100 ms` and timers run).
///
/// Checks, besides not panicking: every datagram sent is a well-formed WireGuard message and
/// goes to the peer's endpoint or to an address a datagram came from; every packet written to
/// the TUN device comes from the peer's allowed IPs.
pub(crate) fn datagram(data: &[u8]) -> Outcome {
    let mut now = Instant::now();
    let mut gw = one_peer_gateway(now);
    let mut sink = CheckSink {
        heard_from: vec![PEER_ENDPOINT],
        outcome: Outcome::default(),
    };

    gw.handle_datagram(PEER_ENDPOINT, data, now, &mut sink);
    gw.handle_tun_packet(data, now, &mut sink);

    let mut rest = data;
    while let [op, lo, hi, tail @ ..] = rest {
        let len = usize::from(u16::from_le_bytes([*lo, *hi])).min(tail.len());
        let (body, tail) = tail.split_at(len);
        rest = tail;
        let arg = op >> 2;
        match op & 3 {
            OP_DATAGRAM_FROM_PEER => gw.handle_datagram(PEER_ENDPOINT, body, now, &mut sink),
            OP_DATAGRAM_FROM_OTHER => {
                let src = SocketAddr::new(OTHER_BASE.ip(), OTHER_BASE.port() + u16::from(arg));
                if !sink.heard_from.contains(&src) {
                    sink.heard_from.push(src);
                }
                gw.handle_datagram(src, body, now, &mut sink);
            }
            OP_TUN_PACKET => gw.handle_tun_packet(body, now, &mut sink),
            _ => {
                now += Duration::from_millis(100) * u32::from(arg);
                gw.handle_timeout(now, &mut sink);
            }
        }
    }
    let _ = gw.status();
    sink.outcome
}

/// What the gateway emitted for one input.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Outcome {
    /// Datagrams sent.
    pub(crate) sent: usize,
    /// Packets written to the TUN device.
    pub(crate) written: usize,
}

/// A [`Sink`] that checks what the gateway emits.
struct CheckSink {
    heard_from: Vec<SocketAddr>,
    outcome: Outcome,
}

impl Sink for CheckSink {
    fn send_to(&mut self, dst: SocketAddr, datagram: &[u8]) {
        self.outcome.sent += 1;
        assert!(
            self.heard_from.contains(&dst),
            "datagram sent to {dst}, which is neither the endpoint nor a sender"
        );
        assert!(
            Tunn::parse_incoming_packet(datagram).is_ok(),
            "malformed datagram sent to {dst}: {datagram:02x?}"
        );
    }

    fn write_tun(&mut self, packet: &[u8]) {
        self.outcome.written += 1;
        let allowed = match packet.first().map(|b| b >> 4) {
            Some(4) if packet.len() >= 20 => {
                packet[12..16] == PEER_TUNNEL_ADDR || packet[12..15] == PEER_LAN
            }
            _ => false,
        };
        assert!(
            allowed,
            "packet written to the TUN device from outside the peer's allowed IPs: {packet:02x?}"
        );
    }
}

/// The key files the seed configs name, written into `dir` (mode 0600).
pub(crate) fn write_key_files(dir: &Path) -> Result<(), sitelink_core::keys::KeyError> {
    write_secret_file(
        &dir.join("fuzz.key"),
        &format!("{}\n", PrivateKey::from_bytes(GATEWAY_KEY).to_base64()),
    )?;
    write_secret_file(
        &dir.join("fuzz.psk"),
        &format!("{}\n", PresharedKey::from_bytes(PSK).to_base64()),
    )
}

/// Parses `data` (if UTF-8) as a config file at `dir/fuzz.toml` and renders any error.
pub(crate) fn config(data: &[u8], dir: &Path) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match GatewayConfig::parse(text, &dir.join("fuzz.toml")) {
        Ok(config) => {
            let _ = format!("{config:?}");
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
}

/// The `nat` target's first engine: masquerade of 192.168.0.0/16 (port-restricted cone) onto
/// 203.0.113.1-2 and 198.51.100.9, ports 40000-40015; UDP 53 on every pool address forwarded
/// to 192.168.1.53; 10.1.0.0/16 netmapped to 10.2.0.0/16; 64 sessions, 8 ports per host.
pub(crate) fn nat_config() -> NatConfig {
    nat_config_with(Some(Preset::PortRestrictedCone), None)
}

/// A masquerade rule's behaviour: a preset, or mapping and filtering.
pub(crate) type NatBehaviour = (Option<Preset>, Option<(Dependency, Dependency)>);

/// The behaviours the `nat` target runs each input under: the four presets, and
/// address-dependent mapping with endpoint-independent filtering (no preset has it).
pub(crate) const NAT_BEHAVIOURS: [NatBehaviour; 5] = [
    (Some(Preset::PortRestrictedCone), None),
    (Some(Preset::FullCone), None),
    (Some(Preset::RestrictedCone), None),
    (Some(Preset::Symmetric), None),
    (
        None,
        Some((
            Dependency::AddressDependent,
            Dependency::EndpointIndependent,
        )),
    ),
];

/// [`nat_config`] with another mapping and filtering behaviour.
pub(crate) fn nat_config_with(
    preset: Option<Preset>,
    behaviour: Option<(Dependency, Dependency)>,
) -> NatConfig {
    NatConfig {
        netmap: vec![NetmapRule {
            real: "10.1.0.0/16".parse().expect("prefix"),
            mapped: "10.2.0.0/16".parse().expect("prefix"),
        }],
        masquerade: vec![MasqueradeRule {
            source: vec!["192.168.0.0/16".parse().expect("prefix")],
            destination: Vec::new(),
            pool: vec![
                "203.0.113.0/30".parse().expect("prefix"),
                "198.51.100.9".parse().expect("address"),
            ],
            preset,
            mapping: behaviour.map(|b| b.0),
            filtering: behaviour.map(|b| b.1),
        }],
        forward: vec![PortForward {
            proto: ForwardProto::Udp,
            external_port: 53,
            external_addr: None,
            to: "192.168.1.53".parse().expect("target"),
            source: None,
        }],
        port_range: Some(PortRange {
            lo: 40000,
            hi: 40015,
        }),
        session_limit: 64,
        host_port_quota: 8,
        ..NatConfig::default()
    }
}

/// The seed the `nat` target's engine is made with (its port choices follow from it).
pub(crate) const NAT_SEED: u64 = 1;

/// Encodes one record of the `nat` input format: inbound or not, seconds to advance first
/// (0-127), the packet (at most 255 bytes).
pub(crate) fn nat_record(inbound: bool, advance: u8, packet: &[u8]) -> Vec<u8> {
    let n = packet.len().min(255);
    let mut r = vec![(advance.min(127) << 1) | u8::from(inbound), n as u8];
    r.extend_from_slice(&packet[..n]);
    r
}

/// What one `nat` input did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NatOutcome {
    /// Packets translated (or hairpinned).
    pub(crate) translated: usize,
    /// Packets passed unchanged.
    pub(crate) passed: usize,
    /// ICMP errors the engine answered with.
    pub(crate) replies: usize,
    /// Sessions live at the end.
    pub(crate) sessions: usize,
}

/// Packets through the NAT engine, both ways, on a clock that moves, under each of
/// [`NAT_BEHAVIOURS`] in turn. Must not panic, and every packet it sends back (ICMP errors)
/// must parse as IPv4. Returns what the first engine ([`nat_config`], port-restricted cone)
/// did.
///
/// Input: records of `[control, len, len bytes of packet]`. Control bit 0: inbound (else
/// outbound); bits 1-7: seconds to advance the clock first.
pub(crate) fn nat(data: &[u8]) -> NatOutcome {
    let mut first = None;
    for (preset, behaviour) in NAT_BEHAVIOURS {
        let out = nat_with(&nat_config_with(preset, behaviour), data);
        first.get_or_insert(out);
    }
    first.unwrap_or_default()
}

fn nat_with(config: &NatConfig, data: &[u8]) -> NatOutcome {
    let t0 = Instant::now();
    let mut out = NatOutcome::default();
    let Ok(mut nat) = Nat::new(config, NAT_SEED, t0) else {
        return out;
    };
    let mut now = t0;
    let mut rest = data;
    while let [control, len, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        let mut packet = tail[..n].to_vec();
        rest = &tail[n..];
        now += Duration::from_secs(u64::from(control >> 1));
        if nat.poll_timeout().is_some_and(|t| t <= now) {
            nat.handle_timeout(now);
        }
        let verdict = if control & 1 == 1 {
            nat.translate_inbound(&mut packet, now)
        } else {
            nat.translate_outbound(&mut packet, now)
        };
        match verdict {
            Verdict::Forward | Verdict::Hairpin => out.translated += 1,
            Verdict::Pass => out.passed += 1,
            Verdict::Reply { packet, .. } => {
                assert!(
                    packet.len() >= 20 && packet[0] >> 4 == 4,
                    "reply is not IPv4"
                );
                out.replies += 1;
            }
            Verdict::Drop(_) => {}
        }
        while nat.poll_event().is_some() {}
    }
    out.sessions = nat.sessions(now).count();
    let _ = nat.counters();
    out
}

/// Hands out a fixed transaction ID (the `stun` input's bytes 8..20) as the "random" one.
struct FixedId([u8; 12]);

impl rand_core::RngCore for FixedId {
    fn next_u32(&mut self) -> u32 {
        0
    }
    fn next_u64(&mut self) -> u64 {
        0
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        for (d, s) in dest.iter_mut().zip(self.0.iter().cycle()) {
            *d = *s;
        }
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

/// Not random at all: the traversal agent asks for a `CryptoRng` for its nonces, and the
/// harness wants runs it can repeat.
impl rand_core::CryptoRng for FixedId {}

/// The STUN server the `stun` target's client asks.
pub(crate) const STUN_SERVER: SocketAddr =
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 10)), 3478);

/// Bytes into the STUN client's receive path: the quick `is_stun` test, the `stun-rs` decoder
/// behind `codec::decode`, and a `StunClient` with an outstanding transaction whose ID the input
/// carries (so responses reach the matching code). Must not panic; whatever decodes passed
/// `is_stun`, and a decoded message keeps the transaction ID of its header. Returns what the
/// client made of it.
pub(crate) fn stun(data: &[u8]) -> Input {
    let decoded = codec::decode(data);
    if let Ok(Message::Success { id, .. } | Message::Error { id, .. } | Message::Request { id }) =
        &decoded
    {
        assert!(codec::is_stun(data));
        assert_eq!(&id.0[..], &data[8..20]);
    }

    let mut id = [0u8; 12];
    if let Some(header_id) = data.get(8..20) {
        id.copy_from_slice(header_id);
    }
    let now = Instant::now();
    let mut client = StunClient::new(RetransmitPolicy::NETCHECK);
    let sent = client.send_binding(STUN_SERVER, Change::NONE, now, &mut FixedId(id));
    assert_eq!(sent, TransactionId(id));
    let input = client.handle_input(STUN_SERVER, data, now + Duration::from_millis(1));
    match &input {
        Input::Answered(answered) => {
            assert_eq!(*answered, sent);
            assert!(client.poll_event().is_some());
        }
        Input::NotStun => assert!(!codec::is_stun(data)),
        Input::Request(_) | Input::Stray => {}
    }
    client.handle_timeout(now + Duration::from_secs(10));
    input
}

/// The `traversal` target's rendezvous ("hub") gateway and its two peers' private keys.
pub(crate) const TRAVERSAL_HUB_KEY: [u8; 32] = [0x44; 32];
pub(crate) const TRAVERSAL_A_KEY: [u8; 32] = [0x55; 32];
pub(crate) const TRAVERSAL_B_KEY: [u8; 32] = [0x66; 32];
/// Where the hub hears peer A from.
pub(crate) const TRAVERSAL_A_ADDR: SocketAddr =
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 21)), 40021);
/// Where A hears the hub from.
pub(crate) const TRAVERSAL_HUB_ADDR: SocketAddr =
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 20)), 51820);
/// The `traversal` input's first byte: the rest is a whole datagram from A's address.
pub(crate) const TRAVERSAL_RAW: u8 = 0;
/// The `traversal` input's first byte: the second is a packet type and the rest the body's
/// plaintext, which the harness seals with A's real pair key, so it reaches the hub's state
/// machine past the AEAD.
pub(crate) const TRAVERSAL_SEALED: u8 = 1;

/// What the `traversal` target made of an input.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct TraversalOutcome {
    /// The body decoded (`TRAVERSAL_SEALED` inputs only).
    pub decoded: bool,
    /// The hub took the packet without an error.
    pub accepted: bool,
    /// Packets the hub queued in answer.
    pub transmits: usize,
}

/// Bytes into the traversal decoders (`sitelink_core::traversal`): `packet::peek`, the AEAD
/// open and `Body` parsing, then a rendezvous `Traversal` agent that knows peers A and B (and an
/// agent of A's, which takes what only a hub may send). Input: [`TRAVERSAL_RAW`] then a datagram,
/// or [`TRAVERSAL_SEALED`], a type byte and a body. Must not panic; a body that decodes encodes
/// to bytes that decode to the same body (after one round, which normalises unknown candidate
/// kinds and drops candidates past the limit); whatever the hub sends goes to A's address or
/// to B's, which it learns only from B.
pub(crate) fn traversal(data: &[u8]) -> TraversalOutcome {
    use sitelink_core::traversal::{
        is_traversal_packet, packet, Body, PairKey, PunchConfig, Traversal, TraversalPeer,
    };

    let mut outcome = TraversalOutcome::default();
    let Some((&mode, rest)) = data.split_first() else {
        return outcome;
    };
    let hub_key = PrivateKey::from_bytes(TRAVERSAL_HUB_KEY);
    let a_key = PrivateKey::from_bytes(TRAVERSAL_A_KEY);
    let b_key = PrivateKey::from_bytes(TRAVERSAL_B_KEY);
    let peer = |name: &str, key: &PrivateKey, hub: Option<&PrivateKey>| TraversalPeer {
        name: name.into(),
        key: key.public_key(),
        rendezvous: hub.map(PrivateKey::public_key),
        rendezvous_endpoint: None,
    };
    let now = Instant::now();
    let wall = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let mut rng = FixedId([7; 12]);
    let mut scratch = Vec::new();
    let Some(mut hub) = Traversal::new(
        &hub_key,
        &[peer("a", &a_key, None), peer("b", &b_key, None)],
        true,
        PunchConfig::default(),
        now,
    ) else {
        unreachable!("a rendezvous agent always starts");
    };

    // What the hub gets from A, and what A gets from the hub.
    let (from_a, from_hub) = if mode & 1 == TRAVERSAL_SEALED {
        let Some((&packet_type, body)) = rest.split_first() else {
            return outcome;
        };
        let Ok(decoded) = Body::decode(packet_type, body) else {
            return outcome;
        };
        outcome.decoded = true;
        assert_eq!(decoded.type_code(), packet_type);
        let mut once = Vec::new();
        decoded.encode(&mut once);
        let normal = Body::decode(packet_type, &once).expect("an encoded body decodes");
        let mut twice = Vec::new();
        normal.encode(&mut twice);
        assert_eq!(once, twice, "encoding is stable after one round");
        let seal = |from: &PrivateKey, to: &PrivateKey| {
            let key = PairKey::derive(
                &from.to_static_secret(),
                &from.public_key(),
                &to.public_key(),
            );
            let sealed = key.seal(&from.public_key(), 1, [9; 24], &decoded);
            let header = packet::peek(&sealed).expect("a sealed packet has a header");
            assert_eq!(header.packet_type, packet_type);
            let mut scratch = Vec::new();
            assert!(matches!(key.open(&sealed, &mut scratch), Ok((1, b)) if b == decoded));
            sealed
        };
        (seal(&a_key, &hub_key), seal(&hub_key, &a_key))
    } else {
        (rest.to_vec(), rest.to_vec())
    };
    let datagram = from_a;
    if packet::peek(&datagram).is_ok() {
        assert!(is_traversal_packet(&datagram));
    }

    outcome.accepted = hub
        .handle_input(
            TRAVERSAL_A_ADDR,
            &datagram,
            &mut scratch,
            now,
            wall,
            &mut rng,
        )
        .is_ok();
    hub.handle_timeout(now + Duration::from_secs(1), wall, &mut rng);
    while let Some(t) = hub.poll_transmit() {
        assert_eq!(t.dst, TRAVERSAL_A_ADDR, "the hub has heard only from A");
        outcome.transmits += 1;
    }
    while hub.poll_event().is_some() {}

    // The same packet at a peer of the hub's (as if the hub had sent it): what only a rendezvous
    // may send is taken there, the rest refused.
    if let Some(mut a) = Traversal::new(
        &a_key,
        &[
            peer("hub", &hub_key, None),
            peer("b", &b_key, Some(&hub_key)),
        ],
        false,
        PunchConfig::default(),
        now,
    ) {
        let _ = a.handle_input(
            TRAVERSAL_HUB_ADDR,
            &from_hub,
            &mut scratch,
            now,
            wall,
            &mut rng,
        );
        a.handle_timeout(now + Duration::from_secs(1), wall, &mut rng);
        while a.poll_transmit().is_some() {}
        while a.poll_event().is_some() {}
    }
    outcome
}
