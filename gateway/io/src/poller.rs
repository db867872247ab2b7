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
use std::time::{Duration, Instant};

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

/// When the data path polls instead of sleeping (`busy_poll_us` in `[interface]`).
///
/// A packet that arrives after the thread has slept for a while pays for the wake-up of an idle
/// CPU (on this 2-core VM, tens of microseconds each way: a ping across two gateways ran at
/// 0.13–0.20 ms average when pings were 2 ms apart, 0.31–0.56 ms when they were 10–50 ms apart).
/// The answer to such a packet (a ping's echo, a TCP ACK, a DNS reply) often comes back within a
/// few hundred microseconds; polling for that long keeps the CPU awake to take it at once.
///
/// The window opens only on a packet from the TUN device that ends a sleep of at least
/// [`BusyPoll::COLD_SLEEP`]: the local host sent something, and its answer will come from the
/// network, so nothing on this machine needs the CPU meanwhile. It closes when a packet goes to
/// the TUN device (the answer arrived; the process it wakes needs a CPU, and one that polls is
/// busy: on a 2-vCPU VM the kernel then wakes that process on the other, halted vCPU, 43–53 µs
/// from the TUN write to ping's receive against 10–14 µs). A datagram that ends a sleep opens
/// none: its answer comes from a local process, which needs the CPU. The window is not extended
/// by later input, so polling costs at most `budget` per such sleep: at most
/// `budget / (budget + COLD_SLEEP)` of a core (9% with 200 µs), none while idle, and none under
/// steady traffic, whose sleeps are short. While polling, the thread gives way to any other
/// runnable thread on its CPU before each look.
#[derive(Debug, Clone)]
pub struct BusyPoll {
    budget: Duration,
    /// The last sleep was long enough to open a window on the next input.
    cold: bool,
    /// The end of the open window, if any.
    until: Option<Instant>,
}

impl BusyPoll {
    /// A sleep at least this long opens a window on the next input. Shorter gaps keep the CPU
    /// warm (the 2 ms row above) and gain little from polling.
    pub const COLD_SLEEP: Duration = Duration::from_millis(2);

    /// Polls for up to `budget` after input that follows a long sleep; `Duration::ZERO` never
    /// polls.
    pub fn new(budget: Duration) -> Self {
        Self {
            budget,
            cold: false,
            until: None,
        }
    }

    /// Whether to look again without sleeping at `now`.
    pub fn polling(&self, now: Instant) -> bool {
        self.until.is_some_and(|until| now < until)
    }

    /// The thread slept (blocked in its wait) for `slept`.
    pub fn slept(&mut self, slept: Duration) {
        self.cold = slept >= Self::COLD_SLEEP;
        self.until = None;
    }

    /// Input arrived at `now`, from the TUN device (`from_tun`) or the UDP socket: the first
    /// after a long sleep opens the window if it came from the TUN device.
    pub fn input(&mut self, now: Instant, from_tun: bool) {
        if self.cold && from_tun && !self.budget.is_zero() {
            self.until = Some(now + self.budget);
        }
        self.cold = false;
    }

    /// A packet went to the TUN device: closes the window, so that the process it wakes can
    /// have this CPU.
    pub fn delivered(&mut self) {
        self.until = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BUDGET: Duration = Duration::from_micros(200);

    #[test]
    fn a_long_sleep_then_input_opens_one_window() {
        let t0 = Instant::now();
        let mut busy = BusyPoll::new(BUDGET);
        assert!(!busy.polling(t0));
        busy.slept(Duration::from_millis(10));
        assert!(!busy.polling(t0), "no window before input");
        busy.input(t0, true);
        assert!(busy.polling(t0));
        assert!(busy.polling(t0 + Duration::from_micros(199)));
        // Later input does not extend the window.
        busy.input(t0 + Duration::from_micros(150), true);
        assert!(!busy.polling(t0 + BUDGET));
    }

    #[test]
    fn a_datagram_after_a_sleep_opens_none() {
        let t0 = Instant::now();
        let mut busy = BusyPoll::new(BUDGET);
        busy.slept(Duration::from_millis(10));
        busy.input(t0, false);
        assert!(!busy.polling(t0), "the answer comes from a local process");
        busy.input(t0, true);
        assert!(
            !busy.polling(t0),
            "only the input that ends the sleep counts"
        );
    }

    #[test]
    fn delivering_to_the_tun_device_closes_the_window() {
        let t0 = Instant::now();
        let mut busy = BusyPoll::new(BUDGET);
        busy.slept(Duration::from_millis(10));
        busy.input(t0, true);
        assert!(busy.polling(t0 + Duration::from_micros(50)));
        busy.delivered();
        assert!(!busy.polling(t0 + Duration::from_micros(60)));
    }

    #[test]
    fn short_sleeps_and_zero_budget_never_poll() {
        let t0 = Instant::now();
        let mut busy = BusyPoll::new(BUDGET);
        busy.slept(BusyPoll::COLD_SLEEP - Duration::from_micros(1));
        busy.input(t0, true);
        assert!(!busy.polling(t0), "a short sleep leaves the CPU warm");

        let mut off = BusyPoll::new(Duration::ZERO);
        off.slept(Duration::from_secs(1));
        off.input(t0, true);
        assert!(!off.polling(t0));
    }

    #[test]
    fn a_sleep_closes_the_window() {
        let t0 = Instant::now();
        let mut busy = BusyPoll::new(BUDGET);
        busy.slept(Duration::from_millis(5));
        busy.input(t0, true);
        busy.slept(Duration::from_micros(50));
        assert!(!busy.polling(t0 + Duration::from_micros(60)));
        busy.input(t0 + Duration::from_micros(60), true);
        assert!(
            !busy.polling(t0 + Duration::from_micros(60)),
            "that sleep was short"
        );
    }
}
