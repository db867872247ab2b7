//! NAT traversal between gateways: rendezvous, hole punching and relay fallback (issue #5).
//!
//! - [`packet`]: the authenticated traversal packets (`0xC4..=0xC9` on the shared port).
//! - [`punch`]: the per-peer probe scheduler and path choice.
//! - [`Traversal`]: both roles of a gateway. As a **peer** (a `[[peer]]` with `rendezvous =
//!   "hub"`), it registers its candidates with the hub, learns the peer's, punches, and relays
//!   through the hub while no direct pair answers. As a **rendezvous** (`[traversal] rendezvous
//!   = true`), it stores each peer's candidates with the address it sees them at, tells each
//!   side the other's, and relays sealed WireGuard datagrams between its peers (it can
//!   authenticate the relay frames but not read the WireGuard payload).
//!
//! # Driving it
//!
//! ```text
//! datagram with is_traversal_packet():
//!     match traversal.handle_input(src, bytes, &mut scratch, now, wall, rng)
//!     Ok(Some(Relayed { src, datagram, .. })) => gateway.handle_datagram(src, datagram, ..)
//! WireGuard datagram for a peer whose endpoint is a relay address (see `relay_peer`):
//!     traversal.relay(peer, datagram, wall, rng) instead of sending it
//! timeout: traversal.handle_timeout(now, wall, rng)
//! then:    while let Some(t) = poll_transmit() → socket; poll_event() → gateway.set_peer_endpoint(..)
//! ```
//!
//! Relaying allocates nothing once warm: the caller's `scratch` (one buffer, kept and passed on
//! every call) receives the decrypted packet and a [`Relayed`] datagram borrows it; a sealed
//! packet is written into a buffer the agent takes from a small pool, and [`Traversal::poll_transmit`]
//! lends it out and takes it back on the next call. The driver's `rng` draws a 24-byte nonce
//! per packet, so it should be a cheap CSPRNG (seeded from the OS), not a system call each.
//!
//! Relayed peers are given a *relay address* as their WireGuard endpoint: an address in the
//! IPv6 discard prefix `100::/64` (RFC 6666) that stands for "through the rendezvous". The
//! data plane needs no other change, and such an address never leaves the host.

pub mod packet;
pub mod punch;

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant, SystemTime};

use rand_core::CryptoRngCore;
use serde::Serialize;
use tracing::{debug, info, trace};

use crate::control::message::{Candidate, CandidateKind};
use crate::control::replay::ReplayWindow;
use crate::keys::{PrivateKey, PublicKey};
pub use packet::{is_traversal_packet, Body, PacketError, PairKey};
pub use punch::{Path, Punch, PunchConfig};

/// How often a peer re-registers with its rendezvous once answered (keeps the hub's view of its
/// address, and the NAT mapping towards the hub, fresh).
pub const REGISTER_INTERVAL: Duration = Duration::from_secs(20);
/// How soon a peer asks again while the other side has not registered yet, or no answer came.
pub const REGISTER_RETRY: Duration = Duration::from_secs(1);

/// Spare transmit buffers kept for reuse: enough for the packets one input or timeout queues at
/// a time in steady state; more are freed once sent.
const SPARE_BUFFERS: usize = 8;

/// A datagram to send from the tunnel's socket, lent by [`Traversal::poll_transmit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transmit<'a> {
    /// Where to.
    pub dst: SocketAddr,
    /// The packet.
    pub payload: &'a [u8],
}

/// A path change for the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathEvent {
    /// The peer.
    pub peer: PublicKey,
    /// Its new path.
    pub path: Path,
    /// The WireGuard endpoint to use: the direct address, or the peer's relay address.
    pub endpoint: SocketAddr,
}

/// A WireGuard datagram that arrived through the rendezvous. It borrows the `scratch` buffer
/// given to [`Traversal::handle_input`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Relayed<'a> {
    /// The peer that sent it.
    pub from: PublicKey,
    /// Its relay address: pass it to the gateway as the datagram's source.
    pub src: SocketAddr,
    /// The WireGuard datagram.
    pub datagram: &'a [u8],
}

/// A configured peer as traversal sees it.
#[derive(Debug, Clone)]
pub struct TraversalPeer {
    /// Its name.
    pub name: String,
    /// Its static key.
    pub key: PublicKey,
    /// The key of the peer that is its rendezvous, if it is reached by traversal.
    pub rendezvous: Option<PublicKey>,
    /// Where the rendezvous peer itself is (its configured endpoint), for registering.
    pub rendezvous_endpoint: Option<SocketAddr>,
}

/// What `status` shows about traversal.
#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct TraversalCounters {
    /// Probes sent.
    pub probes_sent: u64,
    /// Probes answered (acks sent).
    pub probes_answered: u64,
    /// Acks received that selected or kept a path.
    pub acks_received: u64,
    /// Datagrams relayed for others (rendezvous only).
    pub relayed_for_peers: u64,
    /// Relay frames dropped: unknown destination, or destination never seen.
    pub relay_no_destination: u64,
    /// Datagrams sent through the rendezvous.
    pub relayed_sent: u64,
    /// Datagrams received through the rendezvous.
    pub relayed_received: u64,
    /// Packets dropped: malformed, unknown key, failed authentication, replayed, unexpected.
    pub rx_dropped: u64,
}

/// One peer's per-key state.
struct Entry {
    name: String,
    key: PairKey,
    window: ReplayWindow,
    /// Traversal-peer state, when we reach this peer through a rendezvous.
    punch: Option<PunchState>,
    /// Rendezvous state: where we last saw the peer and what it reported.
    seen_at: Option<SocketAddr>,
    candidates: Vec<Candidate>,
    /// The peer's relay address (stable per peer).
    relay_addr: SocketAddr,
}

struct PunchState {
    punch: Punch,
    hub: PublicKey,
    hub_endpoint: Option<SocketAddr>,
    next_register: Instant,
    answered: bool,
    reported_path: Path,
    started: Instant,
}

/// Why a traversal packet was dropped (none is answered).
#[derive(Debug, thiserror::Error)]
pub enum TraversalError {
    /// The packet did not decode, authenticate, or was replayed.
    #[error(transparent)]
    Packet(#[from] PacketError),
    /// A valid packet this gateway does not expect (e.g. a relay frame while not a rendezvous).
    #[error("unexpected traversal packet: {0}")]
    Unexpected(&'static str),
}

/// Sealed packets waiting to be sent, and the buffers they are sealed into.
struct Outbox {
    /// Our static key, the sender of every packet.
    sender: PublicKey,
    /// The sequence number of the last packet sealed.
    last_seq: u64,
    /// Sealed packets, oldest first.
    queue: VecDeque<(SocketAddr, Vec<u8>)>,
    /// The buffer [`Traversal::poll_transmit`] lent out last; reused from its next call.
    lent: Option<Vec<u8>>,
    /// Buffers to seal into (at most [`SPARE_BUFFERS`]).
    spare: Vec<Vec<u8>>,
}

impl Outbox {
    fn new(sender: PublicKey) -> Self {
        Self {
            sender,
            last_seq: 0,
            queue: VecDeque::new(),
            lent: None,
            spare: Vec::new(),
        }
    }

    fn next_seq(&mut self, wall: SystemTime) -> u64 {
        let clock = wall
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX - 1))
            .unwrap_or(0);
        self.last_seq = clock.max(self.last_seq + 1).min(u64::MAX - 1);
        self.last_seq
    }

    /// Seals `body` with `key` (the pair key of the receiver) and queues it for `dst`.
    fn send<R: CryptoRngCore + ?Sized>(
        &mut self,
        key: &PairKey,
        dst: SocketAddr,
        body: &Body<'_>,
        wall: SystemTime,
        rng: &mut R,
    ) {
        let seq = self.next_seq(wall);
        let mut nonce = [0u8; 24];
        rng.fill_bytes(&mut nonce);
        let mut buf = self.spare.pop().unwrap_or_default();
        key.seal_into(&self.sender, seq, nonce, body, &mut buf);
        self.queue.push_back((dst, buf));
    }

    fn poll(&mut self) -> Option<Transmit<'_>> {
        if let Some(buf) = self.lent.take() {
            if self.spare.len() < SPARE_BUFFERS {
                self.spare.push(buf);
            }
        }
        let (dst, buf) = self.queue.pop_front()?;
        let payload = self.lent.insert(buf);
        Some(Transmit { dst, payload })
    }
}

/// The traversal agent of one gateway. See the module docs for how a driver uses it.
pub struct Traversal {
    public_key: PublicKey,
    rendezvous: bool,
    peers: HashMap<PublicKey, Entry>,
    by_relay_addr: HashMap<SocketAddr, PublicKey>,
    local: Vec<Candidate>,
    outbox: Outbox,
    events: VecDeque<PathEvent>,
    counters: TraversalCounters,
}

impl std::fmt::Debug for Traversal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Traversal")
            .field("public_key", &self.public_key)
            .field("rendezvous", &self.rendezvous)
            .field("peers", &self.peers.len())
            .finish_non_exhaustive()
    }
}

/// The relay address standing for peer number `index`: `[100::index+1]:1`.
fn relay_address(index: usize) -> SocketAddr {
    let n = index as u128 + 1;
    SocketAddr::new(IpAddr::V6(Ipv6Addr::from(0x0100_u128 << 112 | n)), 1)
}

/// Whether `addr` is a relay address (IPv6 discard prefix `100::/64`).
pub fn is_relay_address(addr: &SocketAddr) -> bool {
    matches!(addr.ip(), IpAddr::V6(ip) if ip.segments()[..4] == [0x0100, 0, 0, 0])
}

impl Traversal {
    /// An agent for `private_key` with these peers. `rendezvous`: offer rendezvous and relay.
    /// Returns `None` when there is nothing to do (no traversal peer and no rendezvous).
    pub fn new(
        private_key: &PrivateKey,
        peers: &[TraversalPeer],
        rendezvous: bool,
        config: PunchConfig,
        now: Instant,
    ) -> Option<Self> {
        if !rendezvous && peers.iter().all(|p| p.rendezvous.is_none()) {
            return None;
        }
        let public_key = private_key.public_key();
        let secret = private_key.to_static_secret();
        let mut map = HashMap::new();
        let mut by_relay_addr = HashMap::new();
        for (i, p) in peers.iter().enumerate() {
            let relay_addr = relay_address(i);
            by_relay_addr.insert(relay_addr, p.key);
            let punch = p.rendezvous.map(|hub| PunchState {
                punch: Punch::new(config, now),
                hub,
                hub_endpoint: p.rendezvous_endpoint,
                next_register: now,
                answered: false,
                reported_path: Path::Unknown,
                started: now,
            });
            map.insert(
                p.key,
                Entry {
                    name: p.name.clone(),
                    key: PairKey::derive(&secret, &public_key, &p.key),
                    window: ReplayWindow::new(),
                    punch,
                    seen_at: None,
                    candidates: Vec::new(),
                    relay_addr,
                },
            );
        }
        Some(Self {
            public_key,
            rendezvous,
            peers: map,
            by_relay_addr,
            local: Vec::new(),
            outbox: Outbox::new(public_key),
            events: VecDeque::new(),
            counters: TraversalCounters::default(),
        })
    }

    /// This gateway's own candidates (host addresses with the listen port, mapped ports, STUN
    /// results). A change is reported to the rendezvous at once.
    pub fn set_local_candidates(&mut self, candidates: Vec<Candidate>, now: Instant) {
        if candidates == self.local {
            return;
        }
        self.local = candidates;
        for e in self.peers.values_mut() {
            if let Some(p) = &mut e.punch {
                p.next_register = now;
            }
        }
    }

    /// The counters.
    pub fn counters(&self) -> &TraversalCounters {
        &self.counters
    }

    /// The peer a relay address stands for.
    pub fn relay_peer(&self, addr: &SocketAddr) -> Option<PublicKey> {
        self.by_relay_addr.get(addr).copied()
    }

    /// The path to `peer`, if it is reached by traversal, and since when it is direct.
    pub fn path(&self, peer: &PublicKey) -> Option<(Path, Option<Duration>)> {
        let p = self.peers.get(peer)?.punch.as_ref()?;
        let time_to_direct = p
            .punch
            .direct_since()
            .map(|t| t.saturating_duration_since(p.started));
        Some((p.punch.path(), time_to_direct))
    }

    /// The rendezvous through which `peer` is reached, if any.
    pub fn rendezvous_of(&self, peer: &PublicKey) -> Option<PublicKey> {
        self.peers.get(peer)?.punch.as_ref().map(|p| p.hub)
    }

    /// The candidates being probed for `peer`.
    pub fn remote_candidates(&self, peer: &PublicKey) -> Vec<SocketAddr> {
        self.peers
            .get(peer)
            .and_then(|e| e.punch.as_ref())
            .map(|p| p.punch.candidates().collect())
            .unwrap_or_default()
    }

    /// Seals `body` for the configured peer `to` and queues it for `dst`.
    fn send<R: CryptoRngCore + ?Sized>(
        &mut self,
        to: &PublicKey,
        dst: SocketAddr,
        body: &Body<'_>,
        wall: SystemTime,
        rng: &mut R,
    ) {
        if let Some(e) = self.peers.get(to) {
            self.outbox.send(&e.key, dst, body, wall, rng);
        }
    }

    /// Wraps a WireGuard datagram for `peer` to go through its rendezvous. Returns false if
    /// `peer` has no rendezvous or its address is unknown. Allocates nothing once warm (see
    /// the module docs).
    pub fn relay<R: CryptoRngCore + ?Sized>(
        &mut self,
        peer: &PublicKey,
        datagram: &[u8],
        wall: SystemTime,
        rng: &mut R,
    ) -> bool {
        let Some((hub, Some(hub_addr))) = self
            .peers
            .get(peer)
            .and_then(|e| e.punch.as_ref())
            .map(|p| (p.hub, p.hub_endpoint))
        else {
            return false;
        };
        let Some(hub_entry) = self.peers.get(&hub) else {
            return false;
        };
        let body = Body::RelayTo {
            peer: *peer,
            datagram,
        };
        self.counters.relayed_sent += 1;
        self.outbox.send(&hub_entry.key, hub_addr, &body, wall, rng);
        true
    }

    /// Handles a traversal packet from `src`. Returns a relayed WireGuard datagram for the
    /// gateway, if it was one.
    ///
    /// `scratch` receives the decrypted packet (its contents are replaced) and the returned
    /// datagram borrows it; keep one buffer and pass it on every call.
    pub fn handle_input<'s, R: CryptoRngCore + ?Sized>(
        &mut self,
        src: SocketAddr,
        bytes: &[u8],
        scratch: &'s mut Vec<u8>,
        now: Instant,
        wall: SystemTime,
        rng: &mut R,
    ) -> Result<Option<Relayed<'s>>, TraversalError> {
        let result = self.input(src, bytes, scratch, now, wall, rng);
        if let Err(e) = &result {
            self.counters.rx_dropped += 1;
            trace!(%src, error = %e, "traversal packet dropped");
        }
        result
    }

    fn input<'s, R: CryptoRngCore + ?Sized>(
        &mut self,
        src: SocketAddr,
        bytes: &[u8],
        scratch: &'s mut Vec<u8>,
        now: Instant,
        wall: SystemTime,
        rng: &mut R,
    ) -> Result<Option<Relayed<'s>>, TraversalError> {
        let header = packet::peek(bytes)?;
        let sender = header.sender;
        let entry = self
            .peers
            .get_mut(&sender)
            .ok_or(PacketError::UnknownKey(sender))?;
        let (seq, body) = entry.key.open(bytes, scratch)?;
        entry.window.mark(seq).map_err(|_| PacketError::Replayed)?;
        match body {
            Body::Probe { txid } => {
                self.counters.probes_answered += 1;
                if let Some(p) = &mut entry.punch {
                    p.punch.probe_received(src, now);
                }
                let ack = Body::ProbeAck { txid };
                self.outbox.send(&entry.key, src, &ack, wall, rng);
                Ok(None)
            }
            Body::ProbeAck { txid } => {
                let name = entry.name.clone();
                let relay_addr = entry.relay_addr;
                let p = entry.punch.as_mut().ok_or(TraversalError::Unexpected(
                    "ack from a peer we do not punch to",
                ))?;
                if let Some(path) = p.punch.handle_ack(txid, src, now) {
                    self.counters.acks_received += 1;
                    report(&mut self.events, &name, sender, p, path, relay_addr, now);
                }
                Ok(None)
            }
            Body::PeerCandidates { peer, candidates } => {
                // Only the rendezvous of `peer` may tell us where it is.
                let target = self
                    .peers
                    .get_mut(&peer)
                    .and_then(|e| e.punch.as_mut())
                    .filter(|p| p.hub == sender)
                    .ok_or(TraversalError::Unexpected(
                        "candidates from a non-rendezvous",
                    ))?;
                debug!(peer = %peer, ?candidates, "candidates from the rendezvous");
                if candidates.is_empty() {
                    target.next_register = now + REGISTER_RETRY;
                } else {
                    target.answered = true;
                    target.next_register = now + REGISTER_INTERVAL;
                    target
                        .punch
                        .set_candidates(candidates.iter().map(|c| c.addr), now);
                }
                Ok(None)
            }
            Body::Register { peer, candidates } if self.rendezvous => {
                self.register(sender, src, peer, candidates, wall, rng);
                Ok(None)
            }
            Body::RelayTo { peer, datagram } if self.rendezvous => {
                entry.seen_at = Some(src);
                let dst = self
                    .peers
                    .get(&peer)
                    .and_then(|e| Some((&e.key, e.seen_at?)));
                match dst {
                    Some((key, dst)) if peer != sender => {
                        self.counters.relayed_for_peers += 1;
                        let body = Body::RelayFrom {
                            peer: sender,
                            datagram,
                        };
                        self.outbox.send(key, dst, &body, wall, rng);
                    }
                    _ => self.counters.relay_no_destination += 1,
                }
                Ok(None)
            }
            Body::RelayFrom { peer, datagram } => {
                let ok = self
                    .peers
                    .get(&peer)
                    .and_then(|e| e.punch.as_ref())
                    .is_some_and(|p| p.hub == sender);
                if !ok {
                    return Err(TraversalError::Unexpected(
                        "relay frame from a non-rendezvous",
                    ));
                }
                self.counters.relayed_received += 1;
                let src = self.peers.get(&peer).map(|e| e.relay_addr);
                Ok(src.map(|src| Relayed {
                    from: peer,
                    src,
                    datagram,
                }))
            }
            Body::Register { .. } | Body::RelayTo { .. } => Err(TraversalError::Unexpected(
                "this gateway is not a rendezvous",
            )),
        }
    }

    /// Rendezvous: stores `from`'s candidates (the address seen first), answers with `peer`'s
    /// and tells `peer` about `from`.
    fn register<R: CryptoRngCore + ?Sized>(
        &mut self,
        from: PublicKey,
        src: SocketAddr,
        peer: PublicKey,
        reported: Vec<Candidate>,
        wall: SystemTime,
        rng: &mut R,
    ) {
        let mut stored = vec![Candidate {
            kind: CandidateKind::Reflexive,
            addr: src,
        }];
        for c in reported {
            if !stored.iter().any(|s| s.addr == c.addr) && stored.len() < packet::MAX_CANDIDATES {
                stored.push(c);
            }
        }
        if let Some(e) = self.peers.get_mut(&from) {
            if e.seen_at != Some(src) {
                info!(peer = %e.name, endpoint = %src, "rendezvous: peer registered");
            }
            e.seen_at = Some(src);
            e.candidates = stored.clone();
        }
        let (theirs, their_addr) = match self.peers.get(&peer) {
            Some(e) if peer != from => (e.candidates.clone(), e.seen_at),
            _ => (Vec::new(), None),
        };
        let answer = Body::PeerCandidates {
            peer,
            candidates: theirs,
        };
        self.send(&from, src, &answer, wall, rng);
        if let Some(addr) = their_addr {
            let push = Body::PeerCandidates {
                peer: from,
                candidates: stored,
            };
            self.send(&peer, addr, &push, wall, rng);
        }
    }

    /// Registrations, probes, relay fallback. Call when `now` reaches [`Self::poll_timeout`].
    pub fn handle_timeout<R: CryptoRngCore + ?Sized>(
        &mut self,
        now: Instant,
        wall: SystemTime,
        rng: &mut R,
    ) {
        let keys: Vec<PublicKey> = self
            .peers
            .iter()
            .filter(|(_, e)| e.punch.is_some())
            .map(|(k, _)| *k)
            .collect();
        for key in keys {
            let mut out: Vec<(PublicKey, SocketAddr, Body)> = Vec::new();
            let Some(e) = self.peers.get_mut(&key) else {
                continue;
            };
            let name = e.name.clone();
            let relay_addr = e.relay_addr;
            let Some(p) = e.punch.as_mut() else {
                continue;
            };
            if now >= p.next_register {
                if let Some(hub_addr) = p.hub_endpoint {
                    out.push((
                        p.hub,
                        hub_addr,
                        Body::Register {
                            peer: key,
                            candidates: self.local.clone(),
                        },
                    ));
                }
                p.next_register = now
                    + if p.answered {
                        REGISTER_INTERVAL
                    } else {
                        REGISTER_RETRY
                    };
            }
            if let Some(path) = p.punch.handle_timeout(now) {
                report(&mut self.events, &name, key, p, path, relay_addr, now);
            }
            let mut txids = Vec::new();
            let probes = p.punch.poll_probes(now, || {
                let t = rng.next_u64();
                txids.push(t);
                t
            });
            for (dst, txid) in probes {
                out.push((key, dst, Body::Probe { txid }));
            }
            for (to, dst, body) in out {
                if matches!(body, Body::Probe { .. }) {
                    self.counters.probes_sent += 1;
                }
                self.send(&to, dst, &body, wall, rng);
            }
        }
    }

    /// The next instant [`Self::handle_timeout`] wants to run.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.peers
            .values()
            .filter_map(|e| e.punch.as_ref())
            .map(|p| p.next_register.min(p.punch.poll_timeout()))
            .min()
    }

    /// The next datagram to send. Its buffer goes back to the agent's pool on the next call, so
    /// call until `None` (as a driver's loop does) to keep relaying allocation-free.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Transmit<'_>> {
        self.outbox.poll()
    }

    /// The next path change.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<PathEvent> {
        self.events.pop_front()
    }
}

fn report(
    events: &mut VecDeque<PathEvent>,
    name: &str,
    peer: PublicKey,
    p: &mut PunchState,
    path: Path,
    relay_addr: SocketAddr,
    now: Instant,
) {
    if p.reported_path == path {
        return;
    }
    p.reported_path = path;
    let endpoint = match path {
        Path::Direct(addr) => {
            info!(peer = %name, endpoint = %addr, after_ms = now.saturating_duration_since(p.started).as_millis() as u64, "direct path");
            addr
        }
        Path::Relayed | Path::Unknown => {
            info!(peer = %name, "no direct path: relaying through the rendezvous");
            relay_addr
        }
    };
    events.push_back(PathEvent {
        peer,
        path,
        endpoint,
    });
}

#[cfg(test)]
mod tests;
