//! One WireGuard peer: its `boringtun` tunnel state, endpoint and routing prefixes.
//!
//! `boringtun::noise::Tunn` reads the clock itself for its handshake and session timers; the rest
//! of the core takes `now` as an argument. The wrapper keeps what the gateway needs besides the
//! tunnel: the name, the endpoint that follows the last authenticated packet (roaming), and
//! the counters shown by `status`.

use std::net::SocketAddr;
use std::sync::Arc;

use boringtun::noise::rate_limiter::RateLimiter;
use boringtun::noise::Tunn;
use ipnet::IpNet;
use serde::Serialize;

use crate::keys::{PresharedKey, PrivateKey, PublicKey};

/// What the gateway is told about a peer (from config, or from a lease).
#[derive(Debug, Clone)]
pub struct PeerSpec {
    /// Name shown in logs and `status`.
    pub name: String,
    /// The peer's static public key.
    pub public_key: PublicKey,
    /// Optional pre-shared key mixed into the handshake.
    pub preshared_key: Option<PresharedKey>,
    /// Where to send until the peer's first authenticated packet tells us otherwise.
    pub endpoint: Option<SocketAddr>,
    /// Inner prefixes routed to this peer, and accepted from it.
    pub allowed_ips: Vec<IpNet>,
    /// Seconds between keepalives when idle, if any.
    pub persistent_keepalive: Option<u16>,
}

impl From<&crate::config::PeerConfig> for PeerSpec {
    /// A `[[peer]]` of the gateway's config file.
    fn from(p: &crate::config::PeerConfig) -> Self {
        Self {
            name: p.name.clone(),
            public_key: p.public_key,
            preshared_key: p.preshared_key.clone(),
            endpoint: p.endpoint,
            allowed_ips: p.allowed_ips.clone(),
            persistent_keepalive: p.persistent_keepalive,
        }
    }
}

/// A peer's live state.
///
/// The WireGuard state machine (`Tunn`, about 11 KiB plus its queues, and a Diffie-Hellman to
/// build) is made on first use: when a packet is routed to the peer, when it sends a handshake
/// initiation, or when it has an endpoint and a keepalive (so it must connect by itself). An idle
/// peer — a site that never talks, a leased client between sessions — costs only its spec, so
/// 10 000 configured peers start in milliseconds and stay small.
pub(crate) struct Peer {
    pub(crate) spec: PeerSpec,
    tunn: Option<Box<Tunn>>,
    index: u32,
    rate_limiter: Arc<RateLimiter>,
    pub(crate) endpoint: Option<SocketAddr>,
}

impl Peer {
    pub(crate) fn new(spec: PeerSpec, index: u32, rate_limiter: Arc<RateLimiter>) -> Self {
        Self {
            endpoint: spec.endpoint,
            spec,
            tunn: None,
            index,
            rate_limiter,
        }
    }

    /// Whether the peer should connect on its own (it has somewhere to send and a keepalive), and
    /// so needs its state machine from the start.
    pub(crate) fn connects_itself(&self) -> bool {
        self.endpoint.is_some() && self.spec.persistent_keepalive.is_some_and(|k| k > 0)
    }

    /// The peer's WireGuard state machine, made now if it does not exist yet.
    pub(crate) fn tunn(&mut self, private_key: &PrivateKey) -> &mut Tunn {
        let spec = &self.spec;
        let (index, limiter) = (self.index, &self.rate_limiter);
        self.tunn.get_or_insert_with(|| {
            Box::new(Tunn::new(
                private_key.to_static_secret(),
                spec.public_key.to_dalek(),
                spec.preshared_key.as_ref().map(|k| *k.as_bytes()),
                spec.persistent_keepalive,
                index,
                Some(Arc::clone(limiter)),
            ))
        })
    }

    /// The state machine if it exists (timers and status leave idle peers alone).
    pub(crate) fn tunn_if_active(&mut self) -> Option<&mut Tunn> {
        self.tunn.as_deref_mut()
    }

    pub(crate) fn status(&self) -> PeerStatus {
        let (since_handshake, tx_bytes, rx_bytes, _loss, _rtt) = match &self.tunn {
            Some(tunn) => tunn.stats(),
            None => (None, 0, 0, 0.0, None),
        };
        PeerStatus {
            name: self.spec.name.clone(),
            public_key: self.spec.public_key,
            endpoint: self.endpoint,
            allowed_ips: self.spec.allowed_ips.clone(),
            latest_handshake_secs_ago: since_handshake.map(|d| d.as_secs()),
            rx_bytes: rx_bytes as u64,
            tx_bytes: tx_bytes as u64,
            persistent_keepalive: self.spec.persistent_keepalive,
            path: match self.endpoint {
                Some(e) if crate::traversal::is_relay_address(&e) => "relayed",
                _ => "direct",
            },
        }
    }
}

/// A peer as `status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct PeerStatus {
    /// Name from the config.
    pub name: String,
    /// The peer's public key.
    pub public_key: PublicKey,
    /// Current endpoint (the source of the last authenticated packet, or the configured one).
    pub endpoint: Option<SocketAddr>,
    /// Prefixes routed to this peer.
    pub allowed_ips: Vec<IpNet>,
    /// Seconds since the last completed handshake, if any.
    pub latest_handshake_secs_ago: Option<u64>,
    /// Inner bytes received from the peer.
    pub rx_bytes: u64,
    /// Inner bytes sent to the peer.
    pub tx_bytes: u64,
    /// Keepalive interval, if set.
    pub persistent_keepalive: Option<u16>,
    /// "direct" or "relayed".
    pub path: &'static str,
}
