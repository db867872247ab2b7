//! NAT engine benchmarks: what translation costs per packet, without any I/O.
//!
//! ```text
//! cargo bench -p sitelink-core --bench nat
//! ```
//!
//! - `nat/established_out`, `nat/established_in`: 64-byte UDP packets of 10 000 established
//!   flows (port-restricted cone), round robin, translated in place. Each packet is copied into
//!   a scratch buffer first (the translation rewrites it); the copy is part of the time.
//! - `nat/new_session`: the first packet of a new flow from a new inside host: a new mapping
//!   (port allocation on a 62-address pool) and a new session.
//! - Before the timed groups, the memory of 1 000 000 sessions is printed: bytes allocated per
//!   session as a counting allocator sees them, and as `Nat::heap_bytes` computes them, for
//!   one session per mapping (the worst case) under port-restricted cone, full cone,
//!   restricted cone and symmetric NAT, and for four sessions per mapping under port-restricted cone.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use criterion::{criterion_group, Criterion, Throughput};
use sitelink_core::nat::{Nat, NatConfig, Verdict};

/// Counts the bytes live on the heap, to measure the session table.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is passed straight to the system allocator with the caller's arguments;
// the counter is only bookkeeping.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract, which `System` shares.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: `ptr` was allocated by `System` with `layout` (through `alloc` above).
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size, Ordering::Relaxed);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller upholds `GlobalAlloc::realloc`'s contract, which `System` shares.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Established flows in the translation benchmarks.
const FLOWS: usize = 10_000;
/// Sessions in the memory measurement.
const MILLION: u32 = 1_000_000;
/// Payload of the benchmark packets (IPv4 20 + UDP 8 + 36 = 64 bytes).
const PAYLOAD: usize = 36;

fn config(behaviour: &str) -> NatConfig {
    let text = format!(
        "session_limit = 2000000\nhost_port_quota = 0\n\
         [[masquerade]]\npool = [\"203.0.113.0/26\"]\n{behaviour}\n"
    );
    toml::from_str(&text).expect("bench config")
}

/// A 64-byte IPv4/UDP packet with correct checksums.
fn udp(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16) -> Vec<u8> {
    let mut out = Vec::with_capacity(20 + 8 + PAYLOAD);
    etherparse::PacketBuilder::ipv4(src.octets(), dst.octets(), 64)
        .udp(sport, dport)
        .write(&mut out, &[0x5a; PAYLOAD])
        .expect("builds");
    out
}

/// The `i`th inside host (10.0.0.0/8).
fn host(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(0x0a00_0000 | (i + 1))
}

fn remote(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(0xc633_6400 | (i % 200 + 1)) // 198.51.100.x
}

/// Creates `n` sessions with `per_mapping` sessions per inside endpoint.
fn fill(nat: &mut Nat, n: u32, per_mapping: u32, now: Instant) {
    for i in 0..n {
        let h = i / per_mapping;
        let mut p = udp(host(h), 40_000, remote(i), 1000 + (i % per_mapping) as u16);
        assert_eq!(nat.translate_outbound(&mut p, now), Verdict::Forward);
    }
}

#[expect(
    clippy::print_stdout,
    reason = "the memory report goes with criterion's output"
)]
fn memory_report() {
    println!("NAT memory, {MILLION} sessions:");
    for (name, behaviour, per_mapping) in [
        (
            "port-restricted cone, 1 session/mapping",
            "preset = \"port-restricted-cone\"",
            1,
        ),
        ("full cone, 1 session/mapping", "preset = \"full-cone\"", 1),
        (
            "restricted cone, 1 session/mapping",
            "preset = \"restricted-cone\"",
            1,
        ),
        ("symmetric, 1 session/mapping", "preset = \"symmetric\"", 1),
        (
            "port-restricted cone, 4 sessions/mapping",
            "preset = \"port-restricted-cone\"",
            4,
        ),
    ] {
        let now = Instant::now();
        let before = LIVE.load(Ordering::Relaxed);
        let mut nat = Nat::new(&config(behaviour), 1, now).expect("valid");
        let started = Instant::now();
        fill(&mut nat, MILLION, per_mapping, now);
        let took = started.elapsed();
        let live = LIVE.load(Ordering::Relaxed) - before;
        let c = nat.counters();
        assert_eq!(c.sessions, u64::from(MILLION));
        println!(
            "  {name:42} {:6.1} bytes/session allocated, {:6.1} by heap_bytes(); \
             {} mappings; filled in {:.2} s ({:.2} M new sessions/s)",
            live as f64 / f64::from(MILLION),
            nat.heap_bytes() as f64 / f64::from(MILLION),
            c.mappings,
            took.as_secs_f64(),
            f64::from(MILLION) / took.as_secs_f64() / 1e6,
        );
        drop(nat);
    }
}

fn established(c: &mut Criterion) {
    let now = Instant::now();
    let mut nat = Nat::new(&config("preset = \"port-restricted-cone\""), 1, now).expect("valid");
    let mut outbound = Vec::with_capacity(FLOWS);
    let mut inbound = Vec::with_capacity(FLOWS);
    for i in 0..FLOWS as u32 {
        let mut p = udp(host(i), 40_000, remote(i), 53);
        let original = p.clone();
        assert_eq!(nat.translate_outbound(&mut p, now), Verdict::Forward);
        // The reply: from the remote to the external endpoint the packet got.
        let ext = Ipv4Addr::new(p[12], p[13], p[14], p[15]);
        let ext_port = u16::from_be_bytes([p[20], p[21]]);
        let mut reply = udp(remote(i), 53, ext, ext_port);
        assert_eq!(
            nat.translate_inbound(&mut reply.clone(), now),
            Verdict::Forward
        );
        outbound.push(original);
        inbound.push(std::mem::take(&mut reply));
    }
    let mut g = c.benchmark_group("nat");
    g.measurement_time(Duration::from_secs(3));
    g.warm_up_time(Duration::from_secs(1));
    g.throughput(Throughput::Elements(FLOWS as u64));
    let mut scratch = [0u8; 64];
    g.bench_function("established_out", |b| {
        b.iter(|| {
            for p in &outbound {
                scratch.copy_from_slice(p);
                let _ = black_box(nat.translate_outbound(&mut scratch, now));
            }
        })
    });
    g.bench_function("established_in", |b| {
        b.iter(|| {
            for p in &inbound {
                scratch.copy_from_slice(p);
                let _ = black_box(nat.translate_inbound(&mut scratch, now));
            }
        })
    });
    g.throughput(Throughput::Elements(1));
    g.bench_function("new_session", |b| {
        b.iter_custom(|iters| {
            let now = Instant::now();
            let mut nat =
                Nat::new(&config("preset = \"port-restricted-cone\""), 1, now).expect("valid");
            let n = u32::try_from(iters).unwrap_or(u32::MAX).min(3_000_000);
            let packets: Vec<Vec<u8>> = (0..n)
                .map(|i| udp(host(i), 40_000, remote(i), 53))
                .collect();
            let started = Instant::now();
            for mut p in packets {
                let _ = black_box(nat.translate_outbound(&mut p, now));
            }
            // iters beyond 3 M (not reached at these timings) would be counted as free.
            started.elapsed()
        })
    });
    g.finish();
}

criterion_group!(benches, established);

fn main() {
    memory_report();
    benches();
    Criterion::default().configure_from_args().final_summary();
}
