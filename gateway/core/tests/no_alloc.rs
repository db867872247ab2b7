//! No allocation per packet on the hot path (issue #6), proven with a counting allocator.
//!
//! Each test sets its state up (handshake, NAT sessions, routing table), warms up, then counts
//! the allocations its own thread makes while it pushes [`ROUNDS`] packets through, and expects
//! none. The sinks keep what they are given in buffers reserved once, as a driver's batch does.

#![allow(clippy::unwrap_used, reason = "test code")]

#[path = "support/counting_alloc.rs"]
mod counting_alloc;
#[path = "support/gateway_pair.rs"]
mod gateway_pair;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant, SystemTime};

use counting_alloc::{allocations_in, Counting};
use gateway_pair::{socket, MemSink, Pair, A_WAN, B_WAN, LAN_A_HOST, LAN_B_HOST};
use ipnet::{IpNet, Ipv4Net};
use rand_core::{CryptoRng, RngCore};
use sitelink_core::gateway::Sink;
use sitelink_core::keys::{PrivateKey, PublicKey};
use sitelink_core::nat::{Nat, NatConfig, Verdict};
use sitelink_core::routing::PrefixTable;
use sitelink_core::traversal::{PunchConfig, Traversal, TraversalPeer};

#[global_allocator]
static ALLOC: Counting = Counting;

/// Packets (or round trips, or lookups) counted per test.
const ROUNDS: usize = 10_000;
/// Round trips before counting starts.
const WARM_UP: usize = 200;
/// The tunnel MTU.
const FULL: usize = 1420;
/// A bare TCP ACK with timestamps.
const SMALL: usize = 52;

/// Gateway B's own LAN address: its masquerade pool in the NAT test.
const LAN_B_GATEWAY: [u8; 4] = [192, 168, 20, 1];

/// An IPv4/UDP packet of `len` bytes (at least 28) with correct checksums.
fn udp(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, len: usize) -> Vec<u8> {
    let payload: Vec<u8> = (0..len - 28).map(|i| i as u8).collect();
    let mut out = Vec::with_capacity(len);
    etherparse::PacketBuilder::ipv4(src, dst, 64)
        .udp(sport, dport)
        .write(&mut out, &payload)
        .unwrap();
    assert_eq!(out.len(), len);
    out
}

fn ends(p: &[u8]) -> (Ipv4Addr, u16, Ipv4Addr, u16) {
    let src = Ipv4Addr::new(p[12], p[13], p[14], p[15]);
    let dst = Ipv4Addr::new(p[16], p[17], p[18], p[19]);
    (
        src,
        u16::from_be_bytes([p[20], p[21]]),
        dst,
        u16::from_be_bytes([p[22], p[23]]),
    )
}

/// A and B after their handshake; B with the NAT rules `b_nat` (a `[nat]` section) if given.
fn pair(b_nat: Option<&str>) -> Pair {
    Pair::new(&udp(LAN_A_HOST, 1, LAN_B_HOST, 2, 100), |b, now| {
        if let Some(text) = b_nat {
            let config: NatConfig = toml::from_str(text).unwrap();
            b.set_nat(&config, 7, now).unwrap();
        }
    })
}

/// One packet from A's LAN to B's TUN, then (if given) B's answer back to A's TUN. Advances
/// the clock by 50 µs and runs both gateways' timers when due, as a driver would.
struct Traffic<'a> {
    pair: &'a mut Pair,
    to_b: MemSink,
    at_b: MemSink,
    to_a: MemSink,
    at_a: MemSink,
}

impl<'a> Traffic<'a> {
    fn new(pair: &'a mut Pair) -> Self {
        Self {
            pair,
            to_b: MemSink::new(),
            at_b: MemSink::new(),
            to_a: MemSink::new(),
            at_a: MemSink::new(),
        }
    }

    /// A → B; returns B's TUN packet.
    fn forth(&mut self, packet: &[u8]) -> &[u8] {
        let p = &mut *self.pair;
        p.now += Duration::from_micros(50);
        if p.now >= p.a.poll_timeout() {
            p.a.handle_timeout(p.now, &mut self.to_b);
        }
        if p.now >= p.b.poll_timeout() {
            p.b.handle_timeout(p.now, &mut self.to_a);
        }
        let sent = self.to_b.datagrams;
        p.a.handle_tun_packet(packet, p.now, &mut self.to_b);
        assert_eq!(self.to_b.datagrams, sent + 1, "A sent no datagram");
        assert_eq!(self.to_b.datagram_dst, Some(socket(B_WAN)));
        let written = self.at_b.tun_packets;
        p.b.handle_datagram(socket(A_WAN), &self.to_b.datagram, p.now, &mut self.at_b);
        assert_eq!(self.at_b.tun_packets, written + 1, "B wrote nothing");
        &self.at_b.tun
    }

    /// B → A; returns A's TUN packet.
    fn back(&mut self, packet: &[u8]) -> &[u8] {
        let p = &mut *self.pair;
        let sent = self.to_a.datagrams;
        p.b.handle_tun_packet(packet, p.now, &mut self.to_a);
        assert_eq!(self.to_a.datagrams, sent + 1, "B sent no datagram");
        let written = self.at_a.tun_packets;
        p.a.handle_datagram(socket(B_WAN), &self.to_a.datagram, p.now, &mut self.at_a);
        assert_eq!(self.at_a.tun_packets, written + 1, "A wrote nothing");
        &self.at_a.tun
    }
}

/// The counter sees this thread's allocations (and so the zeros below mean something).
#[test]
fn the_allocator_counts() {
    let (v, n) = allocations_in(|| std::hint::black_box(vec![0u8; 1500]));
    assert_eq!(n, 1);
    let ((), n) = allocations_in(|| drop(v));
    assert_eq!(n, 0);
    let mut sink = MemSink::new();
    let ((), n) = allocations_in(|| sink.send_to(socket(A_WAN), &[0; 1500]));
    assert_eq!(n, 0, "the sink itself allocates");
}

#[test]
fn gateway_round_trips_allocate_nothing() {
    let mut pair = pair(None);
    let mut t = Traffic::new(&mut pair);
    let full_ab = udp(LAN_A_HOST, 40_000, LAN_B_HOST, 5201, FULL);
    let small_ab = udp(LAN_A_HOST, 40_000, LAN_B_HOST, 5201, SMALL);
    let full_ba = udp(LAN_B_HOST, 5201, LAN_A_HOST, 40_000, FULL);
    let small_ba = udp(LAN_B_HOST, 5201, LAN_A_HOST, 40_000, SMALL);
    let round = |t: &mut Traffic<'_>, i: usize| {
        let (forth, back) = if i.is_multiple_of(2) {
            (&full_ab, &small_ba)
        } else {
            (&small_ab, &full_ba)
        };
        assert_eq!(t.forth(forth), &forth[..]);
        assert_eq!(t.back(back), &back[..]);
    };
    for i in 0..WARM_UP {
        round(&mut t, i);
    }
    let ((), n) = allocations_in(|| {
        for i in 0..ROUNDS {
            round(&mut t, i);
        }
    });
    assert_eq!(
        n, 0,
        "{n} allocations in {ROUNDS} round trips (1420 and {SMALL} bytes each way)"
    );
}

/// Gateway B masquerades A's LAN onto its own LAN address: every packet to B's TUN is looked up
/// in the NAT's established sessions outbound, and every answer inbound.
#[test]
fn gateway_round_trips_through_nat_allocate_nothing() {
    let mut pair = pair(Some(
        "[[masquerade]]\nsource = [\"192.168.10.0/24\"]\npool = [\"192.168.20.1\"]\n",
    ));
    let mut t = Traffic::new(&mut pair);
    // 16 flows, each opened during the warm-up.
    let flows: Vec<(Vec<u8>, Vec<u8>)> = (0..16u16)
        .map(|f| {
            let len = if f % 2 == 0 { FULL } else { SMALL };
            let forth = udp(LAN_A_HOST, 40_000 + f, LAN_B_HOST, 5201, len);
            let at_b = t.forth(&forth);
            let (src, sport, dst, dport) = ends(at_b);
            assert_eq!(src, Ipv4Addr::from(LAN_B_GATEWAY), "not masqueraded");
            assert_eq!(dst, Ipv4Addr::from(LAN_B_HOST));
            let len = if forth.len() == FULL { SMALL } else { FULL };
            let back = udp(dst.octets(), dport, src.octets(), sport, len);
            (forth, back)
        })
        .collect();
    let round = |t: &mut Traffic<'_>, flows: &[(Vec<u8>, Vec<u8>)], i: usize| {
        let (forth, back) = &flows[i % flows.len()];
        let at_b = t.forth(forth);
        assert_eq!(ends(at_b).0, Ipv4Addr::from(LAN_B_GATEWAY));
        let at_a = t.back(back);
        assert_eq!(ends(at_a), ends(forth).swap());
    };
    for i in 0..WARM_UP {
        round(&mut t, &flows, i);
    }
    let ((), n) = allocations_in(|| {
        for i in 0..ROUNDS {
            round(&mut t, &flows, i);
        }
    });
    assert_eq!(n, 0, "{n} allocations in {ROUNDS} NATed round trips");
}

trait Swap {
    fn swap(self) -> Self;
}

impl Swap for (Ipv4Addr, u16, Ipv4Addr, u16) {
    fn swap(self) -> Self {
        (self.2, self.3, self.0, self.1)
    }
}

/// The NAT engine alone: 1 000 established flows, translated out and in.
#[test]
fn nat_established_lookups_allocate_nothing() {
    let config: NatConfig =
        toml::from_str("[[masquerade]]\npool = [\"203.0.113.0/30\"]\n").unwrap();
    let mut now = Instant::now();
    let mut nat = Nat::new(&config, 1, now).unwrap();
    let flows: Vec<(Vec<u8>, Vec<u8>)> = (0..1000u32)
        .map(|i| {
            let host = Ipv4Addr::from(0x0a00_0000 | (i / 10 + 1)).octets();
            let remote = [198, 51, 100, (i % 200 + 1) as u8];
            let mut out = udp(host, 40_000 + (i % 10) as u16, remote, 53, 64);
            assert_eq!(nat.translate_outbound(&mut out, now), Verdict::Forward);
            let (src, sport, dst, dport) = ends(&out);
            (
                udp(host, 40_000 + (i % 10) as u16, remote, 53, 64),
                udp(dst.octets(), dport, src.octets(), sport, 64),
            )
        })
        .collect();
    let mut scratch = vec![0u8; 64];
    let mut round = |nat: &mut Nat, now: Instant, i: usize| {
        let (out, back) = &flows[i % flows.len()];
        scratch.copy_from_slice(out);
        assert_eq!(nat.translate_outbound(&mut scratch, now), Verdict::Forward);
        scratch.copy_from_slice(back);
        assert_eq!(nat.translate_inbound(&mut scratch, now), Verdict::Forward);
        assert_eq!(ends(&scratch), ends(out).swap(), "not translated back");
    };
    for i in 0..WARM_UP {
        round(&mut nat, now, i);
    }
    let ((), n) = allocations_in(|| {
        for i in 0..ROUNDS {
            // A millisecond per round: the timers run (the idle sweep visits sessions), and
            // every flow stays well inside its idle timeout.
            now += Duration::from_millis(1);
            if nat.poll_timeout().is_some_and(|t| t <= now) {
                nat.handle_timeout(now);
            }
            round(&mut nat, now, i);
        }
    });
    assert_eq!(n, 0, "{n} allocations in {ROUNDS} NAT round trips");
    assert_eq!(nat.sessions(now).count(), flows.len());
}

/// Longest-prefix match in a table of 10 000 prefixes, hits and misses.
#[test]
fn routing_lookups_allocate_nothing() {
    let mut table = PrefixTable::new();
    let mut x: u32 = 0x9e37_79b9;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        x
    };
    let mut inserted = Vec::new();
    while table.len() < 10_000 {
        let len = 16 + (next() % 17) as u8;
        let p = Ipv4Net::new(Ipv4Addr::from(next()), len).unwrap().trunc();
        if table.insert(IpNet::V4(p), inserted.len()).is_none() {
            inserted.push(p);
        }
    }
    let addrs: Vec<IpAddr> = (0..ROUNDS)
        .map(|i| {
            if i % 2 == 0 {
                IpAddr::V4(inserted[i % inserted.len()].network())
            } else {
                IpAddr::V4(Ipv4Addr::from(next()))
            }
        })
        .collect();
    let v6 = IpAddr::V6("2001:db8::1".parse().unwrap());
    let (hits, n) = allocations_in(|| {
        let mut hits = 0;
        for a in &addrs {
            hits += usize::from(table.longest_match(*a).is_some());
        }
        hits += usize::from(table.longest_match(v6).is_some());
        hits
    });
    assert_eq!(n, 0, "{n} allocations in {} lookups", ROUNDS + 1);
    assert!(hits >= ROUNDS / 2);
}

/// A xorshift generator standing in for the driver's CSPRNG (the nonces need not be secret
/// here, only drawn without allocating).
struct TestRng(u64);

impl RngCore for TestRng {
    fn next_u32(&mut self) -> u32 {
        self.next_u64() as u32
    }
    fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        for chunk in dest.chunks_mut(8) {
            let n = chunk.len();
            chunk.copy_from_slice(&self.next_u64().to_le_bytes()[..n]);
        }
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

impl CryptoRng for TestRng {}

/// WireGuard datagrams relayed A → hub → B and back through three traversal agents: the
/// sender wraps (`relay`), the hub opens and re-seals, the receiver opens. Each agent's
/// transmits are sent while lent, as the driver does, and each keeps its decryption buffer.
/// No timers run while counting (registrations and probes are not per packet).
#[test]
fn relayed_datagrams_allocate_nothing() {
    let [hub_key, a_key, b_key] = [10u8, 11, 12].map(|b| PrivateKey::from_bytes([b; 32]));
    let hub_addr: SocketAddr = "203.0.113.1:51820".parse().unwrap();
    let a_addr: SocketAddr = "198.51.100.1:40000".parse().unwrap();
    let b_addr: SocketAddr = "198.51.100.2:41000".parse().unwrap();
    let peer = |name: &str, key: &PrivateKey, hub: bool| TraversalPeer {
        name: name.into(),
        key: key.public_key(),
        rendezvous: hub.then(|| hub_key.public_key()),
        rendezvous_endpoint: hub.then_some(hub_addr),
    };
    let hub_entry = TraversalPeer {
        rendezvous_endpoint: Some(hub_addr),
        ..peer("hub", &hub_key, false)
    };
    let now = Instant::now();
    let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let agent = |key: &PrivateKey, peers: &[TraversalPeer], rendezvous: bool| {
        Traversal::new(key, peers, rendezvous, PunchConfig::default(), now).unwrap()
    };
    let mut hub = agent(
        &hub_key,
        &[peer("a", &a_key, false), peer("b", &b_key, false)],
        true,
    );
    let mut a = agent(&a_key, &[hub_entry.clone(), peer("b", &b_key, true)], false);
    let mut b = agent(&b_key, &[hub_entry, peer("a", &a_key, true)], false);
    let (a_pub, b_pub) = (a_key.public_key(), b_key.public_key());

    let mut rng = TestRng(0x9e37_79b9_7f4a_7c15);
    let mut wire = MemSink::new();
    let [mut hub_scratch, mut a_scratch, mut b_scratch] = [(); 3].map(|()| Vec::new());
    // A WireGuard data message of a 1420-byte packet, and a keepalive.
    let full: Vec<u8> = (0..FULL + 32).map(|i| i as u8).collect();
    let small: Vec<u8> = (0..32).map(|i| i as u8).collect();

    // One datagram from `from` (key `from_key`, at `from_addr`) to `to` (key `to_key`) through
    // the hub; returns whether `to` got it, unchanged and from `from_key`.
    let mut relay = |(from, from_key, from_addr): (&mut Traversal, PublicKey, SocketAddr),
                     (to, to_key, to_scratch): (&mut Traversal, PublicKey, &mut Vec<u8>),
                     datagram: &[u8]|
     -> bool {
        assert!(from.relay(&to_key, datagram, wall, &mut rng));
        let mut sent = 0;
        while let Some(t) = from.poll_transmit() {
            assert_eq!(t.dst, hub_addr);
            wire.send_to(t.dst, t.payload);
            sent += 1;
        }
        assert_eq!(sent, 1);
        hub.handle_input(
            from_addr,
            &wire.datagram,
            &mut hub_scratch,
            now,
            wall,
            &mut rng,
        )
        .unwrap();
        let Some(t) = hub.poll_transmit() else {
            return false; // the destination has not been seen by the hub yet
        };
        let dst = t.dst;
        wire.send_to(dst, t.payload);
        assert!(hub.poll_transmit().is_none());
        let relayed = to
            .handle_input(hub_addr, &wire.datagram, to_scratch, now, wall, &mut rng)
            .unwrap()
            .unwrap();
        relayed.datagram == datagram && relayed.from == from_key
    };
    let mut round = |a: &mut Traversal, b: &mut Traversal, i: usize| {
        let (forth, back) = if i.is_multiple_of(2) {
            (&full, &small)
        } else {
            (&small, &full)
        };
        let ab = relay((a, a_pub, a_addr), (b, b_pub, &mut b_scratch), forth);
        let ba = relay((b, b_pub, b_addr), (a, a_pub, &mut a_scratch), back);
        (ab, ba)
    };
    // The hub learns where A and B are from their first relay frames.
    assert_eq!(round(&mut a, &mut b, 0), (false, true));
    for i in 1..WARM_UP {
        assert_eq!(round(&mut a, &mut b, i), (true, true));
    }
    let ((), n) = allocations_in(|| {
        for i in 0..ROUNDS {
            assert_eq!(round(&mut a, &mut b, i), (true, true));
        }
    });
    assert_eq!(
        n,
        0,
        "{n} allocations relaying {ROUNDS} round trips ({} and 32 bytes each way)",
        FULL + 32
    );
    assert_eq!(
        hub.counters().relayed_for_peers,
        2 * (WARM_UP + ROUNDS) as u64 - 1
    );
    assert_eq!(b.counters().relayed_received, (WARM_UP + ROUNDS - 1) as u64);
}
