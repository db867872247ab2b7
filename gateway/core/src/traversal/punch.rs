//! The hole-punch scheduler for one peer: which candidate to probe when, which path to use.
//!
//! Pure state, no crypto and no I/O: [`Punch::poll_probes`] says where to send probes (the
//! caller seals them), [`Punch::handle_ack`] takes the acks that authenticated, and
//! [`Punch::handle_timeout`] moves to the relay when no pair answered in time.
//!
//! Schedule: when new candidates arrive, every candidate is probed every [`PunchConfig::fast`]
//! for [`PunchConfig::fast_for`]; then the interval doubles up to [`PunchConfig::slow_max`] and
//! stays there (background probing while relayed). If no ack came [`PunchConfig::relay_after`]
//! after the round started, the path becomes [`Path::Relayed`]. The first ack selects
//! [`Path::Direct`] with the ack's source address (which is the address the peer's NAT really
//! uses towards us). While direct, the endpoint alone is probed every
//! [`PunchConfig::keepalive`], which also holds the NAT mappings open; without an ack for
//! [`PunchConfig::path_timeout`] the path is lost and a new round starts.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Timers of the scheduler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PunchConfig {
    /// Probe interval at the start of a round.
    pub fast: Duration,
    /// How long a round probes at the fast interval.
    pub fast_for: Duration,
    /// Longest interval between background probes.
    pub slow_max: Duration,
    /// When to fall back to the relay if nothing answered.
    pub relay_after: Duration,
    /// Probe interval on a direct path (keepalive and liveness check).
    pub keepalive: Duration,
    /// A direct path with no ack for this long is lost.
    pub path_timeout: Duration,
    /// How long an unanswered probe's txid is remembered (acks later than this are ignored).
    pub ack_window: Duration,
}

impl Default for PunchConfig {
    fn default() -> Self {
        Self {
            fast: Duration::from_millis(200),
            fast_for: Duration::from_secs(5),
            slow_max: Duration::from_secs(30),
            relay_after: Duration::from_secs(5),
            keepalive: Duration::from_secs(10),
            path_timeout: Duration::from_secs(35),
            ack_window: Duration::from_secs(10),
        }
    }
}

/// How packets to the peer travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    /// Not decided yet (the first round is running).
    Unknown,
    /// Straight to the peer at this address.
    Direct(SocketAddr),
    /// Through the rendezvous gateway.
    Relayed,
}

/// Most remote candidates kept (reported ones plus addresses probes came from).
const MAX_REMOTE: usize = 24;

/// One peer's hole-punching state.
#[derive(Debug)]
pub struct Punch {
    config: PunchConfig,
    /// Candidates from the rendezvous.
    reported: Vec<SocketAddr>,
    /// Addresses the peer's probes came from (peer-reflexive).
    learned: Vec<SocketAddr>,
    round_started: Instant,
    next_probe: Instant,
    /// The interval used for the next probe after the fast phase.
    slow: Duration,
    outstanding: HashMap<u64, (SocketAddr, Instant)>,
    path: Path,
    last_ack: Instant,
    direct_since: Option<Instant>,
}

impl Punch {
    /// A scheduler with no candidates yet; the relay deadline runs from `now`.
    pub fn new(config: PunchConfig, now: Instant) -> Self {
        Self {
            config,
            reported: Vec::new(),
            learned: Vec::new(),
            round_started: now,
            next_probe: now,
            slow: config.fast,
            outstanding: HashMap::new(),
            path: Path::Unknown,
            last_ack: now,
            direct_since: None,
        }
    }

    /// The current path.
    pub fn path(&self) -> Path {
        self.path
    }

    /// When the current direct path was selected.
    pub fn direct_since(&self) -> Option<Instant> {
        self.direct_since
    }

    /// Every candidate being probed.
    pub fn candidates(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.reported.iter().chain(&self.learned).copied()
    }

    /// New candidates from the rendezvous. A changed set starts a fresh fast round (unless the
    /// path is direct and its address is still among them).
    pub fn set_candidates(
        &mut self,
        candidates: impl IntoIterator<Item = SocketAddr>,
        now: Instant,
    ) {
        let mut list: Vec<SocketAddr> = Vec::new();
        for c in candidates {
            if !list.contains(&c) && list.len() < MAX_REMOTE {
                list.push(c);
            }
        }
        if list == self.reported {
            return;
        }
        self.reported = list;
        if !matches!(self.path, Path::Direct(_)) {
            self.restart(now);
        }
    }

    /// A probe from the peer authenticated, from `src`: `src` is worth probing too (it is where
    /// the peer's NAT maps it towards us). Probes it at once if it is new.
    pub fn probe_received(&mut self, src: SocketAddr, now: Instant) {
        if self.candidates().any(|c| c == src) {
            return;
        }
        if self.learned.len() + self.reported.len() >= MAX_REMOTE && !self.learned.is_empty() {
            self.learned.remove(0);
        }
        self.learned.push(src);
        if !matches!(self.path, Path::Direct(_)) {
            self.next_probe = self.next_probe.min(now);
        }
    }

    fn restart(&mut self, now: Instant) {
        self.round_started = now;
        self.next_probe = now;
        self.slow = self.config.fast;
    }

    /// An authenticated ack for `txid` from `src`. Returns the new path if it changed.
    pub fn handle_ack(&mut self, txid: u64, src: SocketAddr, now: Instant) -> Option<Path> {
        let (_, sent) = self.outstanding.remove(&txid)?;
        if now.saturating_duration_since(sent) > self.config.ack_window {
            return None;
        }
        match self.path {
            Path::Direct(current) if current == src => {
                self.last_ack = now;
                None
            }
            // Keep a working direct path; another pair answering is no reason to move.
            Path::Direct(_)
                if now.saturating_duration_since(self.last_ack) < self.config.keepalive * 2 =>
            {
                None
            }
            _ => {
                self.path = Path::Direct(src);
                self.last_ack = now;
                self.direct_since = Some(now);
                self.next_probe = now + self.config.keepalive;
                Some(self.path)
            }
        }
    }

    /// Probes due at `now`: `(destination, txid)`, txids drawn from `next_txid`. Call when `now`
    /// reaches [`Self::poll_timeout`].
    pub fn poll_probes(
        &mut self,
        now: Instant,
        mut next_txid: impl FnMut() -> u64,
    ) -> Vec<(SocketAddr, u64)> {
        if now < self.next_probe {
            return Vec::new();
        }
        let targets: Vec<SocketAddr> = match self.path {
            Path::Direct(addr) => vec![addr],
            Path::Unknown | Path::Relayed => self.candidates().collect(),
        };
        let mut out = Vec::with_capacity(targets.len());
        for dst in targets {
            let txid = next_txid();
            self.outstanding.insert(txid, (dst, now));
            out.push((dst, txid));
        }
        self.next_probe = now + self.interval(now);
        out
    }

    fn interval(&mut self, now: Instant) -> Duration {
        if matches!(self.path, Path::Direct(_)) {
            return self.config.keepalive;
        }
        if now.saturating_duration_since(self.round_started) < self.config.fast_for {
            return self.config.fast;
        }
        self.slow = (self.slow * 2).min(self.config.slow_max);
        self.slow
    }

    /// Relay fallback, loss of a direct path, forgetting old txids. Returns the new path if it
    /// changed.
    pub fn handle_timeout(&mut self, now: Instant) -> Option<Path> {
        let window = self.config.ack_window;
        self.outstanding
            .retain(|_, (_, sent)| now.saturating_duration_since(*sent) <= window);
        match self.path {
            Path::Direct(_)
                if now.saturating_duration_since(self.last_ack) >= self.config.path_timeout =>
            {
                self.path = Path::Relayed;
                self.direct_since = None;
                self.restart(now);
                Some(self.path)
            }
            Path::Unknown
                if now.saturating_duration_since(self.round_started) >= self.config.relay_after =>
            {
                self.path = Path::Relayed;
                Some(self.path)
            }
            _ => None,
        }
    }

    /// The next instant something is due.
    #[must_use]
    pub fn poll_timeout(&self) -> Instant {
        let mut t = self.next_probe;
        match self.path {
            Path::Direct(_) => t = t.min(self.last_ack + self.config.path_timeout),
            Path::Unknown => t = t.min(self.round_started + self.config.relay_after),
            Path::Relayed => {}
        }
        if let Some(oldest) = self.outstanding.values().map(|(_, s)| *s).min() {
            t = t.min(oldest + self.config.ack_window + Duration::from_millis(1));
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap_or_else(|_| unreachable!())
    }

    struct Ids(u64);
    impl Ids {
        fn next(&mut self) -> u64 {
            self.0 += 1;
            self.0
        }
    }

    #[test]
    fn probes_every_candidate_fast_then_backs_off() {
        let t0 = Instant::now();
        let mut p = Punch::new(PunchConfig::default(), t0);
        let mut ids = Ids(0);
        p.set_candidates([addr("198.51.100.1:1"), addr("10.0.0.1:2")], t0);
        let first = p.poll_probes(t0, || ids.next());
        assert_eq!(first.len(), 2);
        assert_eq!(p.poll_timeout(), t0 + Duration::from_millis(200));
        // Too early: nothing.
        assert!(p
            .poll_probes(t0 + Duration::from_millis(100), || ids.next())
            .is_empty());
        let mut now = t0;
        let mut sends = 1;
        while now < t0 + Duration::from_secs(5) {
            now = p.poll_timeout().min(t0 + Duration::from_secs(5));
            if p.handle_timeout(now).is_some() {
                break;
            }
            if !p.poll_probes(now, || ids.next()).is_empty() {
                sends += 1;
            }
        }
        assert!((24..=26).contains(&sends), "{sends} rounds in 5 s");
        // The relay took over at 5 s.
        assert_eq!(p.path(), Path::Relayed);
        // Background probing backs off: 0.4, 0.8, 1.6, … 30 s.
        let mut gaps = Vec::new();
        let mut last = now;
        while gaps.len() < 9 {
            now = p.poll_timeout();
            p.handle_timeout(now);
            // Some wake-ups only forget unanswered txids.
            if p.poll_probes(now, || ids.next()).is_empty() {
                continue;
            }
            gaps.push((now - last).as_millis());
            last = now;
        }
        assert!(gaps.windows(2).all(|w| w[0] <= w[1]), "{gaps:?}");
        assert_eq!(*gaps.last().unwrap_or(&0), 30_000);
    }

    #[test]
    fn first_ack_selects_direct_at_the_acks_source_and_late_acks_are_ignored() {
        let t0 = Instant::now();
        let mut p = Punch::new(PunchConfig::default(), t0);
        let mut ids = Ids(0);
        p.set_candidates([addr("198.51.100.1:1")], t0);
        let probes = p.poll_probes(t0, || ids.next());
        let (_, stale) = probes[0];
        // Lost: no ack. A later probe gets answered, from a different (NAT-mapped) port.
        let t1 = t0 + Duration::from_millis(200);
        let probes = p.poll_probes(t1, || ids.next());
        let (_, txid) = probes[0];
        // An ack for a txid never sent changes nothing.
        assert_eq!(p.handle_ack(999, addr("198.51.100.1:5"), t1), None);
        let got = p.handle_ack(txid, addr("198.51.100.1:7"), t1 + Duration::from_millis(30));
        assert_eq!(got, Some(Path::Direct(addr("198.51.100.1:7"))));
        // A replayed ack (same txid) is refused: the txid was consumed.
        assert_eq!(p.handle_ack(txid, addr("203.0.113.9:9"), t1), None);
        // The first probe's ack arrives very late (beyond the ack window): ignored.
        let late = t0 + Duration::from_secs(11);
        assert_eq!(p.handle_ack(stale, addr("203.0.113.9:9"), late), None);
        assert_eq!(p.path(), Path::Direct(addr("198.51.100.1:7")));
    }

    #[test]
    fn direct_path_is_kept_alive_and_lost_without_acks() {
        let t0 = Instant::now();
        let cfg = PunchConfig::default();
        let mut p = Punch::new(cfg, t0);
        let mut ids = Ids(0);
        let b = addr("198.51.100.1:1");
        p.set_candidates([b, addr("10.1.1.1:1")], t0);
        let probes = p.poll_probes(t0, || ids.next());
        assert_eq!(p.handle_ack(probes[0].1, b, t0), Some(Path::Direct(b)));
        // While direct: only the endpoint, every keepalive interval; acks keep it.
        let mut now = t0;
        let mut rounds = 0;
        while rounds < 3 {
            now = p.poll_timeout();
            assert!(now - t0 >= cfg.keepalive);
            assert_eq!(p.handle_timeout(now), None);
            let probes = p.poll_probes(now, || ids.next());
            if probes.is_empty() {
                continue;
            }
            rounds += 1;
            assert_eq!(probes.len(), 1);
            assert_eq!(probes[0].0, b);
            assert_eq!(p.handle_ack(probes[0].1, b, now), None);
        }
        // Acks stop (the NAT mapping vanished): after path_timeout the relay takes over and a
        // new fast round starts.
        let acked = now;
        loop {
            now = p.poll_timeout();
            if let Some(path) = p.handle_timeout(now) {
                assert_eq!(path, Path::Relayed);
                break;
            }
            let _ = p.poll_probes(now, || ids.next());
        }
        assert_eq!(now - acked, cfg.path_timeout);
        assert_eq!(p.poll_probes(now, || ids.next()).len(), 2);
        assert_eq!(p.poll_timeout(), now + cfg.fast);
    }

    #[test]
    fn relayed_peer_moves_to_direct_when_a_pair_answers_later() {
        let t0 = Instant::now();
        let mut p = Punch::new(PunchConfig::default(), t0);
        let mut ids = Ids(0);
        // No candidates at all yet: relay after 5 s.
        assert_eq!(p.poll_timeout(), t0);
        assert!(p.poll_probes(t0, || ids.next()).is_empty());
        assert_eq!(
            p.handle_timeout(t0 + Duration::from_secs(5)),
            Some(Path::Relayed)
        );
        let t1 = t0 + Duration::from_secs(20);
        p.set_candidates([addr("198.51.100.1:1")], t1);
        let probes = p.poll_probes(t1, || ids.next());
        assert_eq!(
            p.handle_ack(probes[0].1, addr("198.51.100.1:1"), t1),
            Some(Path::Direct(addr("198.51.100.1:1")))
        );
        assert_eq!(p.direct_since(), Some(t1));
    }

    #[test]
    fn probe_from_a_new_address_is_probed_back_at_once() {
        let t0 = Instant::now();
        let mut p = Punch::new(PunchConfig::default(), t0);
        let mut ids = Ids(0);
        p.set_candidates([addr("198.51.100.1:1")], t0);
        let _ = p.poll_probes(t0, || ids.next());
        let t1 = t0 + Duration::from_millis(50);
        p.probe_received(addr("198.51.100.1:4444"), t1);
        assert_eq!(p.poll_timeout(), t1);
        let probes = p.poll_probes(t1, || ids.next());
        let dsts: Vec<_> = probes.iter().map(|(d, _)| *d).collect();
        assert!(dsts.contains(&addr("198.51.100.1:4444")));
        // Same candidates again: no new round.
        p.set_candidates([addr("198.51.100.1:1")], t1);
        assert_eq!(p.poll_timeout(), t1 + Duration::from_millis(200));
    }
}
