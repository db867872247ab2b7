//! Measures the batched I/O layer in a private network namespace (needs root).
//!
//! ```text
//! batch_echo tcp [--plain] [--v6] [--seconds N] [--mtu M] [--mss N] [--cap]
//!     One TCP stream through a TUN device whose reader reflects every packet back (see
//!     tests/support): reads, packets per read, writes, packets per write, throughput.
//!     --mss sets the client's TCP_MAXSEG; --cap sets the device's gso_max_segs to what one
//!     read can be split into (tun::RX_SEGMENTS).
//! batch_echo udp [--single] [--seconds N] [--size S]
//!     A BatchSink blasting S-byte datagrams over loopback to a BatchUdp receiver: datagrams per
//!     sendmsg and per recvmmsg. --single sends one datagram per sendmsg instead (no GSO).
//! ```
//!
//! Build with `--release`; run under `strace -c -f` to count the system calls yourself.

#![expect(clippy::print_stdout, reason = "an example prints its measurements")]

#[path = "../tests/support/mod.rs"]
mod support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use sitelink_core::gateway::Sink;
use sitelink_io::batch::{BatchSink, BatchTun, BatchUdp, UdpRx};

/// Counts heap allocations (all threads), to show the data path makes none per packet.
struct CountingAlloc;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: every call is passed unchanged to the system allocator; only a counter is added.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller upholds `alloc`'s contract, which `System.alloc` shares.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System` through this allocator with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: as for `dealloc`, and the caller upholds `realloc`'s contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

fn allocations() -> u64 {
    ALLOCATIONS.load(Ordering::Relaxed)
}

struct Args {
    mode: String,
    plain: bool,
    single: bool,
    seconds: u64,
    mtu: u16,
    mss: Option<u32>,
    cap: bool,
    v6: bool,
    size: usize,
}

fn parse() -> Result<Args> {
    let mut args = Args {
        mode: String::new(),
        plain: false,
        single: false,
        seconds: 5,
        mtu: 1420,
        mss: None,
        cap: false,
        v6: false,
        size: 1452,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--plain" => args.plain = true,
            "--single" => args.single = true,
            "--seconds" => args.seconds = value()?.parse()?,
            "--mtu" => args.mtu = value()?.parse()?,
            "--mss" => args.mss = Some(value()?.parse()?),
            "--cap" => args.cap = true,
            "--v6" => args.v6 = true,
            "--size" => args.size = value()?.parse()?,
            "tcp" | "udp" if args.mode.is_empty() => args.mode = a,
            other => bail!("unknown argument {other:?} (see the example's doc)"),
        }
    }
    Ok(args)
}

fn main() -> Result<()> {
    let args = parse()?;
    if let Err(reason) = support::enter_private_netns() {
        bail!("cannot run here: {reason}");
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    match args.mode.as_str() {
        "tcp" => rt.block_on(tcp(&args)),
        "udp" => rt.block_on(udp(&args)),
        _ => bail!("say tcp or udp"),
    }
}

async fn tcp(args: &Args) -> Result<()> {
    let tun = BatchTun::create_with("slb-bench", args.mtu, !args.plain)?;
    support::ip(&[
        "addr",
        "add",
        &format!("{}/24", support::LOCAL),
        "dev",
        tun.name(),
    ])?;
    let local6 = format!("{}/64", support::LOCAL6);
    support::ip(&["-6", "addr", "add", &local6, "dev", tun.name(), "nodad"])?;
    if args.cap {
        tun.cap_gso_segments().await?;
    }
    let udp = BatchUdp::bind(0)?;
    let (rx0, _) = support::device_packets(tun.name())?;
    let (seconds, mss, v6) = (args.seconds, args.mss, args.v6);
    let allocs0 = allocations();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let client = std::thread::spawn({
        let done = std::sync::Arc::clone(&done);
        move || {
            let r = support::transfer(support::TransferOpts {
                for_time: Some(Duration::from_secs(seconds)),
                mss,
                v6,
                ..support::TransferOpts::default()
            });
            done.store(true, Ordering::Relaxed);
            r
        }
    });
    let report = support::reflect(&tun, &udp, false, &done, Duration::from_secs(seconds + 60))?;
    let allocs = allocations() - allocs0;
    let t = client
        .join()
        .map_err(|_| anyhow::anyhow!("client thread panicked"))??;
    let (rx1, _) = support::device_packets(tun.name())?;
    let writes = rx1 - rx0;
    let gbps = t.received as f64 * 8.0 / t.elapsed.as_secs_f64() / 1e9;
    println!(
        "tcp{} offload={} mtu={}: {:.2} Gbit/s ({} MB in {:.2?})",
        if args.v6 { "6" } else { "" },
        tun.offload(),
        args.mtu,
        gbps,
        t.received >> 20,
        t.elapsed
    );
    println!(
        "  TUN reads:  {:>8} for {:>8} packets = {:>5.1} packets/read (max {})",
        report.reads,
        report.packets,
        report.packets as f64 / report.reads.max(1) as f64,
        report.max_packets_per_read
    );
    println!(
        "  TUN writes: {:>8} for {:>8} packets = {:>5.1} packets/write",
        writes,
        report.sink.tun_packets,
        report.sink.tun_packets as f64 / writes.max(1) as f64
    );
    println!(
        "  TUN syscalls per MB moved: {:.1}; bad packets {}, write failures {}, dropped reads {}",
        (report.reads + writes) as f64 / (t.received as f64 / 1e6),
        report.bad,
        report.sink.tun_writes_failed,
        report.dropped_reads
    );
    println!(
        "  heap allocations while running (all threads, setup included): {allocs} for {} packets",
        report.packets
    );
    Ok(())
}

async fn udp(args: &Args) -> Result<()> {
    let tun = BatchTun::create_with("slb-bench", args.mtu, false)?;
    let receiver = BatchUdp::bind(0)?;
    let to = SocketAddr::from(([127, 0, 0, 1], receiver.local_port()?));
    let (seconds, size, single) = (args.seconds, args.size, args.single);
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    let sender = std::thread::spawn(move || -> Result<(u64, u64)> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async {
            let udp = BatchUdp::bind(0)?;
            let datagram = vec![0x5a; size];
            let (mut sent, mut calls) = (0u64, 0u64);
            let start = Instant::now();
            let mut sink = BatchSink::new(&udp, &tun);
            while start.elapsed() < Duration::from_secs(seconds) {
                if single {
                    for _ in 0..64 {
                        if udp.try_send(to, &datagram, size).is_ok() {
                            sent += 1;
                        }
                        calls += 1;
                    }
                } else {
                    for _ in 0..64 {
                        sink.send_to(to, &datagram);
                    }
                    sink.flush();
                }
                // Let the receiver's thread run on a 2-core machine.
                tokio::task::yield_now().await;
            }
            if !single {
                sent = sink.stats().udp_datagrams;
                calls = sink.stats().udp_send_calls;
            }
            let _ = stop_tx.send(());
            Ok((sent, calls))
        })
    });

    let mut rx = UdpRx::new();
    let (mut received, mut bytes, mut recv_calls) = (0u64, 0u64, 0u64);
    let start = Instant::now();
    let allocs0 = allocations();
    let mut poller = sitelink_io::poller::Poller::new()?;
    poller.register(&receiver, sitelink_io::poller::UDP)?;
    loop {
        match receiver.try_recv(&mut rx) {
            Ok(_) => {
                recv_calls += 1;
                for (_, d) in rx.datagrams() {
                    received += 1;
                    bytes += d.len() as u64;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if stop_rx.try_recv().is_ok() {
                    break;
                }
                poller.wait(Some(Duration::from_millis(200)))?;
            }
            Err(e) => return Err(e.into()),
        }
    }
    let elapsed = start.elapsed();
    let allocs = allocations() - allocs0;
    let (sent, send_calls) = sender
        .join()
        .map_err(|_| anyhow::anyhow!("sender thread panicked"))??;
    println!(
        "udp {}-byte datagrams, {}: sent {} in {} sendmsg ({:.1}/call); received {} in {} \
         recvmmsg ({:.1}/call); {:.2} Gbit/s received",
        size,
        if single {
            "one per sendmsg"
        } else {
            "BatchSink (GSO)"
        },
        sent,
        send_calls,
        sent as f64 / send_calls.max(1) as f64,
        received,
        recv_calls,
        received as f64 / recv_calls.max(1) as f64,
        bytes as f64 * 8.0 / elapsed.as_secs_f64() / 1e9
    );
    println!("  heap allocations while running (all threads, setup included): {allocs}");
    Ok(())
}
