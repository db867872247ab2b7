//! The batched TUN and UDP paths against the real kernel, each test in a private network
//! namespace of its own thread. Needs root and /dev/net/tun; skipped with the reason otherwise.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use sitelink_core::gateway::Sink;
use sitelink_io::batch::tun::RX_SEGMENTS;
use sitelink_io::batch::{BatchSink, BatchTun, BatchUdp, UdpRx};
use sitelink_io::poller::{Poller, UDP};
use support::{device_packets, ip, reflect, transfer, TransferOpts, LOCAL, LOCAL6};

const MTU: u16 = 1420;
const BYTES: u64 = 8 << 20;

fn in_private_netns(test: &str) -> bool {
    match support::enter_private_netns() {
        Ok(()) => true,
        Err(reason) => {
            eprintln!("SKIPPED {test}: {reason}");
            false
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("tokio runtime")
}

/// What a TCP transfer through the reflecting device looked like.
struct Run {
    report: support::ReflectReport,
    transfer: support::Transfer,
    /// Writes the kernel took from us (`ip -s link` rx packets).
    writes: u64,
    /// Reads the kernel offered us (tx packets).
    reads_offered: u64,
}

/// Gives `tun` 10.77.0.1/24 and fd77::1/64 and pushes `BYTES` through it over TCP (with `mss`,
/// if given; over IPv6 with `v6`) while reflecting.
async fn tcp_through(tun: &BatchTun, mss: Option<u32>, v6: bool) -> Result<Run> {
    ip(&["addr", "add", &format!("{LOCAL}/24"), "dev", tun.name()])?;
    let local6 = format!("{LOCAL6}/64");
    ip(&["-6", "addr", "add", &local6, "dev", tun.name(), "nodad"])?;
    let udp = BatchUdp::bind(0)?;
    let (rx0, tx0) = device_packets(tun.name())?;
    let done = Arc::new(AtomicBool::new(false));
    let client = std::thread::spawn({
        let done = Arc::clone(&done);
        move || {
            let result = transfer(TransferOpts {
                bytes: BYTES,
                verify: true,
                mss,
                v6,
                ..TransferOpts::default()
            });
            done.store(true, Ordering::Relaxed);
            result
        }
    });
    let report =
        reflect(tun, &udp, true, &done, Duration::from_secs(120)).context("transfer timed out")?;
    let transfer = client
        .join()
        .map_err(|_| anyhow::anyhow!("client thread panicked"))??;
    let (rx1, tx1) = device_packets(tun.name())?;
    Ok(Run {
        report,
        transfer,
        writes: rx1 - rx0,
        reads_offered: tx1 - tx0,
    })
}

fn check_transfer(run: &Run) -> Result<()> {
    let (r, t) = (&run.report, &run.transfer);
    eprintln!(
        "{} bytes in {:?}; {} reads -> {} packets (max {} per read, largest {} B); \
         {} packets written in {} writes; kernel offered {} reads; bad {}, dropped reads {}",
        t.received,
        t.elapsed,
        r.reads,
        r.packets,
        r.max_packets_per_read,
        r.max_packet_len,
        r.sink.tun_packets,
        run.writes,
        run.reads_offered,
        r.bad,
        r.dropped_reads
    );
    ensure!(
        t.sent == BYTES && t.received == BYTES && t.intact,
        "stream damaged: {t:?}"
    );
    ensure!(
        r.bad == 0,
        "{} packets with a wrong length or checksum",
        r.bad
    );
    ensure!(
        r.max_packet_len <= usize::from(MTU),
        "a {}-byte packet on a {MTU}-byte MTU",
        r.max_packet_len
    );
    ensure!(
        run.writes == r.sink.tun_writes,
        "the kernel counted {} writes, the sink {}",
        run.writes,
        r.sink.tun_writes
    );
    ensure!(
        r.tcp_payload >= BYTES,
        "saw {} payload bytes",
        r.tcp_payload
    );
    ensure!(
        r.sink.tun_writes_failed == 0 && r.sink.tun_write_dropped == 0,
        "TUN writes failed: {:?}",
        r.sink
    );
    Ok(())
}

#[test]
fn tcp_over_offloading_tun_is_split_on_read_and_coalesced_on_write() -> Result<()> {
    if !in_private_netns("tcp_over_offloading_tun") {
        return Ok(());
    }
    runtime()?.block_on(async {
        let tun = match BatchTun::create_with("slb-off", MTU, true) {
            Ok(tun) => tun,
            Err(e) => {
                eprintln!("SKIPPED tcp_over_offloading_tun: no TUN offloads here: {e:#}");
                return Ok(());
            }
        };
        ensure!(tun.offload(), "asked for offloads, got none");
        ensure!(tun.ifindex()? > 0, "no ifindex");
        let run = tcp_through(&tun, None, false).await?;
        check_transfer(&run)?;
        let r = &run.report;
        ensure!(
            r.max_packets_per_read > 1 && r.reads < r.packets,
            "no TSO super-packet was split: {} reads, {} packets",
            r.reads,
            r.packets
        );
        ensure!(
            run.writes < r.sink.tun_packets,
            "nothing was coalesced: {} packets in {} writes",
            r.sink.tun_packets,
            run.writes
        );
        Ok(())
    })
}

#[test]
fn tcp_over_ipv6_is_split_and_coalesced_too() -> Result<()> {
    if !in_private_netns("tcp_over_ipv6") {
        return Ok(());
    }
    runtime()?.block_on(async {
        let Ok(tun) = BatchTun::create_with("slb-v6", MTU, true) else {
            eprintln!("SKIPPED tcp_over_ipv6: no TUN offloads here");
            return Ok(());
        };
        let run = tcp_through(&tun, None, true).await?;
        check_transfer(&run)?;
        let r = &run.report;
        ensure!(r.max_packets_per_read > 1, "no TSO6 super-packet was split");
        ensure!(
            run.writes < r.sink.tun_packets,
            "nothing was coalesced: {} packets in {} writes",
            r.sink.tun_packets,
            run.writes
        );
        Ok(())
    })
}

#[test]
fn tcp_over_plain_tun_moves_one_packet_per_call() -> Result<()> {
    if !in_private_netns("tcp_over_plain_tun") {
        return Ok(());
    }
    runtime()?.block_on(async {
        let tun = BatchTun::create_with("slb-plain", MTU, false)?;
        ensure!(!tun.offload());
        let run = tcp_through(&tun, None, false).await?;
        check_transfer(&run)?;
        let r = &run.report;
        ensure!(r.max_packets_per_read == 1 && r.reads == r.packets);
        ensure!(
            run.writes == r.sink.tun_packets,
            "{} packets in {} writes without offloads",
            r.sink.tun_packets,
            run.writes
        );
        Ok(())
    })
}

#[test]
fn tiny_mss_super_packets_fit_once_gso_max_segs_is_capped() -> Result<()> {
    if !in_private_netns("tiny_mss") {
        return Ok(());
    }
    runtime()?.block_on(async {
        let Ok(tun) = BatchTun::create_with("slb-mss", MTU, true) else {
            eprintln!("SKIPPED tiny_mss: no TUN offloads here");
            return Ok(());
        };
        // A 200-byte MSS makes 64 KiB super-packets of 300+ segments, more than a read can be
        // split into; capped, the kernel segments them to fit before handing them over.
        tun.cap_gso_segments().await?;
        let shown = ip(&["-d", "link", "show", "dev", tun.name()])?;
        ensure!(
            shown.contains(&format!("gso_max_segs {RX_SEGMENTS} ")),
            "gso_max_segs not capped: {shown}"
        );
        let run = tcp_through(&tun, Some(200), false).await?;
        check_transfer(&run)?;
        let r = &run.report;
        ensure!(r.dropped_reads == 0, "{} reads dropped", r.dropped_reads);
        ensure!(r.max_packets_per_read > 1 && r.max_packets_per_read <= RX_SEGMENTS);
        Ok(())
    })
}

fn datagram(index: usize, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (index.wrapping_mul(31).wrapping_add(i)) as u8)
        .collect()
}

/// Datagrams with their sources.
type Received = Vec<(SocketAddr, Vec<u8>)>;

/// Receives on `sock` until `expected` datagrams arrived (waiting in an epoll set, at most 5 s
/// in all); returns them and the receive calls that returned some.
fn receive(sock: &BatchUdp, expected: usize) -> Result<(Received, usize)> {
    let mut poller = Poller::new()?;
    poller.register(sock, UDP)?;
    let mut rx = UdpRx::new();
    let (mut got, mut calls) = (Vec::new(), 0);
    let start = std::time::Instant::now();
    while got.len() < expected {
        ensure!(
            start.elapsed() < Duration::from_secs(5),
            "only {} of {expected} datagrams arrived",
            got.len()
        );
        match sock.try_recv(&mut rx) {
            Ok(_) => {
                calls += 1;
                got.extend(rx.datagrams().map(|(src, d)| (src, d.to_vec())));
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                poller.wait(Some(Duration::from_millis(100)))?;
            }
            Err(e) => return Err(e).context("receiving"),
        }
    }
    Ok((got, calls))
}

#[test]
fn udp_runs_leave_with_gso_and_arrive_with_gro() -> Result<()> {
    if !in_private_netns("udp_runs_gso_gro") {
        return Ok(());
    }
    runtime()?.block_on(async {
        // The sink needs a device; this test writes nothing to it.
        let tun = BatchTun::create_with("slb-udp", MTU, false)?;
        let (a, b, c) = (BatchUdp::bind(0)?, BatchUdp::bind(0)?, BatchUdp::bind(0)?);
        let from_a = SocketAddr::from(([127, 0, 0, 1], a.local_port()?));
        let to_b = SocketAddr::from(([127, 0, 0, 1], b.local_port()?));
        let to_c = SocketAddr::from(([127, 0, 0, 1], c.local_port()?));
        let full = usize::from(MTU) + 32;

        let mut sink = BatchSink::new(&a, &tun);
        for i in 0..100 {
            sink.send_to(to_b, &datagram(i, full));
            if i % 10 == 0 {
                sink.send_to(to_c, &datagram(1000 + i, 200));
            }
        }
        sink.send_to(to_b, &datagram(100, 100));
        sink.flush();
        let stats = *sink.stats();
        eprintln!(
            "sent {stats:?}; gso segments {}, gro segments {}",
            a.max_gso_segments(),
            b.gro_segments()
        );
        ensure!(stats.udp_datagrams == 111 && stats.udp_send_dropped == 0);
        if a.max_gso_segments() > 1 {
            // b: 45 + 45 + (10 + the short one); c: 10.
            ensure!(
                stats.udp_send_calls == 4,
                "{} sendmsg calls",
                stats.udp_send_calls
            );
        }

        let (got, calls) = receive(&b, 101)?;
        eprintln!("b received 101 datagrams in {calls} recvmmsg calls");
        ensure!(got.len() == 101);
        for (i, (src, d)) in got.iter().enumerate() {
            ensure!(*src == from_a, "source {src}, expected {from_a}");
            let len = if i == 100 { 100 } else { full };
            ensure!(
                *d == datagram(i, len),
                "datagram {i} damaged or out of order"
            );
        }
        if b.gro_segments() > 1 {
            ensure!(calls <= 3, "{calls} receive calls for 3 GSO sends");
        }
        let (got, _) = receive(&c, 10)?;
        for (k, (_, d)) in got.iter().enumerate() {
            ensure!(*d == datagram(1000 + 10 * k, 200));
        }

        // IPv6 on the same (dual-stack) sockets.
        if a.is_dual_stack() {
            let to_b6 = SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, b.local_port()?));
            for i in 0..3 {
                sink.send_to(to_b6, &datagram(i, 500));
            }
            sink.flush();
            let (got, _) = receive(&b, 3)?;
            for (i, (src, d)) in got.iter().enumerate() {
                ensure!(src.is_ipv6() && *d == datagram(i, 500));
            }
        }
        Ok(())
    })
}
