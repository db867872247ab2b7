//! Per-source-address limit on handshake initiations.
//!
//! WireGuard's cookie mechanism (answered by boringtun's shared `RateLimiter`) proves that a
//! sender owns its source address once the gateway is under load; this limiter caps how many
//! initiations one address may make per second, as the Linux kernel implementation does
//! (20 per second, bursts of 5), so one source cannot monopolise the expensive Diffie-Hellman
//! work. Sans-IO: the caller passes `now`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Sustained initiations per second allowed from one source address.
pub const INITIATIONS_PER_SECOND: u32 = 20;
/// Initiations one source may send in a burst.
pub const INITIATIONS_BURSTABLE: u32 = 5;
/// Most source addresses tracked at once; beyond this, new sources are refused until old
/// entries age out (the kernel does the same rather than grow without bound).
pub const MAX_TRACKED_SOURCES: usize = 8192;

const NANOS_PER_PACKET: u64 = 1_000_000_000 / INITIATIONS_PER_SECOND as u64;
const BURST_NANOS: u64 = NANOS_PER_PACKET * INITIATIONS_BURSTABLE as u64;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Accumulated credit, in nanoseconds of allowance (capped at `BURST_NANOS`).
    tokens: u64,
    last: Instant,
}

/// Token buckets keyed by source address.
#[derive(Debug, Default)]
pub struct SourceRateLimiter {
    buckets: HashMap<IpAddr, Bucket>,
}

impl SourceRateLimiter {
    /// An empty limiter.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether an initiation from `src` at `now` is allowed; consumes one token if so.
    pub fn allow(&mut self, src: IpAddr, now: Instant) -> bool {
        if let Some(b) = self.buckets.get_mut(&src) {
            let elapsed = duration_nanos(now.saturating_duration_since(b.last));
            b.tokens = b.tokens.saturating_add(elapsed).min(BURST_NANOS);
            b.last = now;
            if b.tokens >= NANOS_PER_PACKET {
                b.tokens -= NANOS_PER_PACKET;
                return true;
            }
            return false;
        }
        if self.buckets.len() >= MAX_TRACKED_SOURCES {
            return false;
        }
        self.buckets.insert(
            src,
            Bucket {
                tokens: BURST_NANOS - NANOS_PER_PACKET,
                last: now,
            },
        );
        true
    }

    /// Forgets sources whose bucket has been full for a second; call about once a second.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.buckets
            .retain(|_, b| now.saturating_duration_since(b.last) < Duration::from_secs(1));
    }

    /// Number of tracked sources.
    pub fn tracked(&self) -> usize {
        self.buckets.len()
    }
}

fn duration_nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_steady_rate() {
        let mut rl = SourceRateLimiter::new();
        let a: IpAddr = "192.0.2.1".parse().expect("addr");
        let b: IpAddr = "192.0.2.2".parse().expect("addr");
        let t0 = Instant::now();
        let allowed = (0..100).filter(|_| rl.allow(a, t0)).count();
        assert_eq!(allowed, INITIATIONS_BURSTABLE as usize);
        // Another source is not affected.
        assert!(rl.allow(b, t0));
        // One second later: 20 more tokens, capped at the burst size.
        let t1 = t0 + Duration::from_secs(1);
        let allowed = (0..100).filter(|_| rl.allow(a, t1)).count();
        assert_eq!(allowed, INITIATIONS_BURSTABLE as usize);
        // Steady: one every 50 ms is always allowed.
        let mut t = t1;
        for _ in 0..50 {
            t += Duration::from_millis(50);
            assert!(rl.allow(a, t));
        }
    }

    #[test]
    fn idle_sources_are_forgotten() {
        let mut rl = SourceRateLimiter::new();
        let t0 = Instant::now();
        for i in 0..10u8 {
            rl.allow(IpAddr::from([198, 51, 100, i]), t0);
        }
        assert_eq!(rl.tracked(), 10);
        rl.handle_timeout(t0 + Duration::from_millis(500));
        assert_eq!(rl.tracked(), 10);
        rl.handle_timeout(t0 + Duration::from_secs(2));
        assert_eq!(rl.tracked(), 0);
    }
}
