//! STUN on the tunnel's own UDP socket (issue #5): Binding requests to the configured
//! `[traversal] stun_servers` at start and every [`REFRESH`], sent from the socket WireGuard
//! uses, so the public endpoint learned is the tunnel's own mapping (and the requests keep it
//! open). `status` shows it as `interface.public_endpoint`.
//!
//! Demultiplexing: a datagram is taken only when it is a STUN message (magic cookie at bytes
//! 4..8, see [`sitelink_core::stun::codec::is_stun`]) answering one of our outstanding
//! transactions; everything else (WireGuard type 1 also starts with byte 0x01) goes on to the
//! WireGuard path untouched.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand_core::OsRng;
use sitelink_core::config::{GatewayConfig, GatewayEndpoint};
use sitelink_core::gateway::Sink;
use sitelink_core::stun::{Change, Input, Outcome, RetransmitPolicy, StunClient};
use tracing::{debug, info, warn};

/// How often the public endpoint is asked for again (well inside common UDP NAT timeouts).
pub(super) const REFRESH: Duration = Duration::from_secs(25);

/// The STUN client on the tunnel socket and what it learned.
pub(super) struct TunnelStun {
    client: StunClient,
    servers: Vec<SocketAddr>,
    next_round: Instant,
    public: Option<SocketAddr>,
}

impl TunnelStun {
    /// A client for the configured STUN servers, or `None` when there are none (host names are
    /// not resolved here: only literal addresses are asked).
    pub(super) fn new(config: &GatewayConfig, now: Instant) -> Option<Self> {
        let servers: Vec<SocketAddr> = config
            .traversal
            .stun_servers
            .iter()
            .filter_map(|s| match s {
                GatewayEndpoint::Addr(a) => Some(*a),
                GatewayEndpoint::Host { .. } => {
                    warn!(server = ?s, "stun: host names are not asked from the tunnel socket");
                    None
                }
            })
            .collect();
        if servers.is_empty() {
            return None;
        }
        Some(Self {
            client: StunClient::new(RetransmitPolicy::RFC8489),
            servers,
            next_round: now,
            public: None,
        })
    }

    /// The public endpoint of the tunnel socket, as the last answer named it.
    pub(super) fn public_endpoint(&self) -> Option<SocketAddr> {
        self.public
    }

    /// When [`Self::handle_timeout`] wants to run next.
    pub(super) fn poll_timeout(&self) -> Instant {
        self.client
            .poll_timeout()
            .map_or(self.next_round, |t| t.min(self.next_round))
    }

    /// Takes `bytes` from `src` if it answers one of our Binding requests; returns whether it
    /// did (the datagram is then not WireGuard's).
    pub(super) fn handle_datagram(&mut self, src: SocketAddr, bytes: &[u8], now: Instant) -> bool {
        match self.client.handle_input(src, bytes, now) {
            Input::Answered(_) => {
                self.drain_events();
                true
            }
            Input::NotStun | Input::Request(_) | Input::Stray => false,
        }
    }

    /// Starts a round when one is due, retransmits, and sends what the client queued.
    pub(super) fn handle_timeout(&mut self, now: Instant, sink: &mut dyn Sink) {
        if now >= self.next_round {
            self.next_round = now + REFRESH;
            for server in &self.servers {
                // An unanswered request gives up on its own (RFC 8489 timers, ~40 s).
                let _ = self
                    .client
                    .send_binding(*server, Change::NONE, now, &mut OsRng);
            }
        }
        self.client.handle_timeout(now);
        self.drain_events();
        while let Some(t) = self.client.poll_transmit() {
            sink.send_to(t.dst, &t.payload);
        }
    }

    fn drain_events(&mut self) {
        while let Some(done) = self.client.poll_event() {
            match done.outcome {
                Outcome::Mapped { mapped, .. } => {
                    if self.public != Some(mapped) {
                        info!(server = %done.server, public_endpoint = %mapped, "stun: tunnel socket's public endpoint");
                    }
                    self.public = Some(mapped);
                }
                Outcome::Error { code, reason } => {
                    debug!(server = %done.server, code, %reason, "stun: error response");
                }
                Outcome::TimedOut => debug!(server = %done.server, "stun: no answer"),
            }
        }
    }
}

/// Adds `interface.public_endpoint` (or `null` before the first answer) to a `status` answer.
pub(super) fn annotate_status(body: String, public: Option<SocketAddr>) -> String {
    match serde_json::from_str::<serde_json::Value>(&body) {
        Ok(mut v) => {
            if let Some(iface) = v.get_mut("interface").and_then(|i| i.as_object_mut()) {
                iface.insert(
                    "public_endpoint".to_owned(),
                    public.map_or(serde_json::Value::Null, |p| p.to_string().into()),
                );
            }
            v.to_string()
        }
        Err(_) => body,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sitelink_core::stun::codec::server;
    use sitelink_core::stun::TransactionId;

    #[derive(Default)]
    struct Sent(Vec<(SocketAddr, Vec<u8>)>);

    impl Sink for Sent {
        fn send_to(&mut self, dst: SocketAddr, datagram: &[u8]) {
            self.0.push((dst, datagram.to_vec()));
        }
        fn write_tun(&mut self, _packet: &[u8]) {}
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("address")
    }

    #[test]
    fn takes_only_answers_to_its_own_requests() {
        let now = Instant::now();
        let server = addr("198.51.100.10:3478");
        let mut stun = TunnelStun {
            client: StunClient::new(RetransmitPolicy::RFC8489),
            servers: vec![server],
            next_round: now,
            public: None,
        };
        let mut sent = Sent::default();
        stun.handle_timeout(now, &mut sent);
        assert_eq!(sent.0.len(), 1);
        assert_eq!(sent.0[0].0, server);
        let mut id = TransactionId([0; 12]);
        id.0.copy_from_slice(&sent.0[0].1[8..20]);
        assert_eq!(stun.poll_timeout().max(now + REFRESH), now + REFRESH);

        // A WireGuard handshake initiation (type 1) whose sender index happens to be the magic
        // cookie is not STUN's.
        let mut wg = vec![0u8; 148];
        wg[0] = 1;
        wg[4..8].copy_from_slice(&[0x21, 0x12, 0xa4, 0x42]);
        assert!(!stun.handle_datagram(server, &wg, now));
        // A success response to a transaction we never started is not ours either.
        let other = server::success(TransactionId([7; 12]), addr("203.0.113.9:1"), None);
        assert!(!stun.handle_datagram(server, &other, now));
        assert_eq!(stun.public_endpoint(), None);

        let mapped = addr("203.0.113.1:51820");
        let answer = server::success(id, mapped, None);
        assert!(stun.handle_datagram(server, &answer, now));
        assert_eq!(stun.public_endpoint(), Some(mapped));
        // A duplicate is no longer ours: it goes on (and WireGuard drops it).
        assert!(!stun.handle_datagram(server, &answer, now));

        let body = annotate_status(r#"{"interface":{"name":"x"}}"#.to_owned(), Some(mapped));
        assert!(
            body.contains(r#""public_endpoint":"203.0.113.1:51820""#),
            "{body}"
        );
    }
}
