//! The tunnel's UDP socket: dual-stack where the host has IPv6, with large kernel buffers.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};

use anyhow::{Context, Result};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;
use tracing::{debug, warn};

/// Kernel buffer size asked for on each direction of the socket.
pub const SOCKET_BUFFER_BYTES: usize = 8 << 20;

/// A UDP socket that speaks both IPv4 and IPv6 when it can.
#[derive(Debug)]
pub struct UdpTransport {
    socket: UdpSocket,
    dual_stack: bool,
}

impl UdpTransport {
    /// Binds `port` on all addresses (0 picks a free port).
    pub fn bind(port: u16) -> Result<Self> {
        let (socket, dual_stack) = bind_socket(port)?;
        let socket = UdpSocket::from_std(socket.into()).context("cannot register UDP socket")?;
        Ok(Self { socket, dual_stack })
    }

    /// The local port.
    pub fn local_port(&self) -> io::Result<u16> {
        Ok(self.socket.local_addr()?.port())
    }

    /// Receives one datagram; the source is given in canonical form (IPv4 as IPv4).
    pub async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        let (n, src) = self.socket.recv_from(buf).await?;
        Ok((n, canonical(src)))
    }

    /// Sends one datagram without waiting; `WouldBlock` when the kernel buffer is full.
    pub fn try_send_to(&self, buf: &[u8], dst: SocketAddr) -> io::Result<usize> {
        self.socket.try_send_to(buf, self.wire_addr(dst))
    }

    fn wire_addr(&self, dst: SocketAddr) -> SocketAddr {
        wire_addr(dst, self.dual_stack)
    }
}

/// The same socket registered with no runtime, one datagram per system call: the gateway's plain
/// data path, whose thread waits for it in its own epoll set ([`crate::poller`]).
#[derive(Debug)]
pub struct PlainUdp {
    socket: std::net::UdpSocket,
    dual_stack: bool,
}

impl PlainUdp {
    /// Binds `port` on all addresses (0 picks a free port), non-blocking.
    pub fn bind(port: u16) -> Result<Self> {
        let (socket, dual_stack) = bind_socket(port)?;
        Ok(Self {
            socket: socket.into(),
            dual_stack,
        })
    }

    /// The local port.
    pub fn local_port(&self) -> io::Result<u16> {
        Ok(self.socket.local_addr()?.port())
    }

    /// Receives one datagram without waiting (`WouldBlock` when none waits); the source is given
    /// in canonical form (IPv4 as IPv4).
    pub fn try_recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        let (n, src) = self.socket.recv_from(buf)?;
        Ok((n, canonical(src)))
    }

    /// Sends one datagram without waiting; `WouldBlock` when the kernel buffer is full.
    pub fn try_send_to(&self, buf: &[u8], dst: SocketAddr) -> io::Result<usize> {
        self.socket.send_to(buf, wire_addr(dst, self.dual_stack))
    }
}

impl std::os::fd::AsRawFd for PlainUdp {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.socket.as_raw_fd()
    }
}

/// Binds `port` (0 picks a free port) on all addresses, dual-stack when the host has IPv6, with
/// large kernel buffers, non-blocking; `true` when dual-stack. Shared with [`crate::batch::udp`].
pub(crate) fn bind_socket(port: u16) -> Result<(Socket, bool)> {
    let (socket, dual_stack) = match bind_dual_stack(port) {
        Ok(s) => (s, true),
        Err(e) => {
            debug!(error = %e, "no IPv6 socket, falling back to IPv4 only");
            let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))
                .context("cannot create UDP socket")?;
            s.bind(&SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)).into())
                .with_context(|| format!("cannot bind UDP port {port} (is it in use?)"))?;
            (s, false)
        }
    };
    grow_buffers(&socket);
    socket.set_nonblocking(true)?;
    Ok((socket, dual_stack))
}

/// The address to hand the kernel for `dst`: IPv4 becomes IPv4-mapped IPv6 on a dual-stack socket.
pub(crate) fn wire_addr(dst: SocketAddr, dual_stack: bool) -> SocketAddr {
    match dst {
        SocketAddr::V4(v4) if dual_stack => {
            SocketAddr::V6(SocketAddrV6::new(v4.ip().to_ipv6_mapped(), v4.port(), 0, 0))
        }
        other => other,
    }
}

fn bind_dual_stack(port: u16) -> io::Result<Socket> {
    let s = Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP))?;
    s.set_only_v6(false)?;
    s.bind(&SocketAddr::from((Ipv6Addr::UNSPECIFIED, port)).into())?;
    Ok(s)
}

/// IPv4-mapped IPv6 addresses become plain IPv4 addresses.
pub fn canonical(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::from((v4, v6.port())),
            None => addr,
        },
        v4 => v4,
    }
}

/// Asks for large socket buffers: as root past the host-wide maximum (SO_*BUFFORCE, per socket,
/// never touching sysctls), otherwise up to that maximum.
fn grow_buffers(socket: &Socket) {
    use std::os::fd::AsRawFd;
    let fd = socket.as_raw_fd();
    for (force, plain) in [
        (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF),
        (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF),
    ] {
        let size = libc::c_int::try_from(SOCKET_BUFFER_BYTES).unwrap_or(libc::c_int::MAX);
        if setsockopt_int(fd, libc::SOL_SOCKET, force, size).is_err() {
            if let Err(e) = setsockopt_int(fd, libc::SOL_SOCKET, plain, size) {
                warn!(error = %e, "cannot size UDP socket buffer");
            }
        }
    }
}

/// Sets an integer socket option.
pub(crate) fn setsockopt_int(
    fd: std::os::fd::RawFd,
    level: libc::c_int,
    opt: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    let len = libc::socklen_t::try_from(size_of::<libc::c_int>())
        .map_err(|_| io::Error::other("socklen"))?;
    // SAFETY: `fd` is an open socket owned by the caller for the duration of the call; the
    // option value points to a live c_int whose size is passed as the option length.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            opt,
            std::ptr::from_ref(&value).cast::<libc::c_void>(),
            len,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
