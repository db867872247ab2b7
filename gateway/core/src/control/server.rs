//! The gateway's side of the control protocol.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant, SystemTime};

use ipnet::IpNet;
use rand_core::CryptoRngCore;

use super::message::{
    Body, Candidate, CandidateKind, LeaseParams, Message, MessageError, NakReason, MAX_CANDIDATES,
};
use super::noise::{self, Tai64N};
use super::session::Session;
use super::wire::{self, HandshakeInit, PacketKind, Transport};
use super::{short_key, ControlCounters, ControlError, Transmit};
use crate::keys::{PrivateKey, PublicKey};
use crate::lease::{AddressAuthority, LeaseInfo, Refusal};

/// A client key allowed to use the control protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorizedClient {
    /// The client's static (WireGuard) public key.
    pub key: PublicKey,
    /// Its name from the config, for logs and events.
    pub name: Option<String>,
}

/// What the gateway's control server needs to know.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The gateway's static key (the same as its WireGuard key).
    pub private_key: PrivateKey,
    /// The clients allowed to connect.
    pub clients: Vec<AuthorizedClient>,
    /// Routes pushed to every client in its Ack (`0.0.0.0/0` for full tunnel).
    pub routes: Vec<IpNet>,
    /// DNS servers pushed to every client in its Ack.
    pub dns: Vec<IpAddr>,
}

/// Why a [`ServerConfig`] cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServerConfigError {
    /// The pushed routes and DNS servers would not fit in an Ack.
    #[error("pushed routes and DNS servers do not fit a control message: {0}")]
    PushTooLarge(MessageError),
}

/// What the gateway should do about a client's lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A client was granted (or re-granted) `lease`: add or update its WireGuard peer with the
    /// lease's address as allowed IP, at `endpoint`.
    Leased {
        /// The client's key (also its WireGuard key).
        client: PublicKey,
        /// Its configured name.
        name: Option<String>,
        /// The lease.
        lease: LeaseInfo,
        /// Where the request came from.
        endpoint: SocketAddr,
    },
    /// A client's lease was extended.
    Renewed {
        /// The client's key.
        client: PublicKey,
        /// Its configured name.
        name: Option<String>,
        /// The extended lease.
        lease: LeaseInfo,
        /// Where the renewal came from.
        endpoint: SocketAddr,
    },
    /// A client released its address: remove its WireGuard peer.
    Released {
        /// The client's key.
        client: PublicKey,
        /// The released address.
        address: Ipv4Addr,
    },
}

/// An answer kept so that a retransmitted request gets the same answer without asking the
/// authority (and without a second event).
#[derive(Debug, Clone)]
struct CachedReply {
    xid: u32,
    request_type: u8,
    reply: Body,
}

/// What the server remembers about an authorised client.
#[derive(Debug, Default)]
struct ClientEntry {
    name: Option<String>,
    /// The newest handshake timestamp accepted from this key (memory only).
    last_timestamp: Option<Tai64N>,
    /// The newest session, and the one before it (kept until it expires, for packets in flight).
    current: Option<u32>,
    previous: Option<u32>,
    last_reply: Option<CachedReply>,
    /// Endpoint candidates the client reported, plus the address we saw it at.
    candidates: Vec<Candidate>,
}

struct ServerSession {
    session: Session,
    client: PublicKey,
    /// Its key in [`ControlServer::deadlines`]: when it expires, as of its last change.
    deadline: Instant,
}

/// When `session` should be dropped: its time limits, or at once (its handshake's time, which
/// has passed) once it has used up its messages.
fn deadline(session: &Session) -> Instant {
    if session.exhausted() {
        session.established
    } else {
        session.expires_at()
    }
}

/// The gateway's control-protocol state machine.
///
/// # Driving it
///
/// ```text
/// loop {
///     wait for a datagram whose first byte passes `is_control_packet`, or for `poll_timeout()`
///     datagram:  let _ = server.handle_input(src, &bytes, now, wall, &mut rng, &mut pool);
///     timeout:   server.handle_timeout(now);
///     while let Some(t) = server.poll_transmit() { socket.send_to(&t.contents, t.destination) }
///     while let Some(e) = server.poll_event()    { add/update/remove the WireGuard peer }
/// }
/// ```
///
/// `handle_input` returns why a datagram was dropped (for logs); a dropped datagram is never
/// answered. The lease pool's own expiry (`LeasePool::handle_timeout`) is the caller's: this
/// server only keeps sessions.
pub struct ControlServer {
    private_key: PrivateKey,
    public_key: PublicKey,
    clients: HashMap<PublicKey, ClientEntry>,
    sessions: HashMap<u32, ServerSession>,
    /// Every session's `(deadline, index)`, earliest first: `poll_timeout` is the first,
    /// `handle_timeout` takes from the front. Kept in step with `sessions` by
    /// `insert_session`, `remove_session` and `reschedule`.
    deadlines: BTreeSet<(Instant, u32)>,
    routes: Vec<IpNet>,
    dns: Vec<IpAddr>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    counters: ControlCounters,
}

impl std::fmt::Debug for ControlServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlServer")
            .field("public_key", &self.public_key)
            .field("clients", &self.clients.len())
            .field("sessions", &self.sessions.len())
            .finish_non_exhaustive()
    }
}

/// Checks that an Ack with these routes and DNS servers encodes.
fn check_push(routes: &[IpNet], dns: &[IpAddr]) -> Result<(), ServerConfigError> {
    let probe = Message {
        xid: 0,
        body: Body::Ack {
            lease: LeaseParams {
                address: Ipv4Addr::UNSPECIFIED,
                prefix_len: 32,
                lease_time: Duration::from_secs(u64::from(u32::MAX)),
                renew_after: Duration::from_secs(1),
                rebind_after: Duration::from_secs(1),
            },
            routes: routes.to_vec(),
            dns: dns.to_vec(),
        },
    };
    probe
        .emit()
        .map(drop)
        .map_err(ServerConfigError::PushTooLarge)
}

/// The parameters to send for `lease`, made consistent (`0 < T1 <= T2 <= lease`, whole seconds)
/// whatever the authority returned, so that an Ack always encodes.
fn wire_params(lease: &LeaseInfo) -> LeaseParams {
    let mut p = LeaseParams::from_lease(lease);
    let max = u64::from(u32::MAX);
    let lease_secs = p.lease_time.as_secs().clamp(1, max);
    let t1 = p.renew_after.as_secs().clamp(1, lease_secs);
    let t2 = p.rebind_after.as_secs().clamp(t1, lease_secs);
    p.lease_time = Duration::from_secs(lease_secs);
    p.renew_after = Duration::from_secs(t1);
    p.rebind_after = Duration::from_secs(t2);
    p.prefix_len = p.prefix_len.min(32);
    p
}

fn nak(refusal: &Refusal) -> Body {
    let address = match refusal {
        Refusal::AddressUnavailable(a) | Refusal::NoSuchLease(a) => Some(*a),
        Refusal::PoolExhausted | Refusal::Store(_) => None,
    };
    Body::Nak {
        reason: NakReason::from_refusal(refusal),
        address,
    }
}

impl ControlServer {
    /// A server with no sessions. Fails if the pushed routes and DNS servers do not fit an Ack.
    pub fn new(config: ServerConfig) -> Result<Self, ServerConfigError> {
        check_push(&config.routes, &config.dns)?;
        let public_key = config.private_key.public_key();
        let clients = config
            .clients
            .into_iter()
            .map(|c| {
                (
                    c.key,
                    ClientEntry {
                        name: c.name,
                        ..ClientEntry::default()
                    },
                )
            })
            .collect();
        Ok(Self {
            private_key: config.private_key,
            public_key,
            clients,
            sessions: HashMap::new(),
            deadlines: BTreeSet::new(),
            routes: config.routes,
            dns: config.dns,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            counters: ControlCounters::default(),
        })
    }

    /// The gateway's static public key, which clients must be configured with.
    pub fn public_key(&self) -> PublicKey {
        self.public_key
    }

    /// Allows `key` to connect (or renames it). Its replay state is kept if it was known.
    pub fn authorize(&mut self, key: PublicKey, name: Option<String>) {
        self.clients.entry(key).or_default().name = name;
    }

    /// Forbids `key` and drops its sessions at once. Returns whether it was authorised. Its
    /// lease is the authority's business.
    pub fn revoke(&mut self, key: &PublicKey) -> bool {
        let Some(entry) = self.clients.remove(key) else {
            return false;
        };
        for index in entry.current.into_iter().chain(entry.previous) {
            self.remove_session(index);
        }
        true
    }

    /// Replaces the routes and DNS servers pushed in later Acks.
    pub fn set_push(
        &mut self,
        routes: Vec<IpNet>,
        dns: Vec<IpAddr>,
    ) -> Result<(), ServerConfigError> {
        check_push(&routes, &dns)?;
        self.routes = routes;
        self.dns = dns;
        Ok(())
    }

    /// How many sessions are open.
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// What was received and dropped, by reason.
    pub fn counters(&self) -> &ControlCounters {
        &self.counters
    }

    /// Handles one control datagram from `src`.
    ///
    /// `now` drives session timers, `wall` is passed to the authority for lease times, `rng`
    /// makes the handshake's ephemeral key and session indices. On `Err` nothing was queued.
    pub fn handle_input<R, A>(
        &mut self,
        src: SocketAddr,
        bytes: &[u8],
        now: Instant,
        wall: SystemTime,
        rng: &mut R,
        authority: &mut A,
    ) -> Result<(), ControlError>
    where
        R: CryptoRngCore + ?Sized,
        A: AddressAuthority + ?Sized,
    {
        self.counters.rx_packets += 1;
        let result = match wire::classify(bytes) {
            Ok(PacketKind::HandshakeInit) => self.handle_handshake(src, bytes, now, rng),
            Ok(PacketKind::Transport) => self.handle_transport(src, bytes, now, wall, authority),
            Ok(PacketKind::HandshakeResponse) => Err(ControlError::Unexpected {
                message: "handshake response",
                why: "the gateway never initiates",
            }),
            Err(e) => Err(e.into()),
        };
        if let Err(e) = &result {
            e.count(&mut self.counters);
            tracing::trace!(endpoint = %src, error = %e, "control packet dropped");
        }
        result
    }

    fn handle_handshake<R: CryptoRngCore + ?Sized>(
        &mut self,
        src: SocketAddr,
        bytes: &[u8],
        now: Instant,
        rng: &mut R,
    ) -> Result<(), ControlError> {
        let init = HandshakeInit::new_checked(bytes)?;
        let accepted = noise::accept(&self.private_key, &init, rng)?;
        let client = accepted.client;
        let entry = self
            .clients
            .get(&client)
            .ok_or(ControlError::UnknownKey(client))?;
        if entry
            .last_timestamp
            .is_some_and(|last| accepted.timestamp <= last)
        {
            return Err(ControlError::ReplayedHandshake(client));
        }
        let timestamp = accepted.timestamp;
        let local_index = self.fresh_index(rng);
        let (packet, transport) = noise::respond(accepted, init.sender_index(), local_index)?;
        let session = Session::new(transport, local_index, init.sender_index(), now);
        self.insert_session(local_index, session, client);
        let Some(entry) = self.clients.get_mut(&client) else {
            return Err(ControlError::Internal("client vanished".into()));
        };
        entry.last_timestamp = Some(timestamp);
        let old = entry.previous.take();
        entry.previous = entry.current.replace(local_index);
        tracing::debug!(
            client = %label(&client, entry.name.as_deref()),
            endpoint = %src,
            index = local_index,
            "control session established"
        );
        if let Some(old) = old {
            self.remove_session(old);
        }
        self.counters.handshakes += 1;
        self.queue(src, packet);
        Ok(())
    }

    /// A random session index that is not 0 and not in use.
    fn fresh_index<R: CryptoRngCore + ?Sized>(&self, rng: &mut R) -> u32 {
        loop {
            let index = rng.next_u32();
            if index != 0 && !self.sessions.contains_key(&index) {
                return index;
            }
        }
    }

    fn handle_transport<A: AddressAuthority + ?Sized>(
        &mut self,
        src: SocketAddr,
        bytes: &[u8],
        now: Instant,
        wall: SystemTime,
        authority: &mut A,
    ) -> Result<(), ControlError> {
        let packet = Transport::new_checked(bytes)?;
        let index = packet.receiver_index();
        let expired = self
            .sessions
            .get(&index)
            .ok_or(ControlError::UnknownSession(index))?
            .session
            .is_expired(now);
        if expired {
            self.drop_session(index);
            return Err(ControlError::UnknownSession(index));
        }
        let s = self
            .sessions
            .get_mut(&index)
            .ok_or(ControlError::UnknownSession(index))?;
        let opened = s.session.open(&packet, now);
        // An authentic packet moves the idle deadline; a used-up session is due at once.
        self.reschedule(index);
        let plaintext = opened?;
        let client = self
            .sessions
            .get(&index)
            .ok_or(ControlError::UnknownSession(index))?
            .client;
        let message = Message::parse(&plaintext)?;
        let reply = self.answer(client, src, message, wall, authority)?;
        let s = self
            .sessions
            .get_mut(&index)
            .ok_or(ControlError::UnknownSession(index))?;
        let plaintext = reply
            .emit()
            .map_err(|e| ControlError::Internal(format!("reply does not encode: {e}")))?;
        let sealed = s.session.seal(&plaintext);
        self.reschedule(index);
        self.queue(src, sealed?);
        Ok(())
    }

    /// The answer to an authenticated message from `client`, with its side effects.
    fn answer<A: AddressAuthority + ?Sized>(
        &mut self,
        client: PublicKey,
        src: SocketAddr,
        message: Message,
        wall: SystemTime,
        authority: &mut A,
    ) -> Result<Message, ControlError> {
        let Some(entry) = self.clients.get(&client) else {
            return Err(ControlError::Internal("session of a revoked client".into()));
        };
        let name = entry.name.clone();
        let who = label(&client, name.as_deref());
        let xid = message.xid;
        let request_type = message.body.type_code();
        if let Some(cached) = &entry.last_reply {
            if cached.xid == xid && cached.request_type == request_type {
                tracing::trace!(client = %who, xid, "retransmitted request; same answer");
                return Ok(Message {
                    xid,
                    body: cached.reply.clone(),
                });
            }
        }
        let reply = match message.body {
            Body::Discover { requested } => match authority.offer(&client, requested, wall) {
                Ok(lease) => {
                    tracing::debug!(client = %who, lease = %lease.address, "offer");
                    Body::Offer(wire_params(&lease))
                }
                Err(refusal) => {
                    tracing::info!(client = %who, reason = %refusal, "discover refused");
                    nak(&refusal)
                }
            },
            Body::Request { address } => match authority.request(&client, address, wall) {
                Ok(lease) => {
                    tracing::info!(client = %who, lease = %lease.address, endpoint = %src, "leased");
                    let body = self.ack(&lease);
                    self.events.push_back(Event::Leased {
                        client,
                        name,
                        lease,
                        endpoint: src,
                    });
                    body
                }
                Err(refusal) => {
                    tracing::info!(client = %who, lease = %address, reason = %refusal, "request refused");
                    nak(&refusal)
                }
            },
            Body::Renew { address } => match authority.renew(&client, address, wall) {
                Ok(lease) => {
                    tracing::debug!(client = %who, lease = %lease.address, "renewed");
                    let body = self.ack(&lease);
                    self.events.push_back(Event::Renewed {
                        client,
                        name,
                        lease,
                        endpoint: src,
                    });
                    body
                }
                Err(refusal) => {
                    tracing::info!(client = %who, lease = %address, reason = %refusal, "renewal refused");
                    nak(&refusal)
                }
            },
            Body::Release { address } => {
                match authority.release(&client, address, wall) {
                    Ok(()) => {
                        tracing::info!(client = %who, lease = %address, "released");
                        self.events.push_back(Event::Released { client, address });
                    }
                    Err(refusal) => {
                        tracing::debug!(client = %who, lease = %address, reason = %refusal, "release of no lease");
                    }
                }
                Body::ReleaseAck { address }
            }
            Body::EndpointUpdate { candidates, peer } => {
                self.endpoints(client, src, candidates, peer)
            }
            other => {
                return Err(ControlError::Unexpected {
                    message: other.name(),
                    why: "only the gateway sends it",
                })
            }
        };
        if let Some(entry) = self.clients.get_mut(&client) {
            entry.last_reply = Some(CachedReply {
                xid,
                request_type,
                reply: reply.clone(),
            });
        }
        Ok(Message { xid, body: reply })
    }

    fn ack(&self, lease: &LeaseInfo) -> Body {
        Body::Ack {
            lease: wire_params(lease),
            routes: self.routes.clone(),
            dns: self.dns.clone(),
        }
    }

    /// Stores `client`'s candidates (with the address we see it at) and answers with `peer`'s.
    fn endpoints(
        &mut self,
        client: PublicKey,
        src: SocketAddr,
        reported: Vec<Candidate>,
        peer: Option<PublicKey>,
    ) -> Body {
        let mut stored = vec![Candidate {
            kind: CandidateKind::Reflexive,
            addr: src,
        }];
        for c in reported {
            if !stored.iter().any(|s| s.addr == c.addr) {
                stored.push(c);
            }
        }
        stored.truncate(MAX_CANDIDATES);
        if let Some(entry) = self.clients.get_mut(&client) {
            entry.candidates = stored;
        }
        let peer = peer.unwrap_or(client);
        let candidates = self
            .clients
            .get(&peer)
            .map(|e| e.candidates.clone())
            .unwrap_or_default();
        Body::PeerEndpoints { peer, candidates }
    }

    fn insert_session(&mut self, index: u32, session: Session, client: PublicKey) {
        // `fresh_index` never picks a live index; keep the two in step regardless.
        self.remove_session(index);
        let deadline = deadline(&session);
        self.deadlines.insert((deadline, index));
        self.sessions.insert(
            index,
            ServerSession {
                session,
                client,
                deadline,
            },
        );
    }

    fn remove_session(&mut self, index: u32) -> Option<ServerSession> {
        let s = self.sessions.remove(&index)?;
        self.deadlines.remove(&(s.deadline, index));
        Some(s)
    }

    /// Moves session `index` to its current deadline after it has sent or received.
    fn reschedule(&mut self, index: u32) {
        let Some(s) = self.sessions.get_mut(&index) else {
            return;
        };
        let new = deadline(&s.session);
        if new != s.deadline {
            self.deadlines.remove(&(s.deadline, index));
            self.deadlines.insert((new, index));
            s.deadline = new;
        }
    }

    fn drop_session(&mut self, index: u32) {
        let Some(s) = self.remove_session(index) else {
            return;
        };
        if let Some(entry) = self.clients.get_mut(&s.client) {
            if entry.current == Some(index) {
                entry.current = None;
            }
            if entry.previous == Some(index) {
                entry.previous = None;
            }
            tracing::debug!(client = %label(&s.client, entry.name.as_deref()), index, "control session expired");
        }
    }

    fn queue(&mut self, destination: SocketAddr, contents: Vec<u8>) {
        self.counters.tx_packets += 1;
        self.transmits.push_back(Transmit {
            destination,
            contents,
        });
    }

    /// Drops sessions that have expired. Visits only those: O(expired × log sessions).
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(&(at, index)) = self.deadlines.first() {
            if at > now {
                break;
            }
            self.drop_session(index);
        }
    }

    /// The next datagram to send.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next event for the gateway.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Self::handle_timeout`] should next be called (the earliest session expiry).
    /// O(log sessions): the driver asks on every wake-up.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadlines.first().map(|&(at, _)| at)
    }
}

/// A client's name, or its short key.
fn label(key: &PublicKey, name: Option<&str>) -> String {
    match name {
        Some(n) => n.to_owned(),
        None => short_key(key),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::net::{IpAddr, Ipv4Addr, SocketAddr};
    use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

    use rand_core::RngCore;

    use super::{AuthorizedClient, ControlServer, ServerConfig};
    use crate::control::client::{ClientConfig, ControlClient, State};
    use crate::control::session::{SESSION_IDLE_TIMEOUT, SESSION_MAX_AGE};
    use crate::control::tests::{rng, FakeAuthority, TestRng};
    use crate::keys::PrivateKey;

    const GATEWAY: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 1)), 51_820);

    /// The server's deadline index agrees with its sessions: one entry per session, at the
    /// session's own deadline; `poll_timeout` is the earliest expiry a full scan finds.
    fn check_index(server: &ControlServer) {
        assert_eq!(server.deadlines.len(), server.sessions.len());
        for (&index, s) in &server.sessions {
            assert_eq!(s.deadline, super::deadline(&s.session), "session {index}");
            assert!(server.deadlines.contains(&(s.deadline, index)));
        }
        let scan = server
            .sessions
            .values()
            .map(|s| s.session.expires_at())
            .min();
        assert_eq!(server.poll_timeout(), scan);
    }

    struct Net {
        server: ControlServer,
        clients: Vec<ControlClient>,
        by_addr: HashMap<SocketAddr, usize>,
        authority: FakeAuthority,
        rng: TestRng,
        now: Instant,
        wall: SystemTime,
    }

    impl Net {
        fn addr(i: usize) -> SocketAddr {
            SocketAddr::new(
                IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7)),
                10_000 + i as u16,
            )
        }

        /// Moves datagrams between client `i` and the server until both are quiet.
        fn settle(&mut self, i: usize) {
            loop {
                let mut moved = false;
                while let Some(t) = self.clients[i].poll_transmit() {
                    moved = true;
                    let _ = self.server.handle_input(
                        Self::addr(i),
                        &t.contents,
                        self.now,
                        self.wall,
                        &mut self.rng,
                        &mut self.authority,
                    );
                }
                while let Some(t) = self.server.poll_transmit() {
                    moved = true;
                    let c = self.by_addr[&t.destination];
                    let _ = self.clients[c].handle_input(
                        &t.contents,
                        self.now,
                        self.wall,
                        &mut self.rng,
                    );
                }
                while self.server.poll_event().is_some() {}
                while self.clients[i].poll_event().is_some() {}
                if !moved {
                    return;
                }
            }
        }
    }

    /// 200 clients whose sessions start at different times and are refreshed by traffic at
    /// random moments (so deadlines move, and some sessions are replaced by new handshakes),
    /// on a virtual clock: after every change `poll_timeout` equals a full scan's answer, and
    /// `handle_timeout` at each deadline drops exactly the expired sessions.
    #[test]
    fn deadlines_follow_traffic_with_many_sessions() {
        const CLIENTS: usize = 200;
        let mut r = rng(0xdead_11fe);
        let gateway_key = PrivateKey::generate(&mut r);
        let keys: Vec<PrivateKey> = (0..CLIENTS).map(|_| PrivateKey::generate(&mut r)).collect();
        let server = ControlServer::new(ServerConfig {
            private_key: gateway_key.clone(),
            clients: keys
                .iter()
                .map(|k| AuthorizedClient {
                    key: k.public_key(),
                    name: None,
                })
                .collect(),
            routes: Vec::new(),
            dns: Vec::new(),
        })
        .expect("valid config");
        let start = Instant::now();
        let mut net = Net {
            server,
            clients: keys
                .iter()
                .map(|k| {
                    ControlClient::new(
                        ClientConfig::new(k.clone(), gateway_key.public_key(), GATEWAY),
                        start,
                    )
                })
                .collect(),
            by_addr: (0..CLIENTS).map(|i| (Net::addr(i), i)).collect(),
            authority: FakeAuthority::new(Duration::from_secs(24 * 3600)),
            rng: r,
            now: start,
            wall: UNIX_EPOCH + Duration::from_secs(1_800_000_000),
        };
        // Each client binds 1.5 s after the one before: 200 sessions, 200 deadlines.
        for i in 0..CLIENTS {
            net.clients[i].handle_timeout(net.now, net.wall, &mut net.rng);
            net.settle(i);
            assert_eq!(net.clients[i].state(), State::Bound, "client {i}");
            check_index(&net.server);
            net.now += Duration::from_millis(1500);
        }
        assert_eq!(net.server.session_count(), CLIENTS);
        assert_eq!(
            net.server.poll_timeout(),
            Some(start + SESSION_IDLE_TIMEOUT)
        );

        // 30 virtual minutes in steps of up to 10 s. Each step: a few clients talk (their
        // session's idle deadline moves; near the limits the client rehandshakes instead),
        // then the timers run if due.
        let (mut dropped, mut refreshed) = (0, 0);
        let end = net.now + Duration::from_secs(1800);
        while net.now < end {
            net.now += Duration::from_millis(u64::from(net.rng.next_u32() % 10_000));
            net.wall = UNIX_EPOCH + Duration::from_secs(1_800_000_000) + (net.now - start);
            if let Some(due) = net.server.poll_timeout().filter(|&t| t <= net.now) {
                let before = net.server.session_count();
                let expired = net
                    .server
                    .sessions
                    .values()
                    .filter(|s| s.session.is_expired(net.now))
                    .count();
                assert!(expired > 0, "poll_timeout {due:?} with nothing expired");
                net.server.handle_timeout(net.now);
                assert_eq!(net.server.session_count(), before - expired);
                assert!(net
                    .server
                    .sessions
                    .values()
                    .all(|s| !s.session.is_expired(net.now)));
                dropped += expired;
                check_index(&net.server);
            }
            for _ in 0..3 {
                let i = net.rng.next_u32() as usize % CLIENTS;
                net.clients[i].exchange_endpoints(
                    Vec::new(),
                    None,
                    net.now,
                    net.wall,
                    &mut net.rng,
                );
                net.settle(i);
                refreshed += 1;
                check_index(&net.server);
            }
        }
        // Some sessions lived past the idle timeout thanks to traffic, none past the max age.
        assert!(dropped > CLIENTS / 2, "only {dropped} sessions expired");
        assert!(refreshed > 500);
        assert!(net
            .server
            .sessions
            .values()
            .all(|s| s.session.established + SESSION_MAX_AGE > net.now));
        assert!(net
            .server
            .sessions
            .values()
            .any(|s| s.session.last_received > s.session.established));
        // Once everyone is quiet, everything expires on time.
        while let Some(t) = net.server.poll_timeout() {
            assert!(t <= net.now + SESSION_IDLE_TIMEOUT);
            net.now = net.now.max(t);
            net.server.handle_timeout(net.now);
            check_index(&net.server);
        }
        assert_eq!(net.server.session_count(), 0);
    }
}
