//! The tunnel's UDP socket, batched: `recvmmsg` with UDP GRO in, `sendmsg` with UDP GSO out,
//! through `quinn-udp`.
//!
//! Same socket as [`crate::udp::UdpTransport`]: dual-stack where the host has IPv6 (IPv4 peers
//! are reached through IPv4-mapped addresses and reported as plain IPv4), large kernel buffers.

use std::io::{self, IoSliceMut};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};

use anyhow::{Context, Result};
use quinn_udp::{RecvMeta, Transmit, UdpSocketState, BATCH_SIZE};
use tracing::{debug, info};

use crate::udp::{bind_socket, canonical, setsockopt_int, wire_addr};

/// Largest UDP payload one GSO `sendmsg` may carry: the IP length field's 65,535 bytes less the
/// largest IP header (IPv6, 40) and the UDP header (8).
pub const MAX_GSO_BYTES: usize = 65_535 - 40 - 8;
/// Most segments one GSO `sendmsg` may carry (`UDP_MAX_SEGMENTS` in older kernels; 6.x allows
/// more, but 64 datagrams of a 1,420-byte MTU already exceed [`MAX_GSO_BYTES`]).
pub const MAX_GSO_SEGMENTS: usize = 64;
/// Control buffer of [`BatchUdp::try_recv_one`], in 8-byte words. Only the GRO segment size is
/// asked for ([`restore_defaults`] turns packet info and TOS off), but a truncated buffer would
/// lose it and mis-split a GRO run, so there is room for all the control messages quinn-udp can
/// turn on.
const CONTROL_WORDS: usize = 32;
/// Bytes per receive slot: one GRO-coalesced message is at most 64 KiB (`GRO_LEGACY_MAX_SIZE`),
/// and a lone datagram at most 65,507 bytes.
pub const RECV_SLOT_BYTES: usize = 1 << 16;

/// A UDP socket that moves many datagrams per system call. Non-blocking and registered with no
/// runtime: the data path thread waits for it in its own epoll set ([`crate::poller`]).
#[derive(Debug)]
pub struct BatchUdp {
    socket: UdpSocket,
    state: UdpSocketState,
    dual_stack: bool,
}

impl BatchUdp {
    /// Binds `port` on all addresses (0 picks a free port).
    pub fn bind(port: u16) -> Result<Self> {
        let (socket, dual_stack) = bind_socket(port)?;
        let socket: UdpSocket = socket.into();
        let state = UdpSocketState::new((&socket).into())
            .context("cannot set up the UDP socket for GSO/GRO")?;
        restore_defaults(&socket, dual_stack);
        info!(
            port = socket.local_addr().map(|a| a.port()).unwrap_or(0),
            dual_stack,
            gso_segments = state.max_gso_segments(),
            gro_segments = state.gro_segments(),
            "UDP socket bound"
        );
        Ok(Self {
            socket,
            state,
            dual_stack,
        })
    }

    /// The local port.
    pub fn local_port(&self) -> io::Result<u16> {
        Ok(self.socket.local_addr()?.port())
    }

    /// The local address (the unspecified address and the bound port).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Whether IPv4 peers are reached through IPv4-mapped IPv6 addresses.
    pub fn is_dual_stack(&self) -> bool {
        self.dual_stack
    }

    /// Datagrams one send may carry: 1 when the kernel or the route does not do UDP GSO (it also
    /// drops to 1, for good, after the kernel refuses a GSO send with `EIO` or `EINVAL`).
    pub fn max_gso_segments(&self) -> usize {
        self.state.max_gso_segments().min(MAX_GSO_SEGMENTS)
    }

    /// Datagrams the kernel may coalesce into one received message (1 without UDP GRO).
    pub fn gro_segments(&self) -> usize {
        self.state.gro_segments()
    }

    /// Receives up to `rx`'s capacity of messages with one `recvmmsg`, replacing what `rx` held;
    /// returns the number of datagrams (a GRO message holds several). `WouldBlock` when none
    /// waits. Errors that concern one earlier send (ICMP unreachable as `ECONNREFUSED`) come back
    /// here too: they are not fatal.
    pub fn try_recv(&self, rx: &mut UdpRx) -> io::Result<usize> {
        rx.messages = 0;
        let mut slots = rx.buf.chunks_mut(RECV_SLOT_BYTES);
        let mut iovs: [IoSliceMut<'_>; BATCH_SIZE] =
            std::array::from_fn(|_| IoSliceMut::new(slots.next().unwrap_or_default()));
        let n = self
            .state
            .recv((&self.socket).into(), &mut iovs, &mut rx.meta)?;
        rx.messages = n;
        Ok(rx.datagram_count())
    }

    /// Receives one message (one datagram, or one GRO-coalesced run) with a single `recvmsg`
    /// into `rx`'s first slot, replacing what `rx` held; returns the number of datagrams.
    /// `WouldBlock` when none waits.
    ///
    /// The first read after the thread wakes: `recvmmsg` through `quinn-udp` sets up a header
    /// and control buffer per slot and, cold, costs about twice as much.
    pub fn try_recv_one(&self, rx: &mut UdpRx) -> io::Result<usize> {
        rx.messages = 0;
        let slot = &mut rx.buf[..RECV_SLOT_BYTES];
        let mut iov = libc::iovec {
            iov_base: slot.as_mut_ptr().cast(),
            iov_len: slot.len(),
        };
        let mut name = socket2::SockAddrStorage::zeroed();
        let mut control = [0_u64; CONTROL_WORDS];
        // SAFETY: all-zero bytes are a valid `msghdr`.
        let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
        hdr.msg_name = (&raw mut name).cast();
        hdr.msg_namelen = name.size_of();
        hdr.msg_iov = &raw mut iov;
        hdr.msg_iovlen = 1;
        hdr.msg_control = control.as_mut_ptr().cast();
        hdr.msg_controllen = size_of_val(&control);
        // SAFETY: every pointer in `hdr` points at a live local or at `slot`, with its length.
        let n = unsafe { libc::recvmsg(self.socket.as_raw_fd(), &raw mut hdr, 0) };
        let len = usize::try_from(n).map_err(|_| io::Error::last_os_error())?;
        // SAFETY: the kernel wrote `msg_namelen` bytes of a socket address into `name`.
        let addr = unsafe { socket2::SockAddr::new(name, hdr.msg_namelen) }
            .as_socket()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no source address"))?;
        let mut stride = len;
        // SAFETY: `hdr` is the header `recvmsg` filled; the CMSG_* walk stays inside
        // `msg_controllen` bytes of `control`, and UDP_GRO's data is one int.
        unsafe {
            let mut cmsg = libc::CMSG_FIRSTHDR(&raw const hdr);
            while !cmsg.is_null() {
                if (*cmsg).cmsg_level == libc::SOL_UDP && (*cmsg).cmsg_type == libc::UDP_GRO {
                    let size =
                        std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::c_int>());
                    stride = usize::try_from(size).unwrap_or(len).max(1);
                }
                cmsg = libc::CMSG_NXTHDR(&raw const hdr, cmsg);
            }
        }
        let meta = &mut rx.meta[0];
        meta.addr = addr;
        meta.len = len;
        meta.stride = stride;
        rx.messages = 1;
        Ok(rx.datagram_count())
    }

    /// Sends `contents`, datagrams of `segment_size` bytes back to back (the last may be
    /// shorter), to `dst`: one `sendto` for a single datagram, one `sendmsg` with UDP GSO for more
    /// when the socket can, else one `sendmsg` per datagram. Returns the number of system calls
    /// made. Does not wait: `WouldBlock` when the socket buffer is full (the datagrams not yet
    /// sent are dropped).
    ///
    /// `contents` must hold at most [`BatchUdp::max_gso_segments`] datagrams and
    /// [`MAX_GSO_BYTES`] bytes to go out in one call; [`super::BatchSink`] cuts its runs so.
    pub fn try_send(
        &self,
        dst: SocketAddr,
        contents: &[u8],
        segment_size: usize,
    ) -> io::Result<usize> {
        let destination = wire_addr(dst, self.dual_stack);
        let segments = contents.len().div_ceil(segment_size.max(1));
        if segments > 1 && self.max_gso_segments() >= segments && contents.len() <= MAX_GSO_BYTES {
            let transmit = Transmit {
                destination,
                ecn: None,
                contents,
                segment_size: Some(segment_size),
                src_ip: None,
            };
            match self.send_one(&transmit) {
                Ok(()) => return Ok(1),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Err(e),
                // quinn-udp turns GSO off for good after EIO/EINVAL (a NIC or route that cannot
                // segment): resend this run one datagram at a time.
                Err(e) if self.state.max_gso_segments() == 1 => {
                    info!(%dst, error = %e, "UDP GSO refused by the kernel; sending one datagram per call");
                }
                Err(e) => return Err(e),
            }
        }
        if segments == 1 {
            // One datagram (a ping, an ACK, a handshake): plain `sendto`, without the message
            // header and control messages `quinn-udp` builds for each `sendmsg`. Interleaved
            // lab runs, 3 x 160 pings: median RTT 0.262 / 0.273 / 0.262 ms vs 0.273 / 0.278 /
            // 0.277 ms through `quinn-udp`.
            return self.socket.send_to(contents, destination).map(|_| 1);
        }
        let mut calls = 0;
        for datagram in contents.chunks(segment_size.max(1)) {
            let transmit = Transmit {
                destination,
                ecn: None,
                contents: datagram,
                segment_size: None,
                src_ip: None,
            };
            calls += 1;
            self.send_one(&transmit)?;
        }
        Ok(calls)
    }

    /// One `sendmsg` on the non-blocking descriptor: a sink that never waits only wants the
    /// kernel's answer.
    fn send_one(&self, transmit: &Transmit<'_>) -> io::Result<()> {
        self.state.try_send((&self.socket).into(), transmit)
    }
}

impl AsRawFd for BatchUdp {
    fn as_raw_fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }
}

/// Undoes the socket options `quinn-udp` sets for QUIC that a WireGuard tunnel does not want:
/// `IP_PMTUDISC_PROBE` / `IPV6_DONTFRAG` (which turn an oversize datagram into `EMSGSIZE` instead
/// of a fragment, as the kernel's default and today's socket allow), `SO_TIMESTAMPNS` (which
/// would timestamp every received packet for nothing), and the packet-info and TOS / traffic
/// class control messages: the data path reads neither the destination address nor ECN, and
/// they made a cold receive about 6 us slower (lab, per-stage timestamps: a lone `recvmsg` took
/// 13.8 us from wake-up with them, 7.6 us without).
fn restore_defaults(socket: &UdpSocket, dual_stack: bool) {
    let fd = socket.as_raw_fd();
    let mut opts = vec![
        (
            libc::IPPROTO_IP,
            libc::IP_MTU_DISCOVER,
            libc::IP_PMTUDISC_WANT,
        ),
        (libc::SOL_SOCKET, libc::SO_TIMESTAMPNS, 0),
        (libc::IPPROTO_IP, libc::IP_PKTINFO, 0),
        (libc::IPPROTO_IP, libc::IP_RECVTOS, 0),
    ];
    if dual_stack {
        opts.push((
            libc::IPPROTO_IPV6,
            libc::IPV6_MTU_DISCOVER,
            libc::IPV6_PMTUDISC_WANT,
        ));
        opts.push((libc::IPPROTO_IPV6, libc::IPV6_DONTFRAG, 0));
        opts.push((libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO, 0));
        opts.push((libc::IPPROTO_IPV6, libc::IPV6_RECVTCLASS, 0));
    }
    for (level, opt, value) in opts {
        if let Err(e) = setsockopt_int(fd, level, opt, value) {
            debug!(level, opt, error = %e, "cannot restore a UDP socket option");
        }
    }
}

/// Receive buffers for [`BatchUdp::try_recv`]: [`BATCH_SIZE`] slots of [`RECV_SLOT_BYTES`],
/// allocated once.
pub struct UdpRx {
    buf: Vec<u8>,
    meta: [RecvMeta; BATCH_SIZE],
    messages: usize,
}

impl Default for UdpRx {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for UdpRx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UdpRx")
            .field("messages", &self.messages)
            .field("datagrams", &self.datagram_count())
            .finish_non_exhaustive()
    }
}

impl UdpRx {
    /// Allocates the slots (2 MiB).
    pub fn new() -> Self {
        Self {
            buf: vec![0; BATCH_SIZE * RECV_SLOT_BYTES],
            meta: [RecvMeta::default(); BATCH_SIZE],
            messages: 0,
        }
    }

    /// Messages (system-level receive units; one GRO message holds many datagrams) received by
    /// the last call.
    pub fn message_count(&self) -> usize {
        self.messages
    }

    /// Datagrams received by the last call.
    pub fn datagram_count(&self) -> usize {
        self.meta[..self.messages]
            .iter()
            .map(|m| {
                if m.stride == 0 {
                    1
                } else {
                    m.len.div_ceil(m.stride)
                }
            })
            .sum()
    }

    /// The datagrams received by the last call, in order, each with its source (IPv4 as IPv4).
    pub fn datagrams(&self) -> impl Iterator<Item = (SocketAddr, &[u8])> + '_ {
        self.meta[..self.messages]
            .iter()
            .zip(self.buf.chunks(RECV_SLOT_BYTES))
            .flat_map(|(meta, slot)| {
                let src = canonical(meta.addr);
                let data = &slot[..meta.len.min(slot.len())];
                let stride = if meta.stride == 0 {
                    data.len().max(1)
                } else {
                    meta.stride
                };
                data.chunks(stride).map(move |d| (src, d))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::counting_alloc::allocations_in;

    /// `try_recv_one` takes one message: a lone datagram with its source as plain IPv4, a GSO
    /// run as one or more GRO messages whose datagrams keep their boundaries, then `WouldBlock`.
    #[test]
    fn one_message_reads() {
        let (a, b) = (
            BatchUdp::bind(0).expect("bind"),
            BatchUdp::bind(0).expect("bind"),
        );
        let to_b = SocketAddr::from(([127, 0, 0, 1], b.local_port().expect("port")));
        let from_a = SocketAddr::from(([127, 0, 0, 1], a.local_port().expect("port")));
        let mut rx = UdpRx::new();
        let mut poller = crate::poller::Poller::new().expect("epoll");
        poller.register(&b, crate::poller::UDP).expect("register");
        let mut recv_one = |rx: &mut UdpRx| loop {
            match b.try_recv_one(rx) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    poller
                        .wait(Some(std::time::Duration::from_secs(1)))
                        .expect("wait");
                }
                other => return other.expect("recv"),
            }
        };
        a.try_send(to_b, b"ping", 4).expect("send");
        assert_eq!(recv_one(&mut rx), 1);
        assert_eq!(rx.datagrams().collect::<Vec<_>>(), [(from_a, &b"ping"[..])]);

        const SEGMENT: usize = 1200;
        let run: Vec<u8> = (0..8 * SEGMENT).map(|i| (i / SEGMENT) as u8).collect();
        a.try_send(to_b, &run, SEGMENT).expect("send run");
        let mut seen = Vec::new();
        while seen.len() < 8 {
            recv_one(&mut rx);
            for (src, d) in rx.datagrams() {
                assert_eq!((src, d.len()), (from_a, SEGMENT));
                assert!(d.iter().all(|&x| x == d[0]));
                seen.push(d[0]);
            }
        }
        assert_eq!(seen, (0..8).collect::<Vec<u8>>());
        assert_eq!(
            b.try_recv_one(&mut rx).map_err(|e| e.kind()).err(),
            Some(io::ErrorKind::WouldBlock)
        );
    }

    /// Runs of GSO sends and `recvmmsg` batches over loopback: after the first batch, sending
    /// and receiving allocate nothing (waiting in epoll included).
    #[test]
    fn loopback_batches_allocate_nothing() {
        const DATAGRAM: usize = 1452;
        const RUN: usize = 32;
        let mut poller = crate::poller::Poller::new().expect("epoll");
        let (a, b) = (
            BatchUdp::bind(0).expect("bind"),
            BatchUdp::bind(0).expect("bind"),
        );
        let to_b = SocketAddr::from(([127, 0, 0, 1], b.local_port().expect("port")));
        let contents = vec![0x5a_u8; DATAGRAM * RUN];
        poller.register(&b, crate::poller::UDP).expect("register");
        let mut rx = UdpRx::new();
        let mut batch = || {
            let sent = a.try_send(to_b, &contents, DATAGRAM).expect("send");
            let mut got = 0;
            while got < RUN {
                match b.try_recv(&mut rx) {
                    Ok(n) => got += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        poller
                            .wait(Some(std::time::Duration::from_secs(1)))
                            .expect("wait");
                        continue;
                    }
                    Err(e) => panic!("recv: {e}"),
                }
                assert!(rx
                    .datagrams()
                    .all(|(_, d)| d.len() == DATAGRAM && d[0] == 0x5a));
            }
            assert_eq!(got, RUN, "loopback lost datagrams");
            sent
        };
        for _ in 0..10 {
            batch();
        }
        let (calls, n) = allocations_in(|| (0..200).map(|_| batch()).sum::<usize>());
        assert!(calls >= 200);
        assert_eq!(
            n, 0,
            "{n} allocations in 200 batches of {RUN} datagrams sent and received"
        );
    }
}
