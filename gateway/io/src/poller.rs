//! The data path thread's wait: one epoll set (through `mio`) holding the TUN device, the UDP
//! socket and a [`Waker`] that the tokio side rings when it has a command.
//!
//! Why not tokio: a tunnel carrying a ping is idle between packets, and every packet then begins
//! with a wake-up. Through tokio's reactor that wake-up also ran the driver, the scheduler, the
//! task's `select!` and its timer: callgrind counted 16,200 instructions per ping on one gateway,
//! 9,600 with this thread (plain path 5,700), and idle interleaved ping runs went from 0.445 to
//! 0.387 ms median. Here a wake-up is `epoll_wait` returning and one read.
//!
//! Registrations are edge-triggered: after an event the owner reads until the device is empty
//! (`WouldBlock`, or a `recvmmsg` that returns fewer messages than it had room for), or keeps
//! a note that more may be waiting and polls again with a zero timeout.

use std::io;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};

/// Token of the TUN device.
pub const TUN: Token = Token(0);
/// Token of the UDP socket.
pub const UDP: Token = Token(1);
/// Token of the waker.
pub const WAKE: Token = Token(2);

/// What one [`Poller::wait`] saw.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Readiness {
    /// The TUN device has packets (or an error) to read.
    pub tun: bool,
    /// The UDP socket has datagrams (or an error) to read.
    pub udp: bool,
    /// The waker rang.
    pub woken: bool,
}

/// An epoll set with room for the data path's three sources.
#[derive(Debug)]
pub struct Poller {
    poll: Poll,
    events: Events,
}

impl Poller {
    /// A new, empty epoll set.
    pub fn new() -> io::Result<Self> {
        Ok(Self {
            poll: Poll::new()?,
            events: Events::with_capacity(8),
        })
    }

    /// A waker for this set (reported as [`Readiness::woken`]); only one may exist per set.
    pub fn waker(&self) -> io::Result<Arc<Waker>> {
        Waker::new(self.poll.registry(), WAKE).map(Arc::new)
    }

    /// Adds a non-blocking descriptor, for reading, under `token` ([`TUN`] or [`UDP`]).
    pub fn register(&self, source: &impl AsRawFd, token: Token) -> io::Result<()> {
        let fd = source.as_raw_fd();
        self.poll
            .registry()
            .register(&mut SourceFd(&fd), token, Interest::READABLE)
    }

    /// Waits until a source is ready or `timeout` passes (`None`: no limit; rounded up to whole
    /// milliseconds by epoll). A signal's interruption returns an empty [`Readiness`].
    pub fn wait(&mut self, timeout: Option<Duration>) -> io::Result<Readiness> {
        let mut ready = Readiness::default();
        match self.poll.poll(&mut self.events, timeout) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(ready),
            Err(e) => return Err(e),
        }
        for event in &self.events {
            match event.token() {
                TUN => ready.tun = true,
                UDP => ready.udp = true,
                _ => ready.woken = true,
            }
        }
        Ok(ready)
    }
}
