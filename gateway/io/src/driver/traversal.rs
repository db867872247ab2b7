//! The gateway driver's NAT-traversal glue: feeds traversal packets to the sans-IO
//! [`Traversal`] agent, wraps WireGuard datagrams for relayed peers, applies path changes to the
//! data plane, and adds the paths to `status`.
//!
//! The driver adds no allocation or system call per relayed packet: it keeps the agent's
//! decryption buffer and a CSPRNG for the nonces ([`NonceRng`]), and sends each transmit while
//! the agent lends it.

mod nonce_rng;

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::{Instant, SystemTime};

use nonce_rng::NonceRng;
use serde_json::{json, Value};
use sitelink_core::config::GatewayConfig;
use sitelink_core::control::message::{Candidate, CandidateKind};
use sitelink_core::gateway::{Gateway, Sink};
use sitelink_core::traversal::{
    is_relay_address, is_traversal_packet, Path, PunchConfig, Traversal, TraversalPeer,
};
use tracing::{debug, info, trace};

/// The traversal agent and what the driver needs around it.
pub(super) struct TraversalDriver {
    agent: Traversal,
    /// The nonces' (and probe ids') random source.
    rng: NonceRng,
    /// The agent's decryption buffer; a relayed datagram borrows it.
    scratch: Vec<u8>,
    names: Vec<(sitelink_core::keys::PublicKey, String)>,
    /// The host candidates (found at start).
    host: Vec<Candidate>,
}

impl TraversalDriver {
    /// An agent for `config`, or `None` when no peer names a rendezvous and this gateway offers
    /// none.
    pub(super) fn new(config: &GatewayConfig, listen_port: u16, now: Instant) -> Option<Self> {
        let peers: Vec<TraversalPeer> = config
            .peers
            .iter()
            .map(|p| {
                let hub = p
                    .rendezvous
                    .as_ref()
                    .and_then(|name| config.peers.iter().find(|h| &h.name == name));
                TraversalPeer {
                    name: p.name.clone(),
                    key: p.public_key,
                    rendezvous: hub.map(|h| h.public_key),
                    rendezvous_endpoint: hub.and_then(|h| h.endpoint),
                }
            })
            .collect();
        let mut agent = Traversal::new(
            &config.interface.private_key,
            &peers,
            config.traversal.rendezvous,
            PunchConfig::default(),
            now,
        )?;
        // Host candidates: the address each rendezvous is reached from, with the listen port.
        let mut local = Vec::new();
        for hub in peers.iter().filter_map(|p| p.rendezvous_endpoint) {
            if let Some(ip) = local_address_towards(hub) {
                let c = Candidate {
                    kind: CandidateKind::Host,
                    addr: SocketAddr::new(ip, listen_port),
                };
                if !local.contains(&c) {
                    local.push(c);
                }
            }
        }
        debug!(candidates = ?local, "traversal: local candidates");
        agent.set_local_candidates(local.clone(), now);
        let names = config
            .peers
            .iter()
            .map(|p| (p.public_key, p.name.clone()))
            .collect();
        Some(Self {
            agent,
            rng: NonceRng::new(),
            scratch: Vec::new(),
            names,
            host: local,
        })
    }

    /// The external endpoint of the port mapping held on the NAT (UPnP), or `None` when there
    /// is none (any more): offered as a `mapped` candidate, first, next to the host
    /// candidates. A change makes the agent register again at once.
    pub(super) fn set_mapped(&mut self, external: Option<SocketAddr>, now: Instant) {
        let mut local: Vec<Candidate> = external
            .map(|addr| Candidate {
                kind: CandidateKind::Mapped,
                addr,
            })
            .into_iter()
            .collect();
        local.extend(
            self.host
                .iter()
                .filter(|c| Some(c.addr) != external)
                .cloned(),
        );
        info!(mapped = ?external, "traversal: port mapping candidate");
        self.agent.set_local_candidates(local, now);
    }

    /// When the agent wants [`Self::handle_timeout`].
    pub(super) fn poll_timeout(&self) -> Option<Instant> {
        self.agent.poll_timeout()
    }

    /// Handles `bytes` if it is a traversal packet (returns false otherwise). A relayed
    /// WireGuard datagram goes on to the gateway.
    pub(super) fn handle_datagram(
        &mut self,
        gateway: &mut Gateway,
        src: SocketAddr,
        bytes: &[u8],
        now: Instant,
        sink: &mut impl Sink,
    ) -> bool {
        if !is_traversal_packet(bytes) {
            return false;
        }
        let wall = SystemTime::now();
        match self
            .agent
            .handle_input(src, bytes, &mut self.scratch, now, wall, &mut self.rng)
        {
            Ok(Some(relayed)) => {
                let mut relay = RelaySink {
                    inner: &mut *sink,
                    agent: Some((&mut self.agent, &mut self.rng)),
                };
                gateway.handle_datagram(relayed.src, relayed.datagram, now, &mut relay);
                // Roaming moved the endpoint to the relay; keep a direct path if we have one.
                if let Some((Path::Direct(addr), _)) = self.agent.path(&relayed.from) {
                    gateway.set_peer_endpoint(&relayed.from, addr);
                }
            }
            Ok(None) => {}
            Err(e) => trace!(%src, error = %e, "traversal packet dropped"),
        }
        self.flush(gateway, sink);
        true
    }

    /// Registrations, probes and relay fallback.
    pub(super) fn handle_timeout(
        &mut self,
        gateway: &mut Gateway,
        now: Instant,
        sink: &mut impl Sink,
    ) {
        self.agent
            .handle_timeout(now, SystemTime::now(), &mut self.rng);
        self.flush(gateway, sink);
    }

    /// Sends what the agent queued and applies its path changes.
    fn flush(&mut self, gateway: &mut Gateway, sink: &mut impl Sink) {
        while let Some(t) = self.agent.poll_transmit() {
            sink.send_to(t.dst, t.payload);
        }
        while let Some(e) = self.agent.poll_event() {
            gateway.set_peer_endpoint(&e.peer, e.endpoint);
        }
    }

    /// A sink that sends datagrams for relayed peers through their rendezvous.
    pub(super) fn sink<'a, S: Sink>(
        this: Option<&'a mut Self>,
        inner: &'a mut S,
    ) -> RelaySink<'a, S> {
        RelaySink {
            inner,
            agent: this.map(|t| (&mut t.agent, &mut t.rng)),
        }
    }

    /// A `status` answer (JSON text) with the traversal details added.
    pub(super) fn annotate_status(&self, body: String) -> String {
        match serde_json::from_str::<Value>(&body) {
            Ok(mut v) => {
                self.annotate(&mut v);
                v.to_string()
            }
            Err(_) => body,
        }
    }

    /// Adds each traversal peer's path details and the traversal counters to a `status` answer.
    fn annotate(&self, status: &mut Value) {
        if let Some(peers) = status.get_mut("peers").and_then(Value::as_array_mut) {
            for peer in peers {
                let Some(key) = peer
                    .get("public_key")
                    .and_then(Value::as_str)
                    .and_then(|k| sitelink_core::keys::PublicKey::from_base64(k).ok())
                else {
                    continue;
                };
                let Some((path, time_to_direct)) = self.agent.path(&key) else {
                    continue;
                };
                let hub = self.agent.rendezvous_of(&key);
                let hub_name = hub.and_then(|h| self.name(&h));
                let (path_name, via) = match path {
                    Path::Direct(addr) => ("direct", json!(addr.to_string())),
                    Path::Relayed => ("relayed", json!(hub_name)),
                    Path::Unknown => ("punching", Value::Null),
                };
                // What the data plane really uses decides "path": a peer is relayed while its
                // endpoint is a relay address (also before the first round decided).
                let relayed = peer
                    .get("endpoint")
                    .and_then(Value::as_str)
                    .and_then(|e| e.parse::<SocketAddr>().ok())
                    .is_some_and(|e| is_relay_address(&e));
                peer["path"] = json!(if relayed { "relayed" } else { "direct" });
                if relayed {
                    peer["endpoint"] = Value::Null;
                }
                peer["traversal"] = json!({
                    "state": path_name,
                    "via": via,
                    "rendezvous": hub_name,
                    "time_to_direct_ms": time_to_direct.map(|d| d.as_millis() as u64),
                    "candidates": self.agent.remote_candidates(&key).iter().map(ToString::to_string).collect::<Vec<_>>(),
                });
            }
        }
        status["traversal"] = json!(self.agent.counters());
    }

    fn name(&self, key: &sitelink_core::keys::PublicKey) -> Option<String> {
        self.names
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, n)| n.clone())
    }
}

/// Passes datagrams through, except those addressed to a relay address: those are wrapped for
/// the rendezvous.
pub(super) struct RelaySink<'a, S: Sink> {
    inner: &'a mut S,
    agent: Option<(&'a mut Traversal, &'a mut NonceRng)>,
}

impl<S: Sink> Sink for RelaySink<'_, S> {
    fn send_to(&mut self, dst: SocketAddr, datagram: &[u8]) {
        let Some((agent, rng)) = self.agent.as_mut().filter(|_| is_relay_address(&dst)) else {
            self.inner.send_to(dst, datagram);
            return;
        };
        if let Some(peer) = agent.relay_peer(&dst) {
            if agent.relay(&peer, datagram, SystemTime::now(), *rng) {
                while let Some(t) = agent.poll_transmit() {
                    self.inner.send_to(t.dst, t.payload);
                }
            }
        }
    }

    fn write_tun(&mut self, packet: &[u8]) {
        self.inner.write_tun(packet);
    }
}

/// The local address the kernel would send from towards `dst` (no packet is sent).
fn local_address_towards(dst: SocketAddr) -> Option<IpAddr> {
    let bind: SocketAddr = if dst.is_ipv4() {
        "0.0.0.0:0".parse().ok()?
    } else {
        "[::]:0".parse().ok()?
    };
    let socket = UdpSocket::bind(bind).ok()?;
    socket.connect(dst).ok()?;
    socket.local_addr().ok().map(|a| a.ip())
}
