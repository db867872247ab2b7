//! Shared by the batch I/O tests and the `batch_echo` example: a private network namespace for
//! the calling thread, a TUN "reflector" that makes the kernel talk TCP to itself through the
//! device, a checksummed TCP transfer over it, and IPv4/TCP checks of what the device hands over.
//!
//! The reflector swaps the source and destination addresses of every IPv4 packet it reads and
//! writes it back. A client on 10.77.0.1 connecting to 10.77.0.2:P sends `1→2, X→P`; swapped, that
//! is `2→1, X→P`, a connection to the local listener on P, whose answers `1→2, P→X` come back
//! swapped as `2→1, P→X`, what the client expects from 10.77.0.2:P. Swapping two addresses leaves
//! the IP and TCP checksums valid, so the packets need no other change.

#![allow(
    dead_code,
    unreachable_pub,
    reason = "the tests and the example use different parts"
)]

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use sitelink_core::gateway::Sink;
use sitelink_io::batch::{BatchSink, BatchStats, BatchTun, BatchUdp, TunRx};
use sitelink_io::poller::{Poller, TUN};

/// The address given to the device.
pub const LOCAL: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
/// The address the client connects to, reflected back to [`LOCAL`].
pub const REMOTE: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
/// [`LOCAL`] for IPv6 runs.
pub const LOCAL6: Ipv6Addr = Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 1);
/// [`REMOTE`] for IPv6 runs.
pub const REMOTE6: Ipv6Addr = Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 2);
/// Reads handled per wakeup before the sink is flushed.
const READS_PER_WAKEUP: usize = 8;

/// Moves the calling thread (and the threads it starts afterwards) into a new, empty network
/// namespace with `lo` up; it disappears with them. `Err` holds why it cannot be done here (not
/// root, no `ip`, no `/dev/net/tun`), for the caller to print and skip.
pub fn enter_private_netns() -> std::result::Result<(), String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Err("not running as root".into());
    }
    if !std::path::Path::new("/dev/net/tun").exists() {
        return Err("/dev/net/tun is missing".into());
    }
    // SAFETY: unshare(CLONE_NEWNET) only changes the calling thread's network namespace; it
    // touches no memory of ours.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        return Err(format!(
            "cannot make a network namespace: {}",
            std::io::Error::last_os_error()
        ));
    }
    ip(&["link", "set", "lo", "up"])
        .map(drop)
        .map_err(|e| format!("{e:#}"))
}

/// Runs `ip ARGS` (in the calling thread's namespace).
pub fn ip(args: &[&str]) -> Result<String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .with_context(|| format!("cannot run ip {}", args.join(" ")))?;
    ensure!(
        out.status.success(),
        "ip {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Packets the kernel took from the device (our writes) and handed to it (its reads), as
/// `ip -s link` counts them: one per `write`/`read`, whatever its size.
pub fn device_packets(name: &str) -> Result<(u64, u64)> {
    let json: serde_json::Value = serde_json::from_str(&ip(&["-j", "-s", "link", "show", name])?)?;
    let stats = &json[0]["stats64"];
    let (Some(rx), Some(tx)) = (
        stats["rx"]["packets"].as_u64(),
        stats["tx"]["packets"].as_u64(),
    ) else {
        bail!("no packet counters for {name} in ip -s link");
    };
    Ok((rx, tx))
}

/// What the reflector saw and did.
#[derive(Debug, Default, Clone)]
pub struct ReflectReport {
    /// Successful reads (system calls) from the device.
    pub reads: u64,
    /// IP packets those reads were split into.
    pub packets: u64,
    /// Most packets one read was split into.
    pub max_packets_per_read: usize,
    /// Largest packet seen.
    pub max_packet_len: usize,
    /// TCP packets between the two test addresses.
    pub tcp_packets: u64,
    /// TCP payload bytes in them.
    pub tcp_payload: u64,
    /// Packets that failed a length or checksum check (all are still reflected).
    pub bad: u64,
    /// Everything else (IPv6 neighbour discovery and the like), not reflected.
    pub ignored: u64,
    /// Reads dropped because they could not be split (see [`TunRx::dropped`]).
    pub dropped_reads: u64,
    /// The sink's counters at the end.
    pub sink: BatchStats,
}

/// Reflects packets on `tun` until `stop` is set, waiting for them in an epoll set as the
/// gateway's data path thread does; fails if `limit` passes first. `check` verifies every
/// packet's lengths and checksums (costly: a benchmark leaves it off). `udp` only lends the sink
/// a socket.
pub fn reflect(
    tun: &BatchTun,
    udp: &BatchUdp,
    check: bool,
    stop: &AtomicBool,
    limit: Duration,
) -> Result<ReflectReport> {
    let mut poller = Poller::new().context("epoll")?;
    poller.register(tun, TUN).context("epoll add")?;
    let mut rx = TunRx::new(tun.mtu());
    let mut sink = BatchSink::new(udp, tun);
    let mut report = ReflectReport::default();
    let mut scratch = vec![0u8; 65_535];
    let start = Instant::now();
    // Edge-triggered: after READS_PER_WAKEUP reads more may wait, so read again before waiting.
    let mut more = false;
    while !stop.load(Ordering::Relaxed) {
        ensure!(start.elapsed() < limit, "still reflecting after {limit:?}");
        if !more {
            poller
                .wait(Some(Duration::from_millis(50)))
                .context("epoll wait")?;
        }
        more = false;
        for read in 1..=READS_PER_WAKEUP {
            match tun.try_recv(&mut rx) {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e).context("reading the TUN device"),
            }
            report.reads += 1;
            report.packets += rx.len() as u64;
            report.max_packets_per_read = report.max_packets_per_read.max(rx.len());
            for packet in rx.packets() {
                reflect_one(packet, check, &mut scratch, &mut report, &mut sink);
            }
            more = read == READS_PER_WAKEUP;
        }
        sink.flush();
    }
    sink.flush();
    report.sink = *sink.stats();
    report.dropped_reads = rx.dropped();
    Ok(report)
}

fn reflect_one(
    packet: &[u8],
    check: bool,
    scratch: &mut [u8],
    report: &mut ReflectReport,
    sink: &mut impl Sink,
) {
    report.max_packet_len = report.max_packet_len.max(packet.len());
    let Some((payload, v6)) = tcp_payload_len(packet) else {
        report.ignored += 1;
        return;
    };
    report.tcp_packets += 1;
    if check && (!ip_header_ok(packet, v6) || !tcp_checksum_ok(packet, v6)) {
        report.bad += 1;
    }
    report.tcp_payload += payload as u64;
    let out = &mut scratch[..packet.len()];
    out.copy_from_slice(packet);
    let (src, dst) = if v6 {
        (8..24, 24..40)
    } else {
        (12..16, 16..20)
    };
    out[src.clone()].copy_from_slice(&packet[dst.clone()]);
    out[dst].copy_from_slice(&packet[src]);
    sink.write_tun(out);
}

/// TCP payload length of a TCP packet between the two test addresses (IPv4 or IPv6, without
/// options or extension headers), and whether it is IPv6; else `None`.
pub fn tcp_payload_len(p: &[u8]) -> Option<(usize, bool)> {
    let (v6, iph, addrs, local, remote): (bool, usize, [&[u8]; 2], &[u8], &[u8]) =
        match p.first()? >> 4 {
            4 if p.len() >= 40 && p[9] == 6 => (
                false,
                usize::from(p[0] & 0x0f) * 4,
                [&p[12..16], &p[16..20]],
                &LOCAL.octets()[..],
                &REMOTE.octets()[..],
            ),
            6 if p.len() >= 60 && p[6] == 6 => (
                true,
                40,
                [&p[8..24], &p[24..40]],
                &LOCAL6.octets()[..],
                &REMOTE6.octets()[..],
            ),
            _ => return None,
        };
    if !addrs.contains(&local) || !addrs.contains(&remote) {
        return None;
    }
    let doff = usize::from(p.get(iph + 12)? >> 4) * 4;
    p.len().checked_sub(iph + doff).map(|n| (n, v6))
}

/// The IP header's length field matches the packet, and an IPv4 header checksum is right.
pub fn ip_header_ok(p: &[u8], v6: bool) -> bool {
    if v6 {
        return usize::from(u16::from_be_bytes([p[4], p[5]])) + 40 == p.len();
    }
    let ihl = usize::from(p[0] & 0x0f) * 4;
    usize::from(u16::from_be_bytes([p[2], p[3]])) == p.len() && fold(sum(&p[..ihl], 0)) == 0xffff
}

/// The TCP checksum over the pseudo-header and segment is right.
pub fn tcp_checksum_ok(p: &[u8], v6: bool) -> bool {
    let (ihl, addrs) = if v6 {
        (40, &p[8..40])
    } else {
        (usize::from(p[0] & 0x0f) * 4, &p[12..20])
    };
    let segment = &p[ihl..];
    let Ok(len) = u32::try_from(segment.len()) else {
        return false;
    };
    let pseudo = sum(addrs, 6 + len);
    fold(sum(segment, pseudo)) == 0xffff
}

fn sum(bytes: &[u8], init: u32) -> u32 {
    let mut acc = u64::from(init);
    let mut chunks = bytes.chunks_exact(2);
    for c in &mut chunks {
        acc += u64::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        acc += u64::from(*last) << 8;
    }
    while acc > 0xffff_ffff {
        acc = (acc & 0xffff_ffff) + (acc >> 32);
    }
    u32::try_from(acc).unwrap_or(u32::MAX)
}

fn fold(mut s: u32) -> u32 {
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s
}

/// Result of [`transfer`].
#[derive(Debug, Clone, Copy)]
pub struct Transfer {
    /// Bytes the client wrote.
    pub sent: u64,
    /// Bytes the server read.
    pub received: u64,
    /// Whether the server's checksum of what it read equals the client's of what it wrote.
    pub intact: bool,
    /// From connect to the server's end of stream.
    pub elapsed: Duration,
}

/// What [`transfer`] sends.
#[derive(Debug, Clone, Copy, Default)]
pub struct TransferOpts {
    /// Bytes to send (ignored with `for_time`).
    pub bytes: u64,
    /// Send for this long instead of a fixed amount.
    pub for_time: Option<Duration>,
    /// Checksum both ends (slow in debug builds, and CPU a benchmark wants for the data path).
    pub verify: bool,
    /// The client's TCP_MAXSEG, set before it connects (so both directions use it).
    pub mss: Option<u32>,
    /// Over [`LOCAL6`] and [`REMOTE6`] instead.
    pub v6: bool,
}

/// Starts a listener on [`LOCAL`] and a client to [`REMOTE`] on the same port (the reflector
/// joins them), sends what `opts` says and returns what arrived. Blocking: run it on its own
/// thread.
pub fn transfer(opts: TransferOpts) -> Result<Transfer> {
    let TransferOpts {
        bytes,
        for_time,
        verify,
        mss,
        v6,
    } = opts;
    let (local, remote): (IpAddr, IpAddr) = if v6 {
        (LOCAL6.into(), REMOTE6.into())
    } else {
        (LOCAL.into(), REMOTE.into())
    };
    let listener = TcpListener::bind(SocketAddr::from((local, 0))).context("listen")?;
    let port = listener.local_addr()?.port();
    let server = thread::spawn(move || -> Result<(u64, u64)> {
        let (mut conn, _) = listener.accept().context("accept")?;
        conn.set_read_timeout(Some(Duration::from_secs(30)))?;
        let mut buf = vec![0u8; 256 << 10];
        let (mut n, mut hash) = (0u64, Fnv::new());
        loop {
            let got = conn.read(&mut buf).context("server read")?;
            if got == 0 {
                return Ok((n, hash.0));
            }
            if verify {
                hash.update(&buf[..got]);
            }
            n += got as u64;
        }
    });
    let start = Instant::now();
    let domain = if v6 {
        socket2::Domain::IPV6
    } else {
        socket2::Domain::IPV4
    };
    let socket = socket2::Socket::new(domain, socket2::Type::STREAM, None)?;
    if let Some(mss) = mss {
        socket.set_tcp_mss(mss).context("TCP_MAXSEG")?;
    }
    socket
        .connect_timeout(
            &SocketAddr::from((remote, port)).into(),
            Duration::from_secs(10),
        )
        .context("connect through the TUN device")?;
    let mut conn = TcpStream::from(socket);
    conn.set_write_timeout(Some(Duration::from_secs(30)))?;
    let pattern: Vec<u8> = (0u32..(1 << 20))
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let (mut sent, mut hash) = (0u64, Fnv::new());
    while for_time.map_or(sent < bytes, |t| start.elapsed() < t) {
        let left = usize::try_from(bytes.saturating_sub(sent)).unwrap_or(usize::MAX);
        let chunk = &pattern[..if for_time.is_some() {
            pattern.len()
        } else {
            left.min(pattern.len())
        }];
        conn.write_all(chunk).context("client write")?;
        if verify {
            hash.update(chunk);
        }
        sent += chunk.len() as u64;
    }
    conn.shutdown(std::net::Shutdown::Write)?;
    let (received, server_hash) = server
        .join()
        .map_err(|_| anyhow::anyhow!("server thread panicked"))??;
    Ok(Transfer {
        sent,
        received,
        intact: server_hash == hash.0,
        elapsed: start.elapsed(),
    })
}

/// FNV-1a, 64-bit: enough to tell a corrupted stream from a good one.
struct Fnv(u64);

impl Fnv {
    fn new() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }

    fn update(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}
