//! Data-plane micro-benchmarks: what the sans-IO core costs per packet, without any I/O.
//!
//! ```text
//! cargo bench -p sitelink-core --bench dataplane
//! cargo bench -p sitelink-core --bench dataplane -- gateway/   # one group only
//! ```
//!
//! - `gateway/*`: two [`Gateway`]s joined by an in-memory [`Sink`], after a completed
//!   handshake; 1420-byte inner packets (the tunnel MTU). `encapsulate` is gateway A's
//!   `handle_tun_packet`, `decapsulate` is gateway B's `handle_datagram` (fed datagrams that A
//!   sealed outside the timed section, since the replay window accepts each counter only once),
//!   `roundtrip` is both in one iteration.
//! - `tunn/*`: the same on a bare `boringtun::noise::Tunn` pair, the floor under `gateway/*`:
//!   the difference is the core's own work (routing lookups, counters, the sink call).
//! - `routing/*`: [`PrefixTable::longest_match`] with 10 000 IPv4 prefixes of lengths /16 to
//!   /32, for addresses inside an inserted prefix (`hit`) and for random addresses (`miss`,
//!   nearly always: every length in use is probed).
//!
//! Each benchmark measures for 3 s after 1 s of warm-up; the whole run takes about half a
//! minute. Throughput is reported both in packets (lookups) per second and bytes per second.

#[path = "../tests/support/gateway_pair.rs"]
mod gateway_pair;

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use boringtun::noise::{Tunn, TunnResult};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use gateway_pair::{net, socket, MemSink, Pair, A_WAN, LAN_A_HOST, LAN_B_HOST};
use ipnet::{IpNet, Ipv4Net};
use rand_core::OsRng;
use sitelink_core::keys::PrivateKey;
use sitelink_core::routing::PrefixTable;

/// Inner packet size: the tunnel MTU, so the datagram is 1452 bytes (+32 of WireGuard).
const PACKET_LEN: usize = 1420;
/// Datagrams sealed ahead of each timed decapsulation chunk.
const CHUNK: usize = 1024;
/// Prefixes in the routing table benchmark.
const PREFIXES: usize = 10_000;

/// An IPv4/UDP packet of exactly `PACKET_LEN` bytes from `src` to `dst` (checksums zero: nothing
/// on this path verifies them).
fn ipv4_packet(src: [u8; 4], dst: [u8; 4]) -> Vec<u8> {
    let mut p = vec![0u8; PACKET_LEN];
    let total = u16::try_from(PACKET_LEN).expect("MTU fits in u16");
    p[0] = 0x45;
    p[2..4].copy_from_slice(&total.to_be_bytes());
    p[8] = 64;
    p[9] = 17;
    p[12..16].copy_from_slice(&src);
    p[16..20].copy_from_slice(&dst);
    p[20..22].copy_from_slice(&40_000u16.to_be_bytes());
    p[22..24].copy_from_slice(&5201u16.to_be_bytes());
    p[24..26].copy_from_slice(&(total - 20).to_be_bytes());
    for (i, b) in p[28..].iter_mut().enumerate() {
        *b = i as u8;
    }
    p
}

fn gateway(c: &mut Criterion) {
    let packet = ipv4_packet(LAN_A_HOST, LAN_B_HOST);
    let mut group = c.benchmark_group("gateway");
    group.throughput(Throughput::ElementsAndBytes {
        elements: 1,
        bytes: PACKET_LEN as u64,
    });

    let mut p = Pair::new(&packet, |_, _| {});
    let mut sink = MemSink::new();
    group.bench_function("encapsulate", |bench| {
        bench.iter(|| p.a.handle_tun_packet(black_box(&packet), p.now, &mut sink));
    });
    assert!(sink.datagrams > 0 && sink.datagram.len() == PACKET_LEN + 32);

    let mut p = Pair::new(&packet, |_, _| {});
    let mut sealed = MemSink::new();
    let mut sink = MemSink::new();
    let mut batch: Vec<Vec<u8>> = (0..CHUNK)
        .map(|_| Vec::with_capacity(PACKET_LEN + 32))
        .collect();
    let src = socket(A_WAN);
    group.bench_function("decapsulate", |bench| {
        bench.iter_custom(|iters| {
            let mut elapsed = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let n = usize::try_from(left.min(CHUNK as u64)).expect("chunk fits in usize");
                for slot in &mut batch[..n] {
                    p.a.handle_tun_packet(&packet, p.now, &mut sealed);
                    slot.clear();
                    slot.extend_from_slice(&sealed.datagram);
                }
                let start = Instant::now();
                for d in &batch[..n] {
                    p.b.handle_datagram(src, black_box(d), p.now, &mut sink);
                }
                elapsed += start.elapsed();
                left -= n as u64;
            }
            elapsed
        });
    });
    assert!(
        sink.tun_packets > 0 && sink.tun == packet,
        "B did not deliver A's packets"
    );

    let mut p = Pair::new(&packet, |_, _| {});
    let mut to_b = MemSink::new();
    let mut to_tun = MemSink::new();
    group.bench_function("roundtrip", |bench| {
        bench.iter(|| {
            p.a.handle_tun_packet(black_box(&packet), p.now, &mut to_b);
            p.b.handle_datagram(src, &to_b.datagram, p.now, &mut to_tun);
        });
    });
    assert!(
        to_tun.tun_packets > 0 && to_tun.tun == packet,
        "round trip lost packets"
    );
    group.finish();
}

/// Two bare `Tunn`s after a handshake; `a` initiated.
fn tunn_pair() -> (Tunn, Tunn) {
    let a_key = PrivateKey::generate(&mut OsRng);
    let b_key = PrivateKey::generate(&mut OsRng);
    let mut a = Tunn::new(
        a_key.to_static_secret(),
        b_key.public_key().to_dalek(),
        None,
        None,
        1,
        None,
    );
    let mut b = Tunn::new(
        b_key.to_static_secret(),
        a_key.public_key().to_dalek(),
        None,
        None,
        2,
        None,
    );
    let mut buf_a = vec![0u8; 2048];
    let mut buf_b = vec![0u8; 2048];
    let TunnResult::WriteToNetwork(init) = a.format_handshake_initiation(&mut buf_a, false) else {
        panic!("no handshake initiation");
    };
    let TunnResult::WriteToNetwork(response) = b.decapsulate(None, init, &mut buf_b) else {
        panic!("no handshake response");
    };
    // A answers the response with a keepalive, which confirms the session to B.
    if let TunnResult::WriteToNetwork(keepalive) = a.decapsulate(None, response, &mut buf_a) {
        let _ = b.decapsulate(None, keepalive, &mut buf_b);
    }
    (a, b)
}

fn tunn(c: &mut Criterion) {
    let packet = ipv4_packet(LAN_A_HOST, LAN_B_HOST);
    let mut group = c.benchmark_group("tunn");
    group.throughput(Throughput::ElementsAndBytes {
        elements: 1,
        bytes: PACKET_LEN as u64,
    });

    let (mut a, _b) = tunn_pair();
    let mut out = vec![0u8; PACKET_LEN + 64];
    group.bench_function("encapsulate", |bench| {
        bench.iter(|| {
            let r = a.encapsulate(black_box(&packet), &mut out);
            assert!(matches!(r, TunnResult::WriteToNetwork(_)));
        });
    });

    let (mut a, mut b) = tunn_pair();
    let mut batch: Vec<Vec<u8>> = (0..CHUNK)
        .map(|_| Vec::with_capacity(PACKET_LEN + 32))
        .collect();
    let src = Some(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1)));
    group.bench_function("decapsulate", |bench| {
        bench.iter_custom(|iters| {
            let mut elapsed = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let n = usize::try_from(left.min(CHUNK as u64)).expect("chunk fits in usize");
                for slot in &mut batch[..n] {
                    let TunnResult::WriteToNetwork(d) = a.encapsulate(&packet, &mut out) else {
                        panic!("encapsulate failed");
                    };
                    slot.clear();
                    slot.extend_from_slice(d);
                }
                let start = Instant::now();
                for d in &batch[..n] {
                    let r = b.decapsulate(src, black_box(d), &mut out);
                    assert!(matches!(r, TunnResult::WriteToTunnelV4(..)));
                }
                elapsed += start.elapsed();
                left -= n as u64;
            }
            elapsed
        });
    });
    group.finish();
}

/// xorshift64*: deterministic addresses without a `rand` dependency.
struct Rng(u64);

impl Rng {
    fn next_u32(&mut self) -> u32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 32) as u32
    }
}

fn routing(c: &mut Criterion) {
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let mut table = PrefixTable::new();
    let mut inserted = Vec::with_capacity(PREFIXES);
    while table.len() < PREFIXES {
        let len = 16 + u8::try_from(rng.next_u32() % 17).expect("0..=16");
        let prefix = Ipv4Net::new(Ipv4Addr::from(rng.next_u32()), len)
            .expect("length 16..=32")
            .trunc();
        if table.insert(IpNet::V4(prefix), inserted.len()).is_none() {
            inserted.push(prefix);
        }
    }
    // Addresses inside inserted prefixes (host bits random), and fully random ones.
    let hits: Vec<IpAddr> = (0..4096)
        .map(|i| {
            let p = inserted[(i * 7919) % inserted.len()];
            let host = rng.next_u32() & !u32::from(p.netmask());
            IpAddr::V4(Ipv4Addr::from(u32::from(p.network()) | host))
        })
        .collect();
    let misses: Vec<IpAddr> = (0..4096)
        .map(|_| IpAddr::V4(Ipv4Addr::from(rng.next_u32())))
        .collect();
    assert!(hits.iter().all(|a| table.longest_match(*a).is_some()));

    let mut group = c.benchmark_group("routing");
    group.throughput(Throughput::Elements(1));
    for (name, addrs) in [("hit_10k", &hits), ("miss_10k", &misses)] {
        let mut i = 0;
        group.bench_function(name, |bench| {
            bench.iter(|| {
                i = (i + 1) & (addrs.len() - 1);
                table.longest_match(black_box(addrs[i]))
            });
        });
    }
    // What the gateway sees with one site-to-site peer: a /32 and a /24.
    let mut small = PrefixTable::new();
    small.insert(net("10.77.0.2/32"), 0u32);
    small.insert(net("192.168.20.0/24"), 0u32);
    let dst = IpAddr::V4(Ipv4Addr::from(LAN_B_HOST));
    group.bench_function("hit_2", |bench| {
        bench.iter(|| small.longest_match(black_box(dst)));
    });
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(50)
}

criterion_group! {
    name = benches;
    config = config();
    targets = gateway, tunn, routing
}
criterion_main!(benches);
