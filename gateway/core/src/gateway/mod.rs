//! The gateway's sans-IO data plane: cryptokey routing between a TUN device and a UDP socket.
//!
//! [`Gateway`] owns every peer's tunnel state and the routing table. It never touches a socket or
//! the clock: a driver feeds it
//! - packets read from the TUN device with [`Gateway::handle_tun_packet`],
//! - datagrams received on the UDP socket with [`Gateway::handle_datagram`],
//! - timer expiries with [`Gateway::handle_timeout`] whenever `now` reaches
//!   [`Gateway::poll_timeout`],
//!
//! and every call writes its results through a [`Sink`]: datagrams to send and packets to write to
//! the TUN device. The sink borrows the gateway's scratch buffer, so nothing is allocated per packet.
//!
//! Handshake initiations cost several Diffie-Hellman operations each (about 0.3 ms), data packets
//! a few microseconds, and both arrive on the same socket. So that a storm of initiations cannot
//! hold up the data read with them, only [`INLINE_INITIATIONS`] initiations per batch (datagrams
//! handed over with the same `now`) are answered at once; the rest wait in a bounded queue that
//! [`Gateway::handle_timeout`] answers [`INITIATIONS_PER_TIMEOUT`] at a time, with
//! [`Gateway::poll_timeout`] in the past while any wait. The cheap checks (per-source limit, mac1,
//! the cookie reply under load) still run on arrival.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use boringtun::noise::errors::WireGuardError;
use boringtun::noise::handshake::parse_handshake_anon;
use boringtun::noise::rate_limiter::RateLimiter;
use boringtun::noise::{Packet, Tunn, TunnResult};
use serde::Serialize;
use tracing::{debug, trace, warn};

use crate::counters::Counters;
use crate::keys::{PrivateKey, PublicKey};
use crate::peer::{Peer, PeerSpec, PeerStatus};
use crate::ratelimit::SourceRateLimiter;
use crate::routing::PrefixTable;

pub mod nat;

/// Where the gateway's output goes. Implemented by the I/O driver (and by tests).
pub trait Sink {
    /// Send `datagram` to `dst` from the gateway's UDP socket.
    fn send_to(&mut self, dst: SocketAddr, datagram: &[u8]);
    /// Write a decrypted inner IP packet to the TUN device.
    fn write_tun(&mut self, packet: &[u8]);
}

/// Handshake messages processed per second before the gateway demands cookies (mac2).
pub const HANDSHAKE_RATE_LIMIT: u64 = 100;
/// How often the tunnels' timers are serviced.
pub const TIMER_TICK: Duration = Duration::from_millis(250);
/// WireGuard's cookie reply message type.
const COOKIE_REPLY_TYPE: u8 = 3;
/// Largest datagram or inner packet handled, plus WireGuard's overhead.
const BUF_LEN: usize = 65_535 + 64;
/// Handshake initiations answered at once per batch of received datagrams (one `now`).
pub const INLINE_INITIATIONS: u32 = 2;
/// Waiting handshake initiations answered per call of [`Gateway::handle_timeout`].
pub const INITIATIONS_PER_TIMEOUT: usize = 8;
/// Most handshake initiations waiting to be answered; more are dropped (their initiators retry).
/// About a second of work on one core; the Linux kernel keeps up to 4096.
pub const MAX_PENDING_INITIATIONS: usize = 1024;
/// Size of a handshake initiation.
const INIT_LEN: usize = 148;

/// Index of a peer in the gateway; also the upper 24 bits of its WireGuard session indices.
pub type PeerId = u32;

/// Errors when changing the set of peers.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// Another peer already has this public key.
    #[error("peer {name:?}: public key {key} is already used by peer {other:?}")]
    DuplicateKey {
        /// The new peer's name.
        name: String,
        /// The duplicated key.
        key: PublicKey,
        /// The peer that has it.
        other: String,
    },
    /// The key is the gateway's own.
    #[error("peer {name:?}: public key is the gateway's own key")]
    OwnKey {
        /// The new peer's name.
        name: String,
    },
    /// Another peer already routes exactly this prefix.
    #[error("peer {name:?}: allowed IP {prefix} is already routed to peer {other:?}")]
    PrefixTaken {
        /// The new peer's name.
        name: String,
        /// The prefix.
        prefix: ipnet::IpNet,
        /// The peer that owns it.
        other: String,
    },
    /// More peers than session indices allow (2^24).
    #[error("too many peers")]
    TooManyPeers,
}

/// The gateway's state as `status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct GatewayStatus {
    /// The gateway's public key.
    pub public_key: PublicKey,
    /// Every peer.
    pub peers: Vec<PeerStatus>,
    /// Data-plane counters.
    pub counters: Counters,
}

/// The sans-IO gateway. See the module documentation for how a driver uses it.
pub struct Gateway {
    private_key: PrivateKey,
    public_key: PublicKey,
    static_secret: x25519_dalek::StaticSecret,
    static_public: x25519_dalek::PublicKey,
    peers: Vec<Option<Peer>>,
    free_ids: Vec<PeerId>,
    by_key: HashMap<PublicKey, PeerId>,
    routes: PrefixTable<PeerId>,
    rate_limiter: Arc<RateLimiter>,
    source_limiter: SourceRateLimiter,
    counters: Counters,
    next_tick: Instant,
    next_second: Instant,
    buf: Box<[u8]>,
    nat: Option<Box<nat::GatewayNat>>,
    /// Initiations that passed the cheap checks, waiting for their Diffie-Hellman work.
    pending_inits: VecDeque<PendingInit>,
    /// The batch (`now`) of the last initiation answered at once, and how many it had.
    inline_batch: Option<Instant>,
    inline_count: u32,
}

/// A handshake initiation waiting to be answered.
struct PendingInit {
    src: SocketAddr,
    queued_at: Instant,
    datagram: [u8; INIT_LEN],
}

impl Gateway {
    /// A gateway with no peers. `now` starts its timers.
    pub fn new(private_key: PrivateKey, now: Instant) -> Self {
        let public_key = private_key.public_key();
        let static_secret = private_key.to_static_secret();
        let static_public = x25519_dalek::PublicKey::from(&static_secret);
        Self {
            rate_limiter: Arc::new(RateLimiter::new(&static_public, HANDSHAKE_RATE_LIMIT)),
            private_key,
            public_key,
            static_secret,
            static_public,
            peers: Vec::new(),
            free_ids: Vec::new(),
            by_key: HashMap::new(),
            routes: PrefixTable::new(),
            source_limiter: SourceRateLimiter::new(),
            counters: Counters::default(),
            next_tick: now + TIMER_TICK,
            next_second: now + Duration::from_secs(1),
            buf: vec![0u8; BUF_LEN].into_boxed_slice(),
            nat: None,
            pending_inits: VecDeque::new(),
            inline_batch: None,
            inline_count: 0,
        }
    }

    /// The gateway's public key.
    pub fn public_key(&self) -> PublicKey {
        self.public_key
    }

    /// Adds a peer and routes its `allowed_ips` to it.
    pub fn add_peer(&mut self, spec: PeerSpec) -> Result<PeerId, GatewayError> {
        if spec.public_key == self.public_key {
            return Err(GatewayError::OwnKey { name: spec.name });
        }
        if let Some(&other) = self.by_key.get(&spec.public_key) {
            return Err(GatewayError::DuplicateKey {
                key: spec.public_key,
                other: self.peer_name(other),
                name: spec.name,
            });
        }
        for prefix in &spec.allowed_ips {
            if let Some(&other) = self.routes.get_exact(prefix.trunc()) {
                return Err(GatewayError::PrefixTaken {
                    prefix: *prefix,
                    other: self.peer_name(other),
                    name: spec.name,
                });
            }
        }
        let id = match self.free_ids.pop() {
            Some(id) => id,
            None => {
                let id =
                    PeerId::try_from(self.peers.len()).map_err(|_| GatewayError::TooManyPeers)?;
                if id >= 1 << 24 {
                    return Err(GatewayError::TooManyPeers);
                }
                self.peers.push(None);
                id
            }
        };
        for prefix in &spec.allowed_ips {
            self.routes.insert(prefix.trunc(), id);
        }
        self.by_key.insert(spec.public_key, id);
        debug!(peer = %spec.name, key = %spec.public_key, endpoint = ?spec.endpoint, "peer added");
        let mut peer = Peer::new(spec, id, Arc::clone(&self.rate_limiter));
        if peer.connects_itself() {
            peer.tunn(&self.private_key);
        }
        self.peers[id as usize] = Some(peer);
        Ok(id)
    }

    /// Removes the peer with `key` and its routes. Returns whether it existed.
    pub fn remove_peer(&mut self, key: &PublicKey) -> bool {
        let Some(id) = self.by_key.remove(key) else {
            return false;
        };
        self.routes.retain(|v| *v != id);
        if let Some(peer) = self.peers[id as usize].take() {
            debug!(peer = %peer.spec.name, "peer removed");
        }
        self.free_ids.push(id);
        true
    }

    /// Points the peer with `key` at `endpoint` (e.g. where its authenticated control packets
    /// came from, which is the same NAT mapping its tunnel uses). Returns whether it exists.
    pub fn set_peer_endpoint(&mut self, key: &PublicKey, endpoint: SocketAddr) -> bool {
        let Some(&id) = self.by_key.get(key) else {
            return false;
        };
        match self.peers.get_mut(id as usize).and_then(Option::as_mut) {
            Some(peer) => {
                if peer.endpoint != Some(endpoint) {
                    debug!(peer = %peer.spec.name, old = ?peer.endpoint, new = %endpoint, "endpoint set");
                    peer.endpoint = Some(endpoint);
                }
                true
            }
            None => false,
        }
    }

    fn peer_name(&self, id: PeerId) -> String {
        self.peers
            .get(id as usize)
            .and_then(Option::as_ref)
            .map(|p| p.spec.name.clone())
            .unwrap_or_default()
    }

    /// Number of peers.
    pub fn peer_count(&self) -> usize {
        self.by_key.len()
    }

    /// The counters.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// A snapshot for `status`.
    pub fn status(&self) -> GatewayStatus {
        GatewayStatus {
            public_key: self.public_key,
            peers: self.peers.iter().flatten().map(Peer::status).collect(),
            counters: self.counters,
        }
    }

    /// Turns on the `[nat]` rules (see [`nat`] for where they apply), replacing any before.
    /// `seed` keys the engines' hashing and port choice (pass a random value).
    pub fn set_nat(
        &mut self,
        config: &crate::nat::NatConfig,
        seed: u64,
        now: Instant,
    ) -> Result<(), crate::nat::NatConfigError> {
        self.nat = nat::GatewayNat::new(config, seed, now, BUF_LEN)?.map(Box::new);
        Ok(())
    }

    /// The NAT's counters and sessions; `None` without `[nat]` rules.
    pub fn nat_report(&self, now: Instant) -> Option<nat::NatReport> {
        self.nat.as_ref().map(|n| n.report(now))
    }

    /// Encrypts an inner packet read from the TUN device and sends it to the peer that owns its
    /// destination address (after NAT, when there are `[nat]` rules).
    pub fn handle_tun_packet(&mut self, packet: &[u8], now: Instant, sink: &mut impl Sink) {
        self.counters.tx_packets += 1;
        let Some(mut nat) = self.nat.take() else {
            self.route_packet(packet, sink);
            return;
        };
        let n = packet.len().min(nat.buf.len());
        nat.buf[..n].copy_from_slice(&packet[..n]);
        match nat.translate_from_tun(n, now) {
            nat::FromTun::Route(len) => self.route_packet(&nat.buf[..len], sink),
            nat::FromTun::BackToTun(None) => sink.write_tun(packet),
            nat::FromTun::BackToTun(Some(p)) => sink.write_tun(&p),
            nat::FromTun::Drop => {}
        }
        self.nat = Some(nat);
    }

    /// Encrypts `packet` for the peer that owns its destination address.
    fn route_packet(&mut self, packet: &[u8], sink: &mut impl Sink) {
        let Some(dst) = Tunn::dst_address(packet) else {
            self.counters.tx_malformed += 1;
            return;
        };
        let Some(&id) = self.routes.longest_match(dst) else {
            self.counters.tx_no_route += 1;
            trace!(%dst, "no peer for destination");
            return;
        };
        let Some(peer) = self.peers.get_mut(id as usize).and_then(Option::as_mut) else {
            self.counters.tx_no_route += 1;
            return;
        };
        match peer
            .tunn(&self.private_key)
            .encapsulate(packet, &mut self.buf)
        {
            TunnResult::WriteToNetwork(datagram) => match peer.endpoint {
                Some(ep) => sink.send_to(ep, datagram),
                None => self.counters.tx_no_endpoint += 1,
            },
            TunnResult::Err(e) => warn!(peer = %peer.spec.name, error = ?e, "encapsulate failed"),
            TunnResult::Done
            | TunnResult::WriteToTunnelV4(..)
            | TunnResult::WriteToTunnelV6(..) => {}
        }
    }

    /// Handles one datagram received from `src` on the UDP socket. A handshake initiation may be
    /// answered later, from [`Gateway::handle_timeout`] (see the module documentation).
    pub fn handle_datagram(
        &mut self,
        src: SocketAddr,
        datagram: &[u8],
        now: Instant,
        sink: &mut impl Sink,
    ) {
        self.counters.rx_packets += 1;
        let packet = match Tunn::parse_incoming_packet(datagram) {
            Ok(p) => p,
            Err(_) => {
                self.counters.rx_malformed += 1;
                trace!(%src, len = datagram.len(), "malformed datagram dropped");
                return;
            }
        };
        let id = match packet {
            Packet::HandshakeInit(_) => {
                if self.admit_initiation(src, datagram, now, sink) {
                    if self.pending_inits.is_empty() && self.inline_allowed(now) {
                        self.answer_initiation(src, datagram, now, sink);
                    } else {
                        self.defer_initiation(src, datagram, now);
                    }
                }
                return;
            }
            Packet::HandshakeResponse(ref p) => p.receiver_idx >> 8,
            Packet::PacketCookieReply(ref p) => p.receiver_idx >> 8,
            Packet::PacketData(ref p) => p.receiver_idx >> 8,
        };
        self.handle_for_peer(id, false, src, datagram, now, sink);
    }

    /// Whether one more initiation of the batch received at `now` may be answered at once.
    fn inline_allowed(&mut self, now: Instant) -> bool {
        if self.inline_batch != Some(now) {
            self.inline_batch = Some(now);
            self.inline_count = 0;
        }
        self.inline_count += 1;
        self.inline_count <= INLINE_INITIATIONS
    }

    /// Queues an admitted initiation for [`Gateway::handle_timeout`], or drops it when the queue
    /// is full.
    fn defer_initiation(&mut self, src: SocketAddr, datagram: &[u8], now: Instant) {
        let Ok(bytes) = <[u8; INIT_LEN]>::try_from(datagram) else {
            self.counters.rx_malformed += 1;
            return;
        };
        if self.pending_inits.len() >= MAX_PENDING_INITIATIONS {
            self.counters.handshake_queue_dropped += 1;
            trace!(%src, "handshake queue full: initiation dropped");
            return;
        }
        self.pending_inits.push_back(PendingInit {
            src,
            queued_at: now,
            datagram: bytes,
        });
    }

    /// Finds the initiator of an admitted initiation by its static key and answers it.
    fn answer_initiation(
        &mut self,
        src: SocketAddr,
        datagram: &[u8],
        now: Instant,
        sink: &mut impl Sink,
    ) {
        let Ok(Packet::HandshakeInit(init)) = Tunn::parse_incoming_packet(datagram) else {
            self.counters.rx_malformed += 1;
            return;
        };
        let half = match parse_handshake_anon(&self.static_secret, &self.static_public, &init) {
            Ok(h) => h,
            Err(e) => {
                count_error(&mut self.counters, &e);
                return;
            }
        };
        let key = PublicKey::from_bytes(half.peer_static_public);
        let Some(&id) = self.by_key.get(&key) else {
            self.counters.rx_unknown_peer += 1;
            debug!(%src, %key, "handshake from unknown key ignored");
            return;
        };
        self.handle_for_peer(id, true, src, datagram, now, sink);
    }

    /// Hands a datagram to the state machine of peer `id` (an initiation only once its sender
    /// is known to be that peer) and writes out what comes of it.
    fn handle_for_peer(
        &mut self,
        id: PeerId,
        is_init: bool,
        src: SocketAddr,
        datagram: &[u8],
        now: Instant,
        sink: &mut impl Sink,
    ) {
        let Some(peer) = self.peers.get_mut(id as usize).and_then(Option::as_mut) else {
            self.counters.rx_unknown_peer += 1;
            return;
        };
        // Only an initiation may bring an idle peer to life: any other message names a session
        // that an idle peer cannot have.
        let tunn = if is_init {
            peer.tunn(&self.private_key)
        } else {
            match peer.tunn_if_active() {
                Some(t) => t,
                None => {
                    self.counters.rx_unknown_peer += 1;
                    return;
                }
            }
        };
        let mut result = tunn.decapsulate(Some(src.ip()), datagram, &mut self.buf);
        // Under load, boringtun answers a handshake message lacking mac2 with a cookie reply
        // (message type 3) before authenticating it: that proves nothing about the sender, so it
        // neither moves the endpoint nor flushes queued packets.
        if let TunnResult::WriteToNetwork(ref out) = result {
            if out.first() == Some(&COOKIE_REPLY_TYPE) {
                if is_init {
                    self.counters.cookie_replies_sent += 1;
                    sink.send_to(src, out);
                } else {
                    // A handshake response under load: anyone can forge mac1, so a cookie
                    // here would answer an unauthenticated sender. Drop it; our own
                    // initiation is retried and completes once the load has passed.
                    self.counters.handshake_rate_limited += 1;
                }
                return;
            }
        }
        if !matches!(result, TunnResult::Err(_)) && peer.endpoint != Some(src) {
            debug!(peer = %peer.spec.name, old = ?peer.endpoint, new = %src, "endpoint changed");
            peer.endpoint = Some(src);
        }
        loop {
            match result {
                TunnResult::Done => break,
                TunnResult::Err(e) => {
                    count_error(&mut self.counters, &e);
                    trace!(peer = %peer.spec.name, %src, error = ?e, "datagram rejected");
                    break;
                }
                TunnResult::WriteToNetwork(out) => {
                    sink.send_to(src, out);
                    // Flush packets queued while the handshake was in progress.
                    result = peer
                        .tunn(&self.private_key)
                        .decapsulate(None, &[], &mut self.buf);
                }
                TunnResult::WriteToTunnelV4(inner, addr) => {
                    deliver(
                        &self.routes,
                        id,
                        IpAddr::V4(addr),
                        inner,
                        &mut self.counters,
                        self.nat.as_deref_mut(),
                        now,
                        sink,
                    );
                    break;
                }
                TunnResult::WriteToTunnelV6(inner, addr) => {
                    deliver(
                        &self.routes,
                        id,
                        IpAddr::V6(addr),
                        inner,
                        &mut self.counters,
                        self.nat.as_deref_mut(),
                        now,
                        sink,
                    );
                    break;
                }
            }
        }
        // Hairpins and ICMP errors the NAT sends back into the tunnels.
        if let Some(pending) = self
            .nat
            .as_mut()
            .filter(|n| !n.to_tunnels.is_empty())
            .map(|n| std::mem::take(&mut n.to_tunnels))
        {
            for p in &pending {
                self.route_packet(p, sink);
            }
        }
    }

    /// The cheap checks on a handshake initiation, on arrival: the per-source limit, mac1 and,
    /// under load, mac2 (answering with a cookie reply when it is missing). Returns whether the
    /// initiation may go on to the Diffie-Hellman work.
    fn admit_initiation(
        &mut self,
        src: SocketAddr,
        datagram: &[u8],
        now: Instant,
        sink: &mut impl Sink,
    ) -> bool {
        if !self.source_limiter.allow(src.ip(), now) {
            self.counters.handshake_rate_limited += 1;
            return false;
        }
        match self
            .rate_limiter
            .verify_packet(Some(src.ip()), datagram, &mut self.buf)
        {
            Ok(_) => true,
            Err(TunnResult::WriteToNetwork(cookie)) => {
                self.counters.cookie_replies_sent += 1;
                sink.send_to(src, cookie);
                false
            }
            Err(TunnResult::Err(e)) => {
                count_error(&mut self.counters, &e);
                false
            }
            Err(_) => false,
        }
    }

    /// The next instant at which [`Gateway::handle_timeout`] wants to run.
    #[must_use]
    pub fn poll_timeout(&self) -> Instant {
        let mut t = self.next_tick.min(self.next_second);
        if let Some(p) = self.pending_inits.front() {
            // In the past: answer the waiting initiations as soon as the driver comes round.
            t = t.min(p.queued_at);
        }
        match self.nat.as_ref().and_then(|n| n.poll_timeout()) {
            Some(n) => t.min(n),
            None => t,
        }
    }

    /// Services the tunnels' timers (handshake retries, rekeying, keepalives) and the rate
    /// limiters. Call when `now` reaches [`Gateway::poll_timeout`]; calling earlier is harmless.
    pub fn handle_timeout(&mut self, now: Instant, sink: &mut impl Sink) {
        for _ in 0..INITIATIONS_PER_TIMEOUT {
            let Some(p) = self.pending_inits.pop_front() else {
                break;
            };
            self.answer_initiation(p.src, &p.datagram, now, sink);
        }
        if let Some(nat) = &mut self.nat {
            nat.handle_timeout(now);
        }
        if now >= self.next_second {
            self.rate_limiter.reset_count();
            self.source_limiter.handle_timeout(now);
            self.next_second = now + Duration::from_secs(1);
        }
        if now < self.next_tick {
            return;
        }
        self.next_tick = now + TIMER_TICK;
        for peer in self.peers.iter_mut().flatten() {
            let Some(tunn) = peer.tunn_if_active() else {
                continue;
            };
            match tunn.update_timers(&mut self.buf) {
                TunnResult::WriteToNetwork(datagram) => match peer.endpoint {
                    Some(ep) => sink.send_to(ep, datagram),
                    None => self.counters.tx_no_endpoint += 1,
                },
                TunnResult::Err(WireGuardError::ConnectionExpired) => {
                    debug!(peer = %peer.spec.name, "session expired");
                }
                TunnResult::Err(e) => debug!(peer = %peer.spec.name, error = ?e, "timer error"),
                _ => {}
            }
        }
    }
}

/// Writes a decrypted packet to the TUN device if its source belongs to the peer it came from
/// (after NAT, when there are `[nat]` rules).
#[expect(
    clippy::too_many_arguments,
    reason = "disjoint borrows of the gateway's fields"
)]
fn deliver(
    routes: &PrefixTable<PeerId>,
    id: PeerId,
    src: IpAddr,
    inner: &[u8],
    counters: &mut Counters,
    nat: Option<&mut nat::GatewayNat>,
    now: Instant,
    sink: &mut impl Sink,
) {
    if routes.longest_match(src) == Some(&id) {
        let Some(nat) = nat else {
            sink.write_tun(inner);
            return;
        };
        let n = inner.len().min(nat.buf.len());
        nat.buf[..n].copy_from_slice(&inner[..n]);
        let transit = Tunn::dst_address(inner).is_some_and(|d| routes.longest_match(d).is_some());
        match nat.translate_to_tun(n, transit, now) {
            nat::ToTun::Write(len) => sink.write_tun(&nat.buf[..len]),
            nat::ToTun::Tunnels(len) => nat.to_tunnels.push(nat.buf[..len].to_vec()),
            nat::ToTun::Reply(p) => nat.to_tunnels.push(p),
            nat::ToTun::Drop => {}
        }
    } else {
        counters.rx_source_not_allowed += 1;
        trace!(%src, "inner source outside the peer's allowed_ips");
    }
}

fn count_error(counters: &mut Counters, e: &WireGuardError) {
    match e {
        WireGuardError::DuplicateCounter
        | WireGuardError::InvalidCounter
        | WireGuardError::WrongTai64nTimestamp => counters.rx_replayed += 1,
        WireGuardError::InvalidMac
        | WireGuardError::InvalidAeadTag
        | WireGuardError::WrongKey
        | WireGuardError::InvalidTai64nTimestamp => counters.rx_auth_failed += 1,
        WireGuardError::WrongIndex
        | WireGuardError::NoCurrentSession
        | WireGuardError::ConnectionExpired => counters.rx_unknown_peer += 1,
        WireGuardError::UnderLoad => counters.handshake_rate_limited += 1,
        WireGuardError::DestinationBufferTooSmall
        | WireGuardError::IncorrectPacketLength
        | WireGuardError::UnexpectedPacket
        | WireGuardError::WrongPacketType
        | WireGuardError::InvalidPacket
        | WireGuardError::LockFailed => counters.rx_malformed += 1,
    }
}

#[cfg(test)]
mod tests;
