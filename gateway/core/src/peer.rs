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

/// A peer's live state.
pub(crate) struct Peer {
    pub(crate) spec: PeerSpec,
    pub(crate) tunn: Tunn,
    pub(crate) endpoint: Option<SocketAddr>,
}

impl Peer {
    pub(crate) fn new(
        spec: PeerSpec,
        private_key: &PrivateKey,
        index: u32,
        rate_limiter: Arc<RateLimiter>,
    ) -> Self {
        let tunn = Tunn::new(
            private_key.to_static_secret(),
            spec.public_key.to_dalek(),
            spec.preshared_key.as_ref().map(|k| *k.as_bytes()),
            spec.persistent_keepalive,
            index,
            Some(rate_limiter),
        );
        Self {
            endpoint: spec.endpoint,
            spec,
            tunn,
        }
    }

    pub(crate) fn status(&self) -> PeerStatus {
        let (since_handshake, tx_bytes, rx_bytes, _loss, _rtt) = self.tunn.stats();
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
