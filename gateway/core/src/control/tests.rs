//! An in-memory client ↔ gateway pair on a virtual clock, and the helpers the unit tests share.

use rand_core::{CryptoRng, RngCore};

/// A small deterministic RNG (xorshift64*). Not cryptographic: tests only.
pub(crate) struct TestRng(u64);

impl RngCore for TestRng {
    fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }

    fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn fill_bytes(&mut self, dest: &mut [u8]) {
        rand_core::impls::fill_bytes_via_next(self, dest);
    }

    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

impl CryptoRng for TestRng {}

/// A deterministic RNG for tests, from a seed.
pub(crate) fn rng(seed: u64) -> TestRng {
    TestRng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
}

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::client::{self, ClientConfig, ControlClient, State};
use super::message::NakReason;
use super::server::{self, AuthorizedClient, ControlServer, ServerConfig};
use super::session::SessionError;
use super::ControlError;
use crate::keys::{PrivateKey, PublicKey};
use crate::lease::{AddressAuthority, LeaseInfo, Refusal};

/// An address authority for tests: hands out 10.77.0.2, .3, … with a fixed lease time.
pub(crate) struct FakeAuthority {
    lease_time: Duration,
    next: u8,
    leases: HashMap<PublicKey, Ipv4Addr>,
    /// Refuse every offer and request with `PoolExhausted`.
    exhausted: bool,
    /// How many times `request` was called.
    requests: usize,
}

impl FakeAuthority {
    pub(crate) fn new(lease_time: Duration) -> Self {
        Self {
            lease_time,
            next: 2,
            leases: HashMap::new(),
            exhausted: false,
            requests: 0,
        }
    }

    fn info(&self, address: Ipv4Addr, now: SystemTime) -> LeaseInfo {
        LeaseInfo {
            address,
            prefix_len: 24,
            lease_time: self.lease_time,
            renew_after: self.lease_time / 2,
            rebind_after: self.lease_time * 3 / 4,
            expires_at: now + self.lease_time,
        }
    }

    fn taken_by_other(&self, client: &PublicKey, address: Ipv4Addr) -> bool {
        self.leases
            .iter()
            .any(|(k, a)| *a == address && k != client)
    }
}

impl AddressAuthority for FakeAuthority {
    fn offer(
        &mut self,
        client: &PublicKey,
        requested: Option<Ipv4Addr>,
        now: SystemTime,
    ) -> Result<LeaseInfo, Refusal> {
        if self.exhausted {
            return Err(Refusal::PoolExhausted);
        }
        let address = match (self.leases.get(client), requested) {
            (Some(a), _) => *a,
            (None, Some(r)) if !self.taken_by_other(client, r) => r,
            _ => {
                let a = Ipv4Addr::new(10, 77, 0, self.next);
                self.next += 1;
                a
            }
        };
        Ok(self.info(address, now))
    }

    fn request(
        &mut self,
        client: &PublicKey,
        address: Ipv4Addr,
        now: SystemTime,
    ) -> Result<LeaseInfo, Refusal> {
        self.requests += 1;
        if self.exhausted {
            return Err(Refusal::PoolExhausted);
        }
        if self.taken_by_other(client, address) {
            return Err(Refusal::AddressUnavailable(address));
        }
        self.leases.insert(*client, address);
        Ok(self.info(address, now))
    }

    fn renew(
        &mut self,
        client: &PublicKey,
        address: Ipv4Addr,
        now: SystemTime,
    ) -> Result<LeaseInfo, Refusal> {
        if self.leases.get(client) != Some(&address) {
            return Err(Refusal::NoSuchLease(address));
        }
        Ok(self.info(address, now))
    }

    fn release(
        &mut self,
        client: &PublicKey,
        address: Ipv4Addr,
        _now: SystemTime,
    ) -> Result<(), Refusal> {
        if self.leases.get(client) != Some(&address) {
            return Err(Refusal::NoSuchLease(address));
        }
        self.leases.remove(client);
        Ok(())
    }
}

const CLIENT_ADDR: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7)), 40_000);
const GATEWAY_ADDR: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 1)), 51_820);

/// What the network does to datagrams, per direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// Delivers everything in order.
    None,
    /// Drops the 1st, 3rd, 5th … datagram of each direction.
    DropEveryOther,
    /// Delivers the 2nd before the 1st, the 4th before the 3rd, …; a datagram left without a
    /// partner is delivered late, once nothing else is in flight.
    SwapPairs,
    /// Delivers nothing.
    Blackhole,
}

/// Direction of a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dir {
    ToGateway,
    ToClient,
}

/// A client and a gateway connected by an in-memory network on a virtual clock.
struct Pair {
    client: ControlClient,
    client_key: PrivateKey,
    /// `None` while the gateway is down.
    server: Option<ControlServer>,
    gateway_key: PrivateKey,
    authority: FakeAuthority,
    now: Instant,
    wall: SystemTime,
    start: Instant,
    rng: TestRng,
    fault: Fault,
    /// Datagrams seen per direction (for the fault patterns).
    seen: [u64; 2],
    /// A datagram held back by `SwapPairs`, per direction.
    held: [Option<Vec<u8>>; 2],
    /// Every datagram sent, as sent (for replay tests).
    sent: Vec<(Dir, Vec<u8>)>,
    client_events: Vec<(Duration, client::Event)>,
    server_events: Vec<server::Event>,
    /// Client states seen, in order, without repeats.
    states: Vec<State>,
}

fn routes() -> Vec<ipnet::IpNet> {
    vec![
        "0.0.0.0/0".parse().expect("cidr"),
        "2001:db8::/32".parse().expect("cidr"),
    ]
}

fn dns() -> Vec<IpAddr> {
    vec![IpAddr::V4(Ipv4Addr::new(10, 77, 0, 1))]
}

impl Pair {
    fn new(lease_time: Duration) -> Self {
        let mut rng = rng(0x5eed);
        let client_key = PrivateKey::generate(&mut rng);
        let gateway_key = PrivateKey::generate(&mut rng);
        let now = Instant::now();
        let server = Self::make_server(&gateway_key, &client_key);
        let config = ClientConfig::new(client_key.clone(), gateway_key.public_key(), GATEWAY_ADDR);
        Self {
            client: ControlClient::new(config, now),
            client_key,
            server: Some(server),
            gateway_key,
            authority: FakeAuthority::new(lease_time),
            now,
            wall: UNIX_EPOCH + Duration::from_secs(1_800_000_000),
            start: now,
            rng,
            fault: Fault::None,
            seen: [0; 2],
            held: [None, None],
            sent: Vec::new(),
            client_events: Vec::new(),
            server_events: Vec::new(),
            states: vec![State::Init],
        }
    }

    fn make_server(gateway_key: &PrivateKey, client_key: &PrivateKey) -> ControlServer {
        ControlServer::new(ServerConfig {
            private_key: gateway_key.clone(),
            clients: vec![AuthorizedClient {
                key: client_key.public_key(),
                name: Some("laptop".into()),
            }],
            routes: routes(),
            dns: dns(),
        })
        .expect("valid config")
    }

    fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    /// Applies the fault model; returns what reaches the other side now.
    fn network(&mut self, dir: Dir, datagram: Vec<u8>) -> Vec<Vec<u8>> {
        self.sent.push((dir, datagram.clone()));
        let d = dir as usize;
        self.seen[d] += 1;
        match self.fault {
            Fault::None => vec![datagram],
            Fault::Blackhole => vec![],
            Fault::DropEveryOther => {
                if self.seen[d] % 2 == 1 {
                    vec![]
                } else {
                    vec![datagram]
                }
            }
            Fault::SwapPairs => match self.held[d].take() {
                Some(first) => vec![datagram, first],
                None => {
                    self.held[d] = Some(datagram);
                    vec![]
                }
            },
        }
    }

    fn deliver_to_server(&mut self, datagram: &[u8]) {
        if let Some(server) = self.server.as_mut() {
            let _ = server.handle_input(
                CLIENT_ADDR,
                datagram,
                self.now,
                self.wall,
                &mut self.rng,
                &mut self.authority,
            );
        }
    }

    fn deliver_to_client(&mut self, datagram: &[u8]) {
        let _ = self
            .client
            .handle_input(datagram, self.now, self.wall, &mut self.rng);
    }

    /// Moves datagrams until nothing is in flight.
    fn settle(&mut self) {
        loop {
            let mut moved = false;
            while let Some(t) = self.client.poll_transmit() {
                assert_eq!(t.destination, GATEWAY_ADDR);
                moved = true;
                for d in self.network(Dir::ToGateway, t.contents) {
                    self.deliver_to_server(&d);
                }
            }
            while let Some(t) = self.server.as_mut().and_then(|s| s.poll_transmit()) {
                assert_eq!(t.destination, CLIENT_ADDR);
                moved = true;
                for d in self.network(Dir::ToClient, t.contents) {
                    self.deliver_to_client(&d);
                }
            }
            self.collect_events();
            if !moved {
                let late = [self.held[0].take(), self.held[1].take()];
                if late.iter().all(Option::is_none) {
                    return;
                }
                if let Some(d) = &late[0] {
                    self.deliver_to_server(d);
                }
                if let Some(d) = &late[1] {
                    self.deliver_to_client(d);
                }
            }
        }
    }

    fn collect_events(&mut self) {
        while let Some(e) = self.client.poll_event() {
            self.client_events.push((self.elapsed(), e));
        }
        while let Some(e) = self.server.as_mut().and_then(|s| s.poll_event()) {
            self.server_events.push(e);
        }
        let state = self.client.state();
        if self.states.last() != Some(&state) {
            self.states.push(state);
        }
    }

    /// Advances the clock to the next timer (no further than `limit` from the start) and runs
    /// it. Returns false when there is no timer before `limit`.
    fn step(&mut self, limit: Duration) -> bool {
        self.settle();
        let next = [
            self.client.poll_timeout(),
            self.server.as_ref().and_then(|s| s.poll_timeout()),
        ]
        .into_iter()
        .flatten()
        .min();
        let Some(next) = next else { return false };
        let next = next.max(self.now);
        if next > self.start + limit {
            return false;
        }
        self.advance(next - self.now);
        true
    }

    /// Moves both clocks forward by `by` and runs whatever timers are due.
    fn advance(&mut self, by: Duration) {
        self.now += by;
        self.wall += by;
        self.client
            .handle_timeout(self.now, self.wall, &mut self.rng);
        if let Some(s) = self.server.as_mut() {
            s.handle_timeout(self.now);
        }
        self.collect_events();
        self.settle();
    }

    /// Runs timers until `done` holds or `limit` (from the start) passes; returns `done`.
    fn run_until(&mut self, limit: Duration, done: impl Fn(&Self) -> bool) -> bool {
        loop {
            self.settle();
            if done(self) {
                return true;
            }
            if !self.step(limit) {
                return done(self);
            }
        }
    }

    /// Runs until `at` (from the start), then stops there.
    fn run_to(&mut self, at: Duration) {
        while self.step(at) {}
        let target = self.start + at;
        if target > self.now {
            self.advance(target - self.now);
        }
    }

    fn bound_events(&self) -> usize {
        self.client_events
            .iter()
            .filter(|(_, e)| matches!(e, client::Event::Bound(_)))
            .count()
    }

    fn count_client(&self, f: impl Fn(&client::Event) -> bool) -> usize {
        self.client_events.iter().filter(|(_, e)| f(e)).count()
    }
}

const LEASE: Duration = Duration::from_secs(100);

#[test]
fn discover_offer_request_ack() {
    let mut p = Pair::new(LEASE);
    assert!(p.run_until(Duration::from_secs(5), |p| p.client.state() == State::Bound));
    assert_eq!(
        p.states,
        [
            State::Init,
            State::Discovering,
            State::Requesting,
            State::Bound
        ]
    );
    let (at, event) = &p.client_events[0];
    assert_eq!(*at, Duration::ZERO);
    let client::Event::Bound(binding) = event else {
        panic!("expected Bound, got {event:?}");
    };
    assert_eq!(binding.lease.address, Ipv4Addr::new(10, 77, 0, 2));
    assert_eq!(binding.lease.prefix_len, 24);
    assert_eq!(binding.lease.lease_time, LEASE);
    assert_eq!(binding.lease.renew_after, LEASE / 2);
    assert_eq!(binding.lease.rebind_after, LEASE * 3 / 4);
    assert_eq!(binding.lease.expires_at, p.wall + LEASE);
    assert_eq!(binding.routes, routes());
    assert_eq!(binding.dns, dns());
    assert_eq!(
        p.server_events,
        [server::Event::Leased {
            client: p.client_key.public_key(),
            name: Some("laptop".into()),
            lease: p.authority.info(Ipv4Addr::new(10, 77, 0, 2), p.wall),
            endpoint: CLIENT_ADDR,
        }]
    );
    // Handshake, then Discover, Request: three datagrams each way.
    assert_eq!(p.sent.len(), 6);
    assert_eq!(p.client.counters().handshakes, 1);
    assert_eq!(p.client.poll_timeout(), Some(p.start + LEASE / 2));
}

#[test]
fn renews_at_t1_rebinds_at_t2_and_loses_the_lease_when_the_gateway_is_gone() {
    let mut p = Pair::new(LEASE);
    assert!(p.run_until(Duration::from_secs(5), |p| p.client.state() == State::Bound));

    // T1: one renewal over the existing session.
    p.run_to(Duration::from_secs(51));
    assert_eq!(p.client.state(), State::Bound);
    let renewed: Vec<_> = p
        .client_events
        .iter()
        .filter(|(_, e)| matches!(e, client::Event::Renewed(_)))
        .map(|(at, _)| *at)
        .collect();
    assert_eq!(renewed, [Duration::from_secs(50)]);
    assert!(matches!(
        p.server_events.last(),
        Some(server::Event::Renewed { .. })
    ));
    assert!(p.states.contains(&State::Renewing));

    // The gateway stops answering before the next T1 (50 + 50 = 100 s): the client renews at
    // 100 s, rebinds at 125 s (T2, over a new handshake), and loses the lease at 150 s.
    p.fault = Fault::Blackhole;
    p.run_to(Duration::from_secs(124));
    assert_eq!(p.client.state(), State::Renewing);
    p.run_to(Duration::from_secs(126));
    assert_eq!(p.client.state(), State::Rebinding);

    // The gateway comes back during rebinding: the lease is saved, over a new session.
    p.fault = Fault::None;
    let handshakes = p.client.counters().handshakes;
    assert!(p.run_until(Duration::from_secs(149), |p| p.client.state()
        == State::Bound));
    assert_eq!(
        p.count_client(|e| matches!(e, client::Event::Renewed(_))),
        2
    );
    assert_eq!(p.client.counters().handshakes, handshakes + 1);

    // Now the gateway is gone for good: renew, rebind, then lose the address at expiry.
    p.server = None;
    // The lease counts from when the Renew was first sent (at T2, before the handshake).
    let expires_at = p.client.binding().expect("bound").lease.expires_at;
    let start_wall = p.wall - p.elapsed();
    let expiry = expires_at.duration_since(start_wall).expect("after start");
    assert_eq!(expiry, Duration::from_secs(125) + LEASE);
    p.run_to(Duration::from_secs(400));
    let lost: Vec<_> = p
        .client_events
        .iter()
        .filter(|(_, e)| matches!(e, client::Event::Lost { .. }))
        .collect();
    assert_eq!(lost.len(), 1, "{:?}", p.client_events);
    assert_eq!(lost[0].0, expiry);
    assert_eq!(
        lost[0].1,
        client::Event::Lost {
            address: Ipv4Addr::new(10, 77, 0, 2)
        }
    );
    assert_eq!(p.client.state(), State::Discovering);
    assert!(p.client.binding().is_none());
    let tail: Vec<State> = p.states.iter().rev().take(4).rev().copied().collect();
    assert_eq!(
        tail,
        [
            State::Bound,
            State::Renewing,
            State::Rebinding,
            State::Discovering
        ]
    );
}

#[test]
fn release_is_acknowledged() {
    let mut p = Pair::new(LEASE);
    assert!(p.run_until(Duration::from_secs(5), |p| p.client.state() == State::Bound));
    p.client.release(p.now, p.wall, &mut p.rng);
    p.settle();
    assert_eq!(p.client.state(), State::Released);
    assert_eq!(
        p.client_events.last().map(|(_, e)| e.clone()),
        Some(client::Event::Released {
            address: Some(Ipv4Addr::new(10, 77, 0, 2))
        })
    );
    assert_eq!(
        p.server_events.last(),
        Some(&server::Event::Released {
            client: p.client_key.public_key(),
            address: Ipv4Addr::new(10, 77, 0, 2)
        })
    );
    assert!(p.authority.leases.is_empty());
    assert_eq!(p.client.poll_timeout(), None);
}

#[test]
fn release_gives_up_when_unanswered() {
    let mut p = Pair::new(LEASE);
    assert!(p.run_until(Duration::from_secs(5), |p| p.client.state() == State::Bound));
    p.fault = Fault::Blackhole;
    p.client.release(p.now, p.wall, &mut p.rng);
    assert!(p.run_until(Duration::from_secs(30), |p| p.client.state()
        == State::Released));
    assert_eq!(
        p.count_client(|e| matches!(e, client::Event::Released { address: Some(_) })),
        1
    );
    assert_eq!(p.client.poll_timeout(), None);
}

#[test]
fn release_after_a_gateway_restart_reaches_the_new_gateway() {
    let mut p = Pair::new(LEASE);
    assert!(p.run_until(Duration::from_secs(5), |p| p.client.state() == State::Bound));
    // The gateway restarts and forgets the session; the client does not know yet.
    p.server = Some(Pair::make_server(&p.gateway_key, &p.client_key));
    p.client.release(p.now, p.wall, &mut p.rng);
    // Within the release attempts, the client makes a new session and is acknowledged.
    assert!(p.run_until(Duration::from_secs(10), |p| p.client.state()
        == State::Released));
    assert_eq!(
        p.server_events.last(),
        Some(&server::Event::Released {
            client: p.client_key.public_key(),
            address: Ipv4Addr::new(10, 77, 0, 2)
        })
    );
    assert!(p.authority.leases.is_empty());
    assert_eq!(p.client.counters().handshakes, 2);
}

#[test]
fn survives_dropping_every_other_datagram() {
    let mut p = Pair::new(LEASE);
    p.fault = Fault::DropEveryOther;
    assert!(p.run_until(Duration::from_secs(60), |p| p.client.state()
        == State::Bound));
    p.run_to(Duration::from_secs(99));
    assert_eq!(p.client.state(), State::Bound);
    assert!(p.count_client(|e| matches!(e, client::Event::Renewed(_))) >= 1);
    // Retransmitted requests were answered from the cache: one lease, one event.
    let leased = p
        .server_events
        .iter()
        .filter(|e| matches!(e, server::Event::Leased { .. }))
        .count();
    assert_eq!(leased, 1);
    assert_eq!(p.bound_events(), 1);
    assert_eq!(p.authority.requests, 1);
}

#[test]
fn survives_swapped_pairs() {
    let mut p = Pair::new(LEASE);
    p.fault = Fault::SwapPairs;
    assert!(p.run_until(Duration::from_secs(60), |p| p.client.state()
        == State::Bound));
    p.run_to(Duration::from_secs(99));
    assert_eq!(p.client.state(), State::Bound);
    assert!(p.count_client(|e| matches!(e, client::Event::Renewed(_))) >= 1);
    assert_eq!(p.bound_events(), 1);
}

#[test]
fn pool_exhausted_reaches_the_client_as_refused() {
    let mut p = Pair::new(LEASE);
    p.authority.exhausted = true;
    assert!(p.run_until(Duration::from_secs(5), |p| {
        p.count_client(|e| *e == client::Event::Refused(NakReason::PoolExhausted)) > 0
    }));
    assert_eq!(p.client.state(), State::Discovering);
    // It tries again later, backing off, and gets an address once one is free.
    p.run_to(Duration::from_secs(10));
    let refusals = p.count_client(|e| matches!(e, client::Event::Refused(_)));
    assert!((2..=4).contains(&refusals), "{refusals} refusals in 10 s");
    p.authority.exhausted = false;
    assert!(p.run_until(Duration::from_secs(60), |p| p.client.state()
        == State::Bound));
}

#[test]
fn gateway_restart_means_a_new_handshake() {
    let mut p = Pair::new(LEASE);
    assert!(p.run_until(Duration::from_secs(5), |p| p.client.state() == State::Bound));
    // A restarted gateway forgets sessions and timestamps; the lease store survives.
    p.server = Some(Pair::make_server(&p.gateway_key, &p.client_key));
    p.run_to(Duration::from_secs(70));
    assert_eq!(p.client.state(), State::Bound);
    assert_eq!(
        p.count_client(|e| matches!(e, client::Event::Renewed(_))),
        1
    );
    assert_eq!(p.client.counters().handshakes, 2);
    let server = p.server.as_ref().expect("up");
    assert!(server.counters().rx_unknown_session >= 1);
}

#[test]
fn idle_sessions_expire_and_renewal_rehandshakes() {
    let lease = Duration::from_secs(3600);
    let mut p = Pair::new(lease);
    assert!(p.run_until(Duration::from_secs(5), |p| p.client.state() == State::Bound));
    p.run_to(Duration::from_secs(300));
    assert_eq!(p.server.as_ref().expect("up").session_count(), 0);
    p.run_to(Duration::from_secs(1801));
    assert_eq!(
        p.count_client(|e| matches!(e, client::Event::Renewed(_))),
        1
    );
    assert_eq!(p.client.counters().handshakes, 2);
    assert_eq!(
        p.server.as_ref().expect("up").counters().rx_unknown_session,
        0
    );
}

#[test]
fn replayed_handshake_init_gets_no_answer() {
    let mut p = Pair::new(LEASE);
    assert!(p.run_until(Duration::from_secs(5), |p| p.client.state() == State::Bound));
    let init = p.sent[0].1.clone();
    assert_eq!(init[0], super::wire::TYPE_HANDSHAKE_INIT);
    let server = p.server.as_mut().expect("up");
    let r = server.handle_input(
        CLIENT_ADDR,
        &init,
        p.now,
        p.wall,
        &mut p.rng,
        &mut p.authority,
    );
    assert!(matches!(r, Err(ControlError::ReplayedHandshake(k)) if k == p.client_key.public_key()));
    assert!(server.poll_transmit().is_none());
    assert_eq!(server.counters().rx_replayed_handshake, 1);
    // From another address too.
    let other: SocketAddr = "192.0.2.9:1234".parse().expect("addr");
    let r = server.handle_input(other, &init, p.now, p.wall, &mut p.rng, &mut p.authority);
    assert!(r.is_err());
    assert!(server.poll_transmit().is_none());
}

#[test]
fn replayed_or_tampered_transport_is_ignored() {
    let mut p = Pair::new(LEASE);
    assert!(p.run_until(Duration::from_secs(5), |p| p.client.state() == State::Bound));
    let events = p.server_events.len();

    // A replayed Request: no answer, no second lease.
    let request = p.sent[4].clone();
    assert_eq!(request.0, Dir::ToGateway);
    assert_eq!(request.1[0], super::wire::TYPE_TRANSPORT);
    let server = p.server.as_mut().expect("up");
    let r = server.handle_input(
        CLIENT_ADDR,
        &request.1,
        p.now,
        p.wall,
        &mut p.rng,
        &mut p.authority,
    );
    assert!(
        matches!(r, Err(ControlError::Session(SessionError::Replayed(_)))),
        "{r:?}"
    );
    assert!(server.poll_transmit().is_none());
    assert_eq!(server.counters().rx_replayed, 1);
    assert_eq!(p.server_events.len(), events);

    // A fresh packet, tampered in the index, the nonce, the ciphertext or the tag.
    p.client
        .exchange_endpoints(vec![], None, p.now, p.wall, &mut p.rng);
    let fresh = p.client.poll_transmit().expect("endpoint update").contents;
    let server = p.server.as_mut().expect("up");
    for i in [4usize, 9, 15, 16, 20, fresh.len() - 1] {
        let mut bad = fresh.clone();
        bad[i] ^= 0x40;
        let r = server.handle_input(
            CLIENT_ADDR,
            &bad,
            p.now,
            p.wall,
            &mut p.rng,
            &mut p.authority,
        );
        match i {
            4 => assert!(matches!(r, Err(ControlError::UnknownSession(_))), "{r:?}"),
            _ => assert!(
                matches!(r, Err(ControlError::Session(SessionError::Decrypt))),
                "byte {i}: {r:?}"
            ),
        }
        assert!(server.poll_transmit().is_none(), "byte {i}");
    }
    assert_eq!(server.counters().rx_auth_failed, 5);
    // The forgeries did not burn the nonce: the real packet is still answered.
    server
        .handle_input(
            CLIENT_ADDR,
            &fresh,
            p.now,
            p.wall,
            &mut p.rng,
            &mut p.authority,
        )
        .expect("genuine");
    let answer = server.poll_transmit().expect("answered").contents;

    // On the client: the answer tampered, then genuine, then replayed.
    let mut bad = answer.clone();
    bad[20] ^= 1;
    assert!(p
        .client
        .handle_input(&bad, p.now, p.wall, &mut p.rng)
        .is_err());
    p.client
        .handle_input(&answer, p.now, p.wall, &mut p.rng)
        .expect("genuine");
    let r = p.client.handle_input(&answer, p.now, p.wall, &mut p.rng);
    assert!(
        matches!(r, Err(ControlError::Session(SessionError::Replayed(_)))),
        "{r:?}"
    );
    // An old Ack replayed to the client does nothing either.
    let before = p.client_events.len();
    let ack = p.sent[5].1.clone();
    assert!(p
        .client
        .handle_input(&ack, p.now, p.wall, &mut p.rng)
        .is_err());
    p.settle();
    assert_eq!(
        p.count_client(|e| matches!(e, client::Event::PeerEndpoints { .. })),
        1
    );
    assert_eq!(p.client_events.len(), before + 1);
    assert!(p.client.poll_transmit().is_none());
    assert_eq!(p.client.state(), State::Bound);
    assert_eq!(p.client.counters().rx_replayed, 2);
    assert_eq!(p.client.counters().rx_auth_failed, 1);
}

#[test]
fn unknown_key_gets_no_answer() {
    let mut p = Pair::new(LEASE);
    let stranger = PrivateKey::generate(&mut p.rng);
    let config = ClientConfig::new(stranger.clone(), p.gateway_key.public_key(), GATEWAY_ADDR);
    p.client = ControlClient::new(config, p.now);
    p.run_to(Duration::from_secs(20));
    assert!(p.client_events.is_empty());
    assert!(p.sent.iter().all(|(d, _)| *d == Dir::ToGateway));
    let server = p.server.as_ref().expect("up");
    assert!(server.counters().rx_unknown_key >= 3);
    assert_eq!(server.counters().tx_packets, 0);
    assert_eq!(server.session_count(), 0);
}

#[test]
fn wrong_gateway_key_gets_no_answer() {
    let mut p = Pair::new(LEASE);
    let other = PrivateKey::generate(&mut p.rng);
    let config = ClientConfig::new(p.client_key.clone(), other.public_key(), GATEWAY_ADDR);
    p.client = ControlClient::new(config, p.now);
    p.run_to(Duration::from_secs(10));
    let server = p.server.as_ref().expect("up");
    assert!(server.counters().rx_auth_failed >= 2);
    assert_eq!(server.counters().tx_packets, 0);
}

#[test]
fn garbage_of_every_length_gets_no_answer() {
    let mut p = Pair::new(LEASE);
    assert!(p.run_until(Duration::from_secs(5), |p| p.client.state() == State::Bound));
    let events = (p.client_events.len(), p.server_events.len());
    let mut noise = rng(77);
    for len in 0..=1300usize {
        for first in [0x00u8, 0x01, 0xC0, 0xC1, 0xC2, 0xC3, 0xCF, 0xFF] {
            let mut bytes = vec![0u8; len];
            RngCore::fill_bytes(&mut noise, &mut bytes);
            if let Some(b) = bytes.first_mut() {
                *b = first;
            }
            if let Some(v) = bytes.get_mut(1) {
                *v = if len % 3 == 0 {
                    0xEE
                } else {
                    super::wire::VERSION
                };
            }
            if len % 2 == 0 {
                if let Some(r) = bytes.get_mut(2..4) {
                    r.fill(0);
                }
            }
            let server = p.server.as_mut().expect("up");
            assert!(server
                .handle_input(
                    CLIENT_ADDR,
                    &bytes,
                    p.now,
                    p.wall,
                    &mut p.rng,
                    &mut p.authority
                )
                .is_err());
            assert!(server.poll_transmit().is_none(), "len {len}");
            assert!(p
                .client
                .handle_input(&bytes, p.now, p.wall, &mut p.rng)
                .is_err());
            assert!(p.client.poll_transmit().is_none(), "len {len}");
        }
    }
    p.settle();
    assert_eq!((p.client_events.len(), p.server_events.len()), events);
    assert_eq!(p.client.state(), State::Bound);
}

#[test]
fn endpoint_exchange_echoes_stored_candidates() {
    use super::message::{Candidate, CandidateKind};
    let mut p = Pair::new(LEASE);
    assert!(p.run_until(Duration::from_secs(5), |p| p.client.state() == State::Bound));
    let host = Candidate {
        kind: CandidateKind::Host,
        addr: "192.168.1.20:51820".parse().expect("addr"),
    };
    p.client
        .exchange_endpoints(vec![host], None, p.now, p.wall, &mut p.rng);
    p.settle();
    let me = p.client_key.public_key();
    let reflexive = Candidate {
        kind: CandidateKind::Reflexive,
        addr: CLIENT_ADDR,
    };
    assert_eq!(
        p.client_events.last().map(|(_, e)| e.clone()),
        Some(client::Event::PeerEndpoints {
            peer: me,
            candidates: vec![reflexive, host]
        })
    );
    // An unknown peer has none.
    let nobody = PublicKey::from_bytes([9; 32]);
    p.client
        .exchange_endpoints(vec![], Some(nobody), p.now, p.wall, &mut p.rng);
    p.settle();
    assert_eq!(
        p.client_events.last().map(|(_, e)| e.clone()),
        Some(client::Event::PeerEndpoints {
            peer: nobody,
            candidates: vec![]
        })
    );
}

#[test]
fn wall_clock_stepping_back_does_not_lock_the_client_out() {
    let lease = Duration::from_secs(3600);
    let mut p = Pair::new(lease);
    assert!(p.run_until(Duration::from_secs(5), |p| p.client.state() == State::Bound));
    // The wall clock steps back an hour. The gateway remembers the first handshake's
    // timestamp, so the client must still send a newer one when it rehandshakes at T1.
    p.wall -= Duration::from_secs(3600);
    p.run_to(Duration::from_secs(1801));
    assert_eq!(
        p.count_client(|e| matches!(e, client::Event::Renewed(_))),
        1
    );
    assert_eq!(p.client.counters().handshakes, 2);
    assert_eq!(
        p.server
            .as_ref()
            .expect("up")
            .counters()
            .rx_replayed_handshake,
        0
    );
}

#[test]
fn refused_renewal_loses_the_address_and_discovers_again() {
    let mut p = Pair::new(LEASE);
    assert!(p.run_until(Duration::from_secs(5), |p| p.client.state() == State::Bound));
    // The gateway's store lost the lease.
    p.authority.leases.clear();
    p.run_to(Duration::from_secs(51));
    let address = Ipv4Addr::new(10, 77, 0, 2);
    let events: Vec<client::Event> = p.client_events.iter().map(|(_, e)| e.clone()).collect();
    assert!(matches!(events[0], client::Event::Bound(_)));
    assert_eq!(events[1], client::Event::Refused(NakReason::NoSuchLease));
    assert_eq!(events[2], client::Event::Lost { address });
    // It asks for its old address again and gets it.
    let client::Event::Bound(b) = &events[3] else {
        panic!("expected Bound, got {:?}", events[3]);
    };
    assert_eq!(b.lease.address, address);
    assert_eq!(p.client.state(), State::Bound);
}

#[test]
fn a_revoked_client_gets_no_answer() {
    let mut p = Pair::new(LEASE);
    assert!(p.run_until(Duration::from_secs(5), |p| p.client.state() == State::Bound));
    let server = p.server.as_mut().expect("up");
    assert!(server.revoke(&p.client_key.public_key()));
    assert_eq!(server.session_count(), 0);
    let sent = server.counters().tx_packets;
    p.run_to(Duration::from_secs(150));
    let server = p.server.as_ref().expect("up");
    assert_eq!(server.counters().tx_packets, sent);
    assert!(server.counters().rx_unknown_session >= 1);
    assert!(server.counters().rx_unknown_key >= 1);
    assert_eq!(
        p.count_client(|e| matches!(e, client::Event::Lost { .. })),
        1
    );
}

/// Drivers may move the state machines into another thread or task.
#[test]
fn state_machines_are_send() {
    fn assert_send<T: Send>() {}
    assert_send::<ControlServer>();
    assert_send::<ControlClient>();
}
