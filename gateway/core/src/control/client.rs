//! The remote worker's side of the control protocol: a DHCP-style client over Noise IK.
//!
//! ```text
//!  Init ──start──▶ Discovering ──Offer──▶ Requesting ──Ack──▶ Bound ──T1──▶ Renewing ──T2──▶ Rebinding
//!                   ▲  ▲   │Nak (retry later)  │Nak / no answer  ▲  ◀──Ack────┘              │
//!                   │  │   ▼                   ▼                 └──────────Ack─────────────┤
//!                   │  └───┴───────────────────┘                                            │
//!                   └──────────────── expiry or Nak (Lost) ─────────────────────────────────┘
//!  Bound / Renewing / Rebinding ──release()──▶ Releasing ──ReleaseAck or give up──▶ Released
//! ```
//!
//! The Noise session under it is made on demand: whenever a message is due and there is no
//! session, or the session is near the gateway's limits, or two sends in a row went unanswered
//! (the gateway may have restarted and forgotten it), the client starts a handshake and sends
//! the message once the handshake completes.

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Instant, SystemTime};

use ipnet::IpNet;
use rand_core::CryptoRngCore;
use snow::HandshakeState;

use super::message::{Body, Candidate, LeaseParams, Message, NakReason, MAX_CANDIDATES};
use super::noise::{self, Tai64N};
use super::session::Session;
use super::wire::{self, HandshakeResponse, PacketKind, Transport};
use super::{short_key, ControlCounters, ControlError, Retransmit, Transmit};
use crate::keys::{PrivateKey, PublicKey};
use crate::lease::LeaseInfo;

/// Sends over one session without any answer after which the client assumes the gateway lost
/// the session (e.g. it restarted) and makes a new one. Not smaller: with fewer, a path that
/// loses every other datagram could make the client rehandshake forever.
const MAX_UNANSWERED: u32 = 4;

/// How the client reaches its gateway, and its timers.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The client's static key (the same as its WireGuard key).
    pub private_key: PrivateKey,
    /// The gateway's static public key.
    pub gateway_key: PublicKey,
    /// The gateway's UDP endpoint (its WireGuard listen port).
    pub gateway: SocketAddr,
    /// The address to ask for in the first Discover (e.g. the one held before a restart).
    pub requested_address: Option<Ipv4Addr>,
    /// Backoff for handshakes and requests.
    pub retransmit: Retransmit,
    /// Requests sent for one offer before going back to Discover.
    pub max_request_attempts: u32,
    /// Releases sent before giving up and reporting the address released anyway.
    pub max_release_attempts: u32,
    /// Endpoint updates sent before giving up on an exchange.
    pub max_endpoint_attempts: u32,
}

impl ClientConfig {
    /// A config with default timers: backoff 1 s doubling to 32 s, 4 requests, 3 releases,
    /// 3 endpoint updates.
    pub fn new(private_key: PrivateKey, gateway_key: PublicKey, gateway: SocketAddr) -> Self {
        Self {
            private_key,
            gateway_key,
            gateway,
            requested_address: None,
            retransmit: Retransmit::default(),
            max_request_attempts: 4,
            max_release_attempts: 3,
            max_endpoint_attempts: 3,
        }
    }
}

/// Where the client is in the lease's life (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Created; discovery starts at the first `handle_timeout`.
    Init,
    /// Asking for an offer.
    Discovering,
    /// Asking for the offered address.
    Requesting,
    /// Holding an address.
    Bound,
    /// Past T1: asking the gateway to extend the lease.
    Renewing,
    /// Past T2: still asking, over a fresh session, until the lease expires.
    Rebinding,
    /// Giving the address back.
    Releasing,
    /// Done; the client does nothing more.
    Released,
}

/// An address with what the gateway pushed with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// The lease; `expires_at` is on the client's wall clock, counted from when the request was
    /// first sent.
    pub lease: LeaseInfo,
    /// Routes to send into the tunnel.
    pub routes: Vec<IpNet>,
    /// DNS servers to use.
    pub dns: Vec<IpAddr>,
}

/// What the client's driver should act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// An address was acquired: configure the interface, routes and DNS.
    Bound(Binding),
    /// The lease was extended (routes and DNS may have changed).
    Renewed(Binding),
    /// The address is gone (expired, or the gateway refused to renew it): remove it. Discovery
    /// starts again.
    Lost {
        /// The address that was held.
        address: Ipv4Addr,
    },
    /// [`ControlClient::release`] finished (acknowledged, or given up on): the driver may exit.
    Released {
        /// The address that was given back, if one was held.
        address: Option<Ipv4Addr>,
    },
    /// The gateway refused a Discover, Request or Renew.
    Refused(NakReason),
    /// The answer to [`ControlClient::exchange_endpoints`].
    PeerEndpoints {
        /// Whose candidates these are.
        peer: PublicKey,
        /// The candidates the gateway has for it.
        candidates: Vec<Candidate>,
    },
}

/// One request and its retransmission state.
#[derive(Debug)]
struct Transaction {
    xid: u32,
    body: Body,
    /// When it was first sent (lease times count from here).
    started: Instant,
    started_wall: SystemTime,
    /// Not sent yet: the id and start times are set at the first send.
    fresh: bool,
    /// Retransmission timer firings since the first send or the last completed handshake
    /// (backoff exponent, and what `max_*_attempts` counts).
    attempts: u32,
    /// When to send it (again).
    next_send: Instant,
}

enum Link {
    Down,
    Handshaking {
        state: Box<HandshakeState>,
        local_index: u32,
        attempts: u32,
        next_send: Instant,
    },
    Up {
        session: Box<Session>,
        /// Sends since the last authentic packet from the gateway.
        unanswered: u32,
    },
}

/// Lease timers on the monotonic clock.
#[derive(Debug, Clone, Copy)]
struct Timers {
    t1: Instant,
    t2: Instant,
    expiry: Instant,
}

/// The remote worker's control-protocol state machine.
///
/// # Driving it
///
/// ```text
/// let mut client = ControlClient::new(config, now);
/// loop {
///     wait for a datagram from the socket, for `poll_timeout()`, or for shutdown
///     datagram:  let _ = client.handle_input(&bytes, now, wall, &mut rng);
///     timeout:   client.handle_timeout(now, wall, &mut rng);
///     shutdown:  client.release(now, wall, &mut rng)   (then loop until Event::Released)
///     while let Some(t) = client.poll_transmit() { socket.send_to(&t.contents, t.destination) }
///     while let Some(e) = client.poll_event()    { configure the interface; exit on Released }
/// }
/// ```
///
/// `wall` (the wall clock) stamps handshakes and lease expiries; `rng` makes ephemeral keys,
/// session indices and transaction ids.
pub struct ControlClient {
    config: ClientConfig,
    /// Short form of our public key, for logs.
    label: String,
    state: State,
    start_at: Instant,
    link: Link,
    last_timestamp: Option<Tai64N>,
    requested: Option<Ipv4Addr>,
    lease_tx: Option<Transaction>,
    endpoint_tx: Option<Transaction>,
    binding: Option<(Binding, Timers)>,
    /// Refusals in a row, for backing off Discover.
    refusals: u32,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    counters: ControlCounters,
}

impl std::fmt::Debug for ControlClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlClient")
            .field("state", &self.state)
            .field("gateway", &self.config.gateway)
            .field("binding", &self.binding.as_ref().map(|(b, _)| &b.lease))
            .finish_non_exhaustive()
    }
}

impl ControlClient {
    /// A client in [`State::Init`]; [`Self::poll_timeout`] returns `now`, and the first
    /// [`Self::handle_timeout`] starts discovery.
    pub fn new(config: ClientConfig, now: Instant) -> Self {
        let requested = config.requested_address;
        Self {
            label: short_key(&config.private_key.public_key()),
            config,
            state: State::Init,
            start_at: now,
            link: Link::Down,
            last_timestamp: None,
            requested,
            lease_tx: None,
            endpoint_tx: None,
            binding: None,
            refusals: 0,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            counters: ControlCounters::default(),
        }
    }

    /// Where the client is.
    pub fn state(&self) -> State {
        self.state
    }

    /// The address held, if any.
    pub fn binding(&self) -> Option<&Binding> {
        self.binding.as_ref().map(|(b, _)| b)
    }

    /// What was received and dropped, by reason.
    pub fn counters(&self) -> &ControlCounters {
        &self.counters
    }

    /// Handles one datagram from the gateway's port. On `Err` it was dropped.
    pub fn handle_input<R: CryptoRngCore + ?Sized>(
        &mut self,
        bytes: &[u8],
        now: Instant,
        wall: SystemTime,
        rng: &mut R,
    ) -> Result<(), ControlError> {
        self.counters.rx_packets += 1;
        let result = match wire::classify(bytes) {
            Ok(PacketKind::HandshakeResponse) => self.handle_response(bytes, now, wall, rng),
            Ok(PacketKind::Transport) => self.handle_transport(bytes, now, wall, rng),
            Ok(PacketKind::HandshakeInit) => Err(ControlError::Unexpected {
                message: "handshake init",
                why: "the client never answers handshakes",
            }),
            Err(e) => Err(e.into()),
        };
        if let Err(e) = &result {
            e.count(&mut self.counters);
            tracing::trace!(client = %self.label(), error = %e, "control packet dropped");
        }
        result
    }

    fn handle_response<R: CryptoRngCore + ?Sized>(
        &mut self,
        bytes: &[u8],
        now: Instant,
        wall: SystemTime,
        rng: &mut R,
    ) -> Result<(), ControlError> {
        let response = HandshakeResponse::new_checked(bytes)?;
        let index = response.receiver_index();
        let Link::Handshaking {
            state, local_index, ..
        } = &mut self.link
        else {
            return Err(ControlError::UnknownSession(index));
        };
        if *local_index != index {
            return Err(ControlError::UnknownSession(index));
        }
        let local_index = *local_index;
        let remote_index = noise::complete(state, &response)?;
        let Link::Handshaking { state, .. } = std::mem::replace(&mut self.link, Link::Down) else {
            return Err(ControlError::Internal("link changed".into()));
        };
        let transport = noise::into_transport(*state)?;
        self.link = Link::Up {
            session: Box::new(Session::new(transport, local_index, remote_index, now)),
            unanswered: 0,
        };
        self.counters.handshakes += 1;
        tracing::debug!(client = %self.label(), index = local_index, "control session established");
        // Send what was waiting for the session (not a transaction whose time has not come),
        // with the backoff started over: the gateway is evidently there.
        for which in [TxSlot::Lease, TxSlot::Endpoint] {
            if let Some(tx) = self.slot(which).as_mut().filter(|tx| !tx.fresh) {
                tx.attempts = 0;
                self.transmit_slot(which, now, wall, rng);
            }
        }
        Ok(())
    }

    fn handle_transport<R: CryptoRngCore + ?Sized>(
        &mut self,
        bytes: &[u8],
        now: Instant,
        wall: SystemTime,
        rng: &mut R,
    ) -> Result<(), ControlError> {
        let packet = Transport::new_checked(bytes)?;
        let index = packet.receiver_index();
        let Link::Up {
            session,
            unanswered,
        } = &mut self.link
        else {
            return Err(ControlError::UnknownSession(index));
        };
        if session.local_index != index {
            return Err(ControlError::UnknownSession(index));
        }
        let plaintext = session.open(&packet, now)?;
        *unanswered = 0;
        let message = Message::parse(&plaintext)?;
        self.on_message(message, now, wall, rng)
    }

    fn on_message<R: CryptoRngCore + ?Sized>(
        &mut self,
        message: Message,
        now: Instant,
        wall: SystemTime,
        rng: &mut R,
    ) -> Result<(), ControlError> {
        let stale = |message: &Body| ControlError::Unexpected {
            message: message.name(),
            why: "no transaction with this id is open",
        };
        if let Body::PeerEndpoints { peer, candidates } = message.body {
            if self.endpoint_tx.as_ref().map(|t| t.xid) != Some(message.xid) {
                return Err(stale(&Body::PeerEndpoints { peer, candidates }));
            }
            self.endpoint_tx = None;
            self.events
                .push_back(Event::PeerEndpoints { peer, candidates });
            return Ok(());
        }
        let Some(tx) = self
            .lease_tx
            .as_ref()
            .filter(|tx| !tx.fresh && tx.xid == message.xid)
        else {
            return Err(stale(&message.body));
        };
        let (started, started_wall) = (tx.started, tx.started_wall);
        match (self.state, message.body) {
            (State::Discovering, Body::Offer(offer)) => {
                tracing::debug!(client = %self.label(), lease = %offer.address, "offered");
                self.state = State::Requesting;
                let body = Body::Request {
                    address: offer.address,
                };
                self.start(body, now, wall, rng);
            }
            (State::Requesting, Body::Ack { lease, routes, dns }) => {
                let expected = match self.lease_tx.as_ref().map(|t| &t.body) {
                    Some(Body::Request { address }) => Some(*address),
                    _ => None,
                };
                if expected != Some(lease.address) {
                    return Err(ControlError::Unexpected {
                        message: "ack",
                        why: "it is for another address than requested",
                    });
                }
                let binding = self.bind(lease, routes, dns, started, started_wall);
                tracing::info!(client = %self.label(), lease = %lease.address, "bound");
                self.refusals = 0;
                self.events.push_back(Event::Bound(binding));
            }
            (State::Renewing | State::Rebinding, Body::Ack { lease, routes, dns }) => {
                if self.binding.as_ref().map(|(b, _)| b.lease.address) != Some(lease.address) {
                    return Err(ControlError::Unexpected {
                        message: "ack",
                        why: "it is for another address than held",
                    });
                }
                let binding = self.bind(lease, routes, dns, started, started_wall);
                tracing::debug!(client = %self.label(), lease = %lease.address, "renewed");
                self.events.push_back(Event::Renewed(binding));
            }
            (State::Discovering | State::Requesting, Body::Nak { reason, .. }) => {
                tracing::info!(client = %self.label(), %reason, "refused");
                self.events.push_back(Event::Refused(reason));
                if reason == NakReason::AddressUnavailable {
                    self.requested = None;
                }
                self.refusals = self.refusals.saturating_add(1);
                let delay = self.config.retransmit.delay(self.refusals - 1);
                self.state = State::Discovering;
                let body = Body::Discover {
                    requested: self.requested,
                };
                self.start_later(body, now, wall, now + delay);
            }
            (State::Renewing | State::Rebinding, Body::Nak { reason, .. }) => {
                tracing::info!(client = %self.label(), %reason, "renewal refused");
                self.events.push_back(Event::Refused(reason));
                if reason == NakReason::AddressUnavailable {
                    self.requested = None;
                }
                self.lose(now, wall, rng);
            }
            (State::Releasing, Body::ReleaseAck { address }) => {
                tracing::info!(client = %self.label(), lease = %address, "released");
                self.finish_release(Some(address));
            }
            (_, body) => {
                return Err(ControlError::Unexpected {
                    message: body.name(),
                    why: "not expected in this state",
                })
            }
        }
        Ok(())
    }

    /// Records a lease from an Ack; lease times count from when the request was first sent.
    fn bind(
        &mut self,
        lease: LeaseParams,
        routes: Vec<IpNet>,
        dns: Vec<IpAddr>,
        started: Instant,
        started_wall: SystemTime,
    ) -> Binding {
        let binding = Binding {
            lease: LeaseInfo {
                address: lease.address,
                prefix_len: lease.prefix_len,
                lease_time: lease.lease_time,
                renew_after: lease.renew_after,
                rebind_after: lease.rebind_after,
                expires_at: started_wall + lease.lease_time,
            },
            routes,
            dns,
        };
        let timers = Timers {
            t1: started + lease.renew_after,
            t2: started + lease.rebind_after,
            expiry: started + lease.lease_time,
        };
        self.binding = Some((binding.clone(), timers));
        self.requested = Some(lease.address);
        self.lease_tx = None;
        self.state = State::Bound;
        binding
    }

    /// The address is gone: report it and discover again.
    fn lose<R: CryptoRngCore + ?Sized>(&mut self, now: Instant, wall: SystemTime, rng: &mut R) {
        if let Some((b, _)) = self.binding.take() {
            tracing::info!(client = %self.label(), lease = %b.lease.address, "lease lost");
            self.events.push_back(Event::Lost {
                address: b.lease.address,
            });
        }
        self.state = State::Discovering;
        let body = Body::Discover {
            requested: self.requested,
        };
        self.start(body, now, wall, rng);
    }

    fn finish_release(&mut self, address: Option<Ipv4Addr>) {
        self.state = State::Released;
        self.binding = None;
        self.lease_tx = None;
        self.endpoint_tx = None;
        self.link = Link::Down;
        self.events.push_back(Event::Released { address });
    }

    /// Gives the address back. Emits [`Event::Released`] when the gateway acknowledges, after
    /// `max_release_attempts` unanswered tries, or at once if no address is held.
    pub fn release<R: CryptoRngCore + ?Sized>(
        &mut self,
        now: Instant,
        wall: SystemTime,
        rng: &mut R,
    ) {
        match self.state {
            State::Bound | State::Renewing | State::Rebinding => {
                let Some(address) = self.binding.as_ref().map(|(b, _)| b.lease.address) else {
                    self.finish_release(None);
                    return;
                };
                tracing::debug!(client = %self.label(), lease = %address, "releasing");
                self.state = State::Releasing;
                self.start(Body::Release { address }, now, wall, rng);
            }
            State::Init | State::Discovering | State::Requesting => self.finish_release(None),
            State::Releasing | State::Released => {}
        }
    }

    /// Sends our endpoint candidates to the gateway and asks for `peer`'s (or our own, as the
    /// gateway stored them, which include the address it sees us at). The answer comes as
    /// [`Event::PeerEndpoints`]; a new call replaces an unanswered one. At most
    /// [`MAX_CANDIDATES`] are sent.
    pub fn exchange_endpoints<R: CryptoRngCore + ?Sized>(
        &mut self,
        mut candidates: Vec<Candidate>,
        peer: Option<PublicKey>,
        now: Instant,
        wall: SystemTime,
        rng: &mut R,
    ) {
        if self.state == State::Released {
            return;
        }
        candidates.truncate(MAX_CANDIDATES);
        let tx = Transaction {
            xid: rng.next_u32(),
            body: Body::EndpointUpdate { candidates, peer },
            started: now,
            started_wall: wall,
            fresh: true,
            attempts: 0,
            next_send: now,
        };
        self.endpoint_tx = Some(tx);
        self.transmit_slot(TxSlot::Endpoint, now, wall, rng);
    }

    /// Starts a new lease transaction now.
    fn start<R: CryptoRngCore + ?Sized>(
        &mut self,
        body: Body,
        now: Instant,
        wall: SystemTime,
        rng: &mut R,
    ) {
        self.lease_tx = Some(Transaction {
            xid: rng.next_u32(),
            body,
            started: now,
            started_wall: wall,
            fresh: true,
            attempts: 0,
            next_send: now,
        });
        self.transmit_slot(TxSlot::Lease, now, wall, rng);
    }

    /// Starts a new lease transaction at `at`; its id is drawn when it is first sent (so a
    /// retransmission cache at the gateway cannot answer it with the refusal it replaces).
    fn start_later(&mut self, body: Body, now: Instant, wall: SystemTime, at: Instant) {
        self.lease_tx = Some(Transaction {
            // Drawn at the first send.
            xid: 0,
            body,
            started: now,
            started_wall: wall,
            fresh: true,
            attempts: 0,
            next_send: at,
        });
    }

    fn slot(&mut self, which: TxSlot) -> &mut Option<Transaction> {
        match which {
            TxSlot::Lease => &mut self.lease_tx,
            TxSlot::Endpoint => &mut self.endpoint_tx,
        }
    }

    /// (Re)sends the transaction in `which` and schedules its next retransmission.
    fn transmit_slot<R: CryptoRngCore + ?Sized>(
        &mut self,
        which: TxSlot,
        now: Instant,
        wall: SystemTime,
        rng: &mut R,
    ) {
        let retransmit = self.config.retransmit;
        let Some(tx) = self.slot(which).as_mut() else {
            return;
        };
        if tx.fresh {
            // Lease times count from the first send.
            tx.fresh = false;
            tx.started = now;
            tx.started_wall = wall;
            if tx.xid == 0 {
                tx.xid = rng.next_u32();
            }
        }
        tx.next_send = now + retransmit.delay(tx.attempts);
        tx.attempts += 1;
        let message = Message {
            xid: tx.xid,
            body: tx.body.clone(),
        };
        tracing::trace!(client = %self.label(), message = message.body.name(), xid = message.xid, "sending");
        self.send(&message, now, wall, rng);
    }

    /// Sends `message` over the session, or starts a handshake if there is no usable one (the
    /// message then goes out when the handshake completes).
    fn send<R: CryptoRngCore + ?Sized>(
        &mut self,
        message: &Message,
        now: Instant,
        wall: SystemTime,
        rng: &mut R,
    ) {
        let plaintext = match message.emit() {
            Ok(p) => p,
            Err(e) => {
                self.counters.internal_errors += 1;
                tracing::warn!(client = %self.label(), error = %e, "message does not encode");
                return;
            }
        };
        match &mut self.link {
            Link::Up {
                session,
                unanswered,
            } if !session.needs_rehandshake(now) && *unanswered < MAX_UNANSWERED => {
                match session.seal(&plaintext) {
                    Ok(packet) => {
                        *unanswered += 1;
                        self.queue(packet);
                    }
                    Err(e) => {
                        tracing::debug!(client = %self.label(), error = %e, "session unusable");
                        self.handshake(now, wall, rng);
                    }
                }
            }
            Link::Handshaking { .. } => {}
            Link::Up { .. } | Link::Down => self.handshake(now, wall, rng),
        }
    }

    /// Starts (or restarts) a handshake with a fresh ephemeral key, index and timestamp.
    fn handshake<R: CryptoRngCore + ?Sized>(
        &mut self,
        now: Instant,
        wall: SystemTime,
        rng: &mut R,
    ) {
        let attempts = match &self.link {
            Link::Handshaking { attempts, .. } => attempts + 1,
            _ => 0,
        };
        // Timestamps must grow even if the wall clock steps back.
        let mut timestamp = Tai64N::from_system_time(wall);
        if let Some(last) = self.last_timestamp {
            timestamp = timestamp.max(last.successor());
        }
        let local_index = rng.next_u32();
        match noise::initiate(
            &self.config.private_key,
            &self.config.gateway_key,
            local_index,
            timestamp,
            rng,
        ) {
            Ok(init) => {
                self.last_timestamp = Some(timestamp);
                self.link = Link::Handshaking {
                    state: Box::new(init.state),
                    local_index,
                    attempts,
                    next_send: now + self.config.retransmit.delay(attempts),
                };
                tracing::debug!(client = %self.label(), attempt = attempts + 1, "control handshake");
                self.queue(init.packet);
            }
            Err(e) => {
                self.counters.internal_errors += 1;
                tracing::warn!(client = %self.label(), error = %e, "cannot start a handshake");
                self.link = Link::Down;
            }
        }
    }

    fn queue(&mut self, contents: Vec<u8>) {
        self.counters.tx_packets += 1;
        self.transmits.push_back(Transmit {
            destination: self.config.gateway,
            contents,
        });
    }

    /// Runs the timers that are due: start, T1, T2, expiry, retransmissions.
    pub fn handle_timeout<R: CryptoRngCore + ?Sized>(
        &mut self,
        now: Instant,
        wall: SystemTime,
        rng: &mut R,
    ) {
        match self.state {
            State::Released => return,
            State::Init => {
                if now >= self.start_at {
                    self.state = State::Discovering;
                    let body = Body::Discover {
                        requested: self.requested,
                    };
                    self.start(body, now, wall, rng);
                }
                return;
            }
            _ => {}
        }
        if let Some((address, timers)) = self.binding.as_ref().map(|(b, t)| (b.lease.address, *t)) {
            if now >= timers.expiry {
                if self.state == State::Releasing {
                    self.finish_release(Some(address));
                } else {
                    self.lose(now, wall, rng);
                }
            } else if now >= timers.t2 && matches!(self.state, State::Bound | State::Renewing) {
                tracing::debug!(client = %self.label(), "T2: rebinding over a new session");
                self.state = State::Rebinding;
                if !matches!(self.link, Link::Handshaking { .. }) {
                    self.link = Link::Down;
                }
                self.start(Body::Renew { address }, now, wall, rng);
            } else if now >= timers.t1 && self.state == State::Bound {
                tracing::debug!(client = %self.label(), "T1: renewing");
                self.state = State::Renewing;
                self.start(Body::Renew { address }, now, wall, rng);
            }
        }
        if let Some(due) = self
            .lease_tx
            .as_ref()
            .map(|t| (t.next_send <= now, t.attempts))
        {
            if due.0 {
                self.lease_retransmit(due.1, now, wall, rng);
            }
        }
        if let Some(tx) = &self.endpoint_tx {
            if tx.next_send <= now {
                if tx.attempts >= self.config.max_endpoint_attempts {
                    tracing::debug!(client = %self.label(), "endpoint exchange unanswered; giving up");
                    self.endpoint_tx = None;
                } else {
                    self.transmit_slot(TxSlot::Endpoint, now, wall, rng);
                }
            }
        }
        if let Link::Handshaking { next_send, .. } = &self.link {
            if *next_send <= now {
                if self.lease_tx.is_none() && self.endpoint_tx.is_none() {
                    self.link = Link::Down;
                } else {
                    self.handshake(now, wall, rng);
                }
            }
        }
    }

    fn lease_retransmit<R: CryptoRngCore + ?Sized>(
        &mut self,
        attempts: u32,
        now: Instant,
        wall: SystemTime,
        rng: &mut R,
    ) {
        match self.state {
            State::Requesting if attempts >= self.config.max_request_attempts => {
                tracing::debug!(client = %self.label(), "request unanswered; discovering again");
                self.state = State::Discovering;
                let body = Body::Discover {
                    requested: self.requested,
                };
                self.start(body, now, wall, rng);
            }
            State::Releasing if attempts >= self.config.max_release_attempts => {
                tracing::debug!(client = %self.label(), "release unanswered; giving up");
                let address = self.binding.as_ref().map(|(b, _)| b.lease.address);
                self.finish_release(address);
            }
            State::Releasing => {
                // Fewer tries than MAX_UNANSWERED: an unanswered Release may mean the gateway
                // restarted and forgot the session, so retry over a new one.
                if matches!(self.link, Link::Up { .. }) {
                    self.link = Link::Down;
                }
                self.transmit_slot(TxSlot::Lease, now, wall, rng);
            }
            _ => self.transmit_slot(TxSlot::Lease, now, wall, rng),
        }
    }

    /// The next datagram to send (to the gateway).
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next event for the driver.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Self::handle_timeout`] should next be called; `None` once released.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.state == State::Released {
            return None;
        }
        if self.state == State::Init {
            return Some(self.start_at);
        }
        let lease_timer = self.binding.as_ref().map(|(_, t)| match self.state {
            State::Bound => t.t1,
            State::Renewing => t.t2,
            _ => t.expiry,
        });
        let handshake = match &self.link {
            Link::Handshaking { next_send, .. } => Some(*next_send),
            _ => None,
        };
        [
            lease_timer,
            handshake,
            self.lease_tx.as_ref().map(|t| t.next_send),
            self.endpoint_tx.as_ref().map(|t| t.next_send),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn label(&self) -> &str {
        &self.label
    }
}

/// Which transaction slot.
#[derive(Debug, Clone, Copy)]
enum TxSlot {
    Lease,
    Endpoint,
}
