//! Remote-worker access: the control server and the lease pool, kept in step with the data
//! plane's peer table.
//!
//! [`Access`] owns the gateway's [`ControlServer`] and its [`LeasePool`]. It takes control
//! datagrams (the ones [`is_control_packet`](crate::control::is_control_packet) picks out of the
//! shared UDP port) and timer ticks, answers through a [`Sink`], and turns lease events into peer
//! changes on the [`Gateway`]: a leased client becomes a WireGuard peer whose only allowed IP is its
//! leased address, and stops being one when the lease ends.
//!
//! Clients with a `fixed_address` are peers from the start, whether or not they hold a lease, so
//! that a stock WireGuard app configured with `export-client` (which never speaks the control
//! protocol) reaches the office too. Nobody else ever gets that address, so the static peer can
//! never route someone else's traffic.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant, SystemTime};

use ipnet::{IpNet, Ipv4Net};
use rand_core::CryptoRngCore;
use tracing::{debug, info, warn};

use crate::config::GatewayConfig;
use crate::control::server::{
    AuthorizedClient, ControlServer, Event as ServerEvent, ServerConfig, ServerConfigError,
};
use crate::control::wire::{self, PacketKind};
use crate::control::ControlError;
use crate::gateway::{Gateway, GatewayError, Sink};
use crate::keys::PublicKey;
use crate::lease::{LeaseEntry, LeasePool, LeaseState, LeaseStore, PoolError};
use crate::peer::PeerSpec;
use crate::ratelimit::SourceRateLimiter;

/// Why remote-worker access cannot start.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    /// The config has `[[client]]` entries but no `[pool]`.
    #[error("[[client]] entries need a [pool] section to lease addresses from")]
    NoPool,
    /// The pool's settings, clients or store are unusable.
    #[error("lease pool: {0}")]
    Pool(#[from] PoolError),
    /// The pushed routes and DNS servers do not fit a control message.
    #[error("{0}")]
    Push(#[from] ServerConfigError),
    /// A client's peer could not be added to the data plane.
    #[error("client {name}: {source}")]
    Peer {
        /// The client's name.
        name: String,
        /// Why.
        source: GatewayError,
    },
}

/// Control handshake initiations per second that the gateway takes from anyone before the
/// per-source limit applies (the gateway is then "under load").
pub const HANDSHAKES_BEFORE_LIMIT: u32 = 100;

/// Why a control datagram was dropped without an answer.
#[derive(Debug, thiserror::Error)]
pub enum DatagramError {
    /// Too many handshake initiations from this source address.
    #[error("control handshake rate limit reached for this source")]
    RateLimited,
    /// The control server dropped it.
    #[error(transparent)]
    Control(#[from] ControlError),
}

/// Counters of the access layer that the control server does not keep itself.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct AccessCounters {
    /// Control handshake initiations dropped by the per-source limit.
    pub handshakes_rate_limited: u64,
    /// Leases granted (new or re-granted).
    pub leases_granted: u64,
    /// Leases that ended by expiry.
    pub leases_expired: u64,
    /// Leases released by their client.
    pub leases_released: u64,
}

/// The gateway's remote-worker access point: control server + lease pool + peer bookkeeping.
pub struct Access<S> {
    server: ControlServer,
    pool: LeasePool<S>,
    /// Clients with a fixed address: their peers stay whatever the lease does.
    fixed: HashMap<PublicKey, Ipv4Addr>,
    names: HashMap<PublicKey, String>,
    /// Clients that currently have a data-plane peer because of a lease (not fixed ones).
    leased_peers: HashMap<PublicKey, Ipv4Addr>,
    /// The endpoint each client last spoke from, for `leases`.
    endpoints: HashMap<PublicKey, SocketAddr>,
    limiter: SourceRateLimiter,
    /// Control handshake initiations seen since `next_sweep - 1 s`.
    handshakes_this_second: u32,
    next_sweep: Instant,
    counters: AccessCounters,
}

impl<S> std::fmt::Debug for Access<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Access")
            .field("server", &self.server)
            .field("fixed", &self.fixed.len())
            .field("leased_peers", &self.leased_peers.len())
            .finish_non_exhaustive()
    }
}

/// One row of the `leases` listing: the pool's entry plus where the client was last seen.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LeaseRow {
    /// The pool's view of the lease.
    #[serde(flatten)]
    pub entry: LeaseEntry,
    /// The client's key again, under the name `wg show` uses.
    pub public_key: PublicKey,
    /// Seconds until `expires_at` (0 when it has passed).
    pub expires_in: u64,
    /// The client's last endpoint, if it spoke since the gateway started.
    pub endpoint: Option<SocketAddr>,
}

/// The routes pushed to clients: the pool's routes, plus the default route in full-tunnel mode.
pub fn pushed_routes(config: &GatewayConfig) -> Vec<IpNet> {
    let Some(pool) = &config.pool else {
        return Vec::new();
    };
    let mut routes: Vec<IpNet> = pool.routes.iter().map(|&r| IpNet::V4(r)).collect();
    if pool.full_tunnel && !routes.iter().any(|r| r.prefix_len() == 0) {
        routes.push(IpNet::V4(Ipv4Net::default()));
    }
    routes
}

fn host_route(address: Ipv4Addr) -> IpNet {
    IpNet::V4(Ipv4Net::from(address))
}

impl<S: LeaseStore> Access<S> {
    /// Builds the access point for `config` (which must have a `[pool]`), rebuilding leases from
    /// `store`, and adds the fixed-address clients and the clients with a live lease as peers of
    /// `gateway`.
    pub fn new(
        config: &GatewayConfig,
        store: S,
        gateway: &mut Gateway,
        now: Instant,
        wall: SystemTime,
    ) -> Result<Self, AccessError> {
        let settings = config.pool.clone().ok_or(AccessError::NoPool)?;
        let dns = settings.dns.iter().map(|&d| IpAddr::V4(d)).collect();
        let server = ControlServer::new(ServerConfig {
            private_key: config.interface.private_key.clone(),
            clients: config
                .clients
                .iter()
                .map(|c| AuthorizedClient {
                    key: c.public_key,
                    name: Some(c.name.clone()),
                })
                .collect(),
            routes: pushed_routes(config),
            dns,
        })?;
        let pool = LeasePool::new(settings, config.clients.clone(), store)?;
        let mut access = Self {
            server,
            pool,
            fixed: config
                .clients
                .iter()
                .filter_map(|c| c.fixed_address.map(|a| (c.public_key, a)))
                .collect(),
            names: config
                .clients
                .iter()
                .map(|c| (c.public_key, c.name.clone()))
                .collect(),
            leased_peers: HashMap::new(),
            endpoints: HashMap::new(),
            limiter: SourceRateLimiter::new(),
            handshakes_this_second: 0,
            next_sweep: now,
            counters: AccessCounters::default(),
        };
        for (&key, &address) in &access.fixed {
            gateway
                .add_peer(access.peer_spec(key, address, None))
                .map_err(|source| AccessError::Peer {
                    name: access.name(&key),
                    source,
                })?;
        }
        // Leases that ran out while the gateway was down end now; the rest get their peer back.
        for ended in access.pool.handle_timeout(wall) {
            debug!(client = %access.name(&ended.client), lease = %ended.address, "lease ended while the gateway was down");
        }
        let live: Vec<LeaseEntry> = access
            .pool
            .leases(wall)
            .into_iter()
            .filter(|e| e.state == LeaseState::Active)
            .collect();
        for entry in live {
            if access.fixed.contains_key(&entry.client) {
                continue;
            }
            match gateway.add_peer(access.peer_spec(entry.client, entry.address, None)) {
                Ok(_) => {
                    access.leased_peers.insert(entry.client, entry.address);
                }
                Err(e) => {
                    warn!(client = %access.name(&entry.client), lease = %entry.address, error = %e, "stored lease cannot become a peer");
                }
            }
        }
        info!(
            clients = access.names.len(),
            fixed = access.fixed.len(),
            restored = access.leased_peers.len(),
            pool_size = access.pool.size(),
            "remote-worker access ready"
        );
        Ok(access)
    }

    fn name(&self, key: &PublicKey) -> String {
        self.names
            .get(key)
            .cloned()
            .unwrap_or_else(|| key.to_string())
    }

    fn peer_spec(
        &self,
        key: PublicKey,
        address: Ipv4Addr,
        endpoint: Option<SocketAddr>,
    ) -> PeerSpec {
        PeerSpec {
            name: self.name(&key),
            public_key: key,
            preshared_key: None,
            endpoint,
            allowed_ips: vec![host_route(address)],
            // The client keeps its own NAT mapping open.
            persistent_keepalive: None,
        }
    }

    /// Handles one control datagram from `src`: answers through `sink` and applies lease
    /// changes to `gateway`. A datagram that is dropped gets no answer; the error says why.
    #[allow(clippy::too_many_arguments)]
    pub fn handle_datagram<R: CryptoRngCore + ?Sized>(
        &mut self,
        src: SocketAddr,
        bytes: &[u8],
        now: Instant,
        wall: SystemTime,
        rng: &mut R,
        gateway: &mut Gateway,
        sink: &mut impl Sink,
    ) -> Result<(), DatagramError> {
        if wire::classify(bytes) == Ok(PacketKind::HandshakeInit) {
            // Every initiation costs two Diffie-Hellman operations before it can be refused.
            // Under load, each source address gets its fair share (as WireGuard does); otherwise
            // many clients behind one NAT address may all connect at once.
            self.handshakes_this_second = self.handshakes_this_second.saturating_add(1);
            if self.handshakes_this_second > HANDSHAKES_BEFORE_LIMIT
                && !self.limiter.allow(src.ip(), now)
            {
                self.counters.handshakes_rate_limited += 1;
                return Err(DatagramError::RateLimited);
            }
        }
        let result = self
            .server
            .handle_input(src, bytes, now, wall, rng, &mut self.pool);
        self.flush(wall, gateway, sink);
        Ok(result?)
    }

    /// Ends sessions, offers and leases whose time has come, and removes the peers of ended
    /// leases.
    pub fn handle_timeout(
        &mut self,
        now: Instant,
        wall: SystemTime,
        gateway: &mut Gateway,
        sink: &mut impl Sink,
    ) {
        self.server.handle_timeout(now);
        if now >= self.next_sweep {
            self.limiter.handle_timeout(now);
            self.handshakes_this_second = 0;
            self.next_sweep = now + Duration::from_secs(1);
        }
        for ended in self.pool.handle_timeout(wall) {
            self.counters.leases_expired += 1;
            info!(client = %self.name(&ended.client), lease = %ended.address, "lease expired; address reclaimable");
            self.drop_peer(&ended.client, ended.address, gateway);
        }
        self.flush(wall, gateway, sink);
    }

    /// When [`Access::handle_timeout`] should next run. `now`/`wall` are the current instant and
    /// wall-clock time, used to turn the pool's wall-clock deadlines into an `Instant`.
    pub fn poll_timeout(&self, now: Instant, wall: SystemTime) -> Instant {
        let mut next = self.next_sweep;
        if let Some(t) = self.server.poll_timeout() {
            next = next.min(t);
        }
        if let Some(t) = self.pool.poll_timeout() {
            let wait = t.duration_since(wall).unwrap_or(Duration::ZERO);
            next = next.min(now + wait);
        }
        next
    }

    fn flush(&mut self, wall: SystemTime, gateway: &mut Gateway, sink: &mut impl Sink) {
        while let Some(t) = self.server.poll_transmit() {
            sink.send_to(t.destination, &t.contents);
        }
        while let Some(event) = self.server.poll_event() {
            self.apply(event, wall, gateway);
        }
    }

    fn apply(&mut self, event: ServerEvent, wall: SystemTime, gateway: &mut Gateway) {
        match event {
            ServerEvent::Leased {
                client,
                lease,
                endpoint,
                ..
            } => {
                self.counters.leases_granted += 1;
                self.endpoints.insert(client, endpoint);
                let secs = lease
                    .expires_at
                    .duration_since(wall)
                    .unwrap_or_default()
                    .as_secs();
                info!(client = %self.name(&client), lease = %lease.address, %endpoint, expires_in = secs, "lease granted");
                self.ensure_peer(client, lease.address, endpoint, gateway);
            }
            ServerEvent::Renewed {
                client,
                lease,
                endpoint,
                ..
            } => {
                self.endpoints.insert(client, endpoint);
                debug!(client = %self.name(&client), lease = %lease.address, %endpoint, "lease renewed");
                self.ensure_peer(client, lease.address, endpoint, gateway);
            }
            ServerEvent::Released { client, address } => {
                self.counters.leases_released += 1;
                info!(client = %self.name(&client), lease = %address, "lease released");
                self.drop_peer(&client, address, gateway);
            }
        }
    }

    /// Makes `client` a peer with `address` as its allowed IP.
    fn ensure_peer(
        &mut self,
        client: PublicKey,
        address: Ipv4Addr,
        endpoint: SocketAddr,
        gateway: &mut Gateway,
    ) {
        if self.fixed.get(&client) == Some(&address) {
            gateway.set_peer_endpoint(&client, endpoint);
            return;
        }
        if self.leased_peers.get(&client) == Some(&address) {
            gateway.set_peer_endpoint(&client, endpoint);
            return;
        }
        if self.leased_peers.remove(&client).is_some() {
            gateway.remove_peer(&client);
        }
        match gateway.add_peer(self.peer_spec(client, address, Some(endpoint))) {
            Ok(_) => {
                self.leased_peers.insert(client, address);
            }
            Err(e) => {
                warn!(client = %self.name(&client), lease = %address, error = %e, "leased client cannot become a peer");
            }
        }
    }

    fn drop_peer(&mut self, client: &PublicKey, address: Ipv4Addr, gateway: &mut Gateway) {
        if self.leased_peers.get(client) == Some(&address) {
            self.leased_peers.remove(client);
            gateway.remove_peer(client);
        }
    }

    /// Every lease the pool knows, with time left and last endpoint.
    pub fn leases(&self, wall: SystemTime) -> Vec<LeaseRow> {
        self.pool
            .leases(wall)
            .into_iter()
            .map(|entry| LeaseRow {
                expires_in: entry
                    .expires_at
                    .duration_since(wall)
                    .unwrap_or_default()
                    .as_secs(),
                endpoint: self.endpoints.get(&entry.client).copied(),
                public_key: entry.client,
                entry,
            })
            .collect()
    }

    /// The pool (for its settings and size).
    pub fn pool(&self) -> &LeasePool<S> {
        &self.pool
    }

    /// The control server's counters.
    pub fn control_counters(&self) -> &crate::control::ControlCounters {
        self.server.counters()
    }

    /// This layer's counters.
    pub fn counters(&self) -> &AccessCounters {
        &self.counters
    }
}

impl<S: LeaseStore> Access<S> {
    /// Gives the lease store back (for tests that restart the gateway on the same store).
    pub fn into_store(self) -> S {
        self.pool.into_store()
    }
}

#[cfg(test)]
mod tests;
