//! One client transaction's retransmission timer (RFC 8489 §6.2.1).
//!
//! Over UDP a request is sent, then resent after RTO, 2·RTO, 4·RTO, … (the interval doubles each
//! time) until `Rc` requests have gone out; if no response has come `Rm`·RTO after the last one,
//! the transaction has failed. With the RFC's defaults (RTO 500 ms, Rc 7, Rm 16) requests go
//! out at 0, 0.5, 1.5, 3.5, 7.5, 15.5 and 31.5 s and the transaction fails at 39.5 s.

use std::time::{Duration, Instant};

/// Retransmission parameters of a STUN client transaction over UDP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetransmitPolicy {
    /// The first retransmission timeout; later ones double it.
    pub initial_rto: Duration,
    /// `Rc`: how many requests to send in all (the first one and its retransmissions), ≥ 1.
    pub max_requests: u32,
    /// `Rm`: after the last request, wait this many times `initial_rto` for a response.
    pub last_wait_multiplier: u32,
}

impl RetransmitPolicy {
    /// RFC 8489's defaults: RTO 500 ms, Rc 7, Rm 16 (a silent server is given up after 39.5 s).
    /// For the daemon's endpoint discovery and keepalives.
    pub const RFC8489: RetransmitPolicy = RetransmitPolicy {
        initial_rto: Duration::from_millis(500),
        max_requests: 7,
        last_wait_multiplier: 16,
    };

    /// `netcheck`'s: RTO 250 ms, Rc 4, Rm 8 — requests at 0, 0.25, 0.75 and 1.75 s, failure at
    /// 3.75 s. The filtering tests *expect* silence behind most NATs, and a person is waiting;
    /// RFC 8489 lets Rc and Rm be configured.
    pub const NETCHECK: RetransmitPolicy = RetransmitPolicy {
        initial_rto: Duration::from_millis(250),
        max_requests: 4,
        last_wait_multiplier: 8,
    };

    /// How long after the first request a silent transaction fails.
    pub fn give_up_after(&self) -> Duration {
        let requests = self.max_requests.max(1);
        // Sent at 0, RTO, 3·RTO, 7·RTO, …: the last at (2^(Rc-1) - 1)·RTO.
        let last = self
            .initial_rto
            .saturating_mul(2u32.saturating_pow(requests - 1).saturating_sub(1));
        last.saturating_add(self.initial_rto.saturating_mul(self.last_wait_multiplier))
    }
}

impl Default for RetransmitPolicy {
    fn default() -> Self {
        Self::RFC8489
    }
}

/// What a transaction's timer says to do when it fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimerAction {
    /// Not yet due.
    Wait,
    /// Send the request again.
    Retransmit,
    /// No response in time: the transaction has failed.
    GiveUp,
}

/// The timer state of one outstanding request.
#[derive(Debug, Clone)]
pub struct RetransmitTimer {
    policy: RetransmitPolicy,
    /// When the first request went out (for the RTT).
    started: Instant,
    /// Requests sent so far.
    sent: u32,
    /// The current RTO (doubles after each retransmission).
    rto: Duration,
    /// When to act next: the next retransmission, or the deadline after the last request.
    due: Instant,
}

impl RetransmitTimer {
    /// A timer for a request sent (for the first time) at `now`.
    pub fn start(policy: RetransmitPolicy, now: Instant) -> Self {
        let policy = RetransmitPolicy {
            max_requests: policy.max_requests.max(1),
            ..policy
        };
        let mut timer = Self {
            policy,
            started: now,
            sent: 1,
            rto: policy.initial_rto,
            due: now,
        };
        timer.due = timer.next_due(now);
        timer
    }

    fn next_due(&self, sent_at: Instant) -> Instant {
        if self.sent < self.policy.max_requests {
            sent_at + self.rto
        } else {
            sent_at
                + self
                    .policy
                    .initial_rto
                    .saturating_mul(self.policy.last_wait_multiplier)
        }
    }

    /// When [`RetransmitTimer::on_timeout`] wants to be called next.
    pub fn due(&self) -> Instant {
        self.due
    }

    /// Requests sent so far (1 after [`RetransmitTimer::start`]).
    pub fn requests_sent(&self) -> u32 {
        self.sent
    }

    /// The round-trip time of a response arriving at `now`, if it is unambiguous: Karn's rule
    /// takes no sample once the request has been retransmitted.
    pub fn rtt_sample(&self, now: Instant) -> Option<Duration> {
        (self.sent == 1).then(|| now.saturating_duration_since(self.started))
    }

    /// Advances the timer to `now`.
    pub fn on_timeout(&mut self, now: Instant) -> TimerAction {
        if now < self.due {
            return TimerAction::Wait;
        }
        if self.sent >= self.policy.max_requests {
            return TimerAction::GiveUp;
        }
        self.sent += 1;
        self.rto = self.rto.saturating_mul(2);
        // Measured from when the retransmission was due, not when the driver got round to it, so
        // a late wake-up does not stretch the schedule.
        let sent_at = self.due;
        self.due = self.next_due(sent_at);
        TimerAction::Retransmit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// The RFC's own example: requests at 0, 500, 1500, 3500, 7500, 15500, 31500 ms; failure at
    /// 39500 ms.
    #[test]
    fn rfc8489_schedule() {
        let t0 = Instant::now();
        let mut timer = RetransmitTimer::start(RetransmitPolicy::RFC8489, t0);
        let mut sends = vec![0u64];
        let mut now;
        loop {
            now = timer.due();
            match timer.on_timeout(now) {
                TimerAction::Retransmit => sends.push((now - t0).as_millis() as u64),
                TimerAction::GiveUp => break,
                TimerAction::Wait => panic!("due but waiting"),
            }
        }
        assert_eq!(sends, [0, 500, 1500, 3500, 7500, 15500, 31500]);
        assert_eq!(now - t0, ms(39_500));
        assert_eq!(RetransmitPolicy::RFC8489.give_up_after(), ms(39_500));
        assert_eq!(timer.requests_sent(), 7);
    }

    #[test]
    fn netcheck_schedule() {
        assert_eq!(RetransmitPolicy::NETCHECK.give_up_after(), ms(3_750));
        let t0 = Instant::now();
        let mut timer = RetransmitTimer::start(RetransmitPolicy::NETCHECK, t0);
        let mut events = Vec::new();
        let mut now = t0;
        // Poll every 10 ms, as a coarse driver might.
        while now < t0 + ms(5_000) {
            now += ms(10);
            match timer.on_timeout(now) {
                TimerAction::Wait => {}
                a => events.push(((now - t0).as_millis() as u64, a)),
            }
            if matches!(events.last(), Some((_, TimerAction::GiveUp))) {
                break;
            }
        }
        assert_eq!(
            events,
            [
                (250, TimerAction::Retransmit),
                (750, TimerAction::Retransmit),
                (1750, TimerAction::Retransmit),
                (3750, TimerAction::GiveUp)
            ]
        );
    }

    #[test]
    fn early_calls_wait_and_late_calls_keep_the_schedule() {
        let t0 = Instant::now();
        let mut timer = RetransmitTimer::start(RetransmitPolicy::RFC8489, t0);
        assert_eq!(timer.on_timeout(t0 + ms(499)), TimerAction::Wait);
        // Woken 200 ms late: retransmit now, but the next one is still due at 1500 ms.
        assert_eq!(timer.on_timeout(t0 + ms(700)), TimerAction::Retransmit);
        assert_eq!(timer.due(), t0 + ms(1500));
    }

    #[test]
    fn karn() {
        let t0 = Instant::now();
        let mut timer = RetransmitTimer::start(RetransmitPolicy::RFC8489, t0);
        assert_eq!(timer.rtt_sample(t0 + ms(30)), Some(ms(30)));
        assert_eq!(timer.on_timeout(t0 + ms(500)), TimerAction::Retransmit);
        assert_eq!(timer.rtt_sample(t0 + ms(530)), None);
    }

    #[test]
    fn one_request_only() {
        let policy = RetransmitPolicy {
            initial_rto: ms(100),
            max_requests: 0, // treated as 1
            last_wait_multiplier: 3,
        };
        assert_eq!(policy.give_up_after(), ms(300));
        let t0 = Instant::now();
        let mut timer = RetransmitTimer::start(policy, t0);
        assert_eq!(timer.due(), t0 + ms(300));
        assert_eq!(timer.on_timeout(t0 + ms(300)), TimerAction::GiveUp);
    }
}
