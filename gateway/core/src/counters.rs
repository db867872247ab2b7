//! Data-plane counters: every dropped packet is counted under the reason it was dropped.

use serde::Serialize;

/// Counters of the gateway's data plane, shown by `sitelink-gateway status`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Counters {
    /// UDP datagrams received on the listen port.
    pub rx_packets: u64,
    /// Datagrams that are not a well-formed message of any protocol we speak.
    pub rx_malformed: u64,
    /// Messages for a key or session index we do not know (an unknown peer, or a stale session).
    pub rx_unknown_peer: u64,
    /// Messages that failed authentication: bad MAC, bad AEAD tag, wrong pre-shared key.
    pub rx_auth_failed: u64,
    /// Replayed messages: a data counter already seen, or a handshake timestamp not newer.
    pub rx_replayed: u64,
    /// Decrypted packets whose inner source address is outside the sending peer's `allowed_ips`.
    pub rx_source_not_allowed: u64,
    /// Handshake initiations dropped by the per-source limit or while under load.
    pub handshake_rate_limited: u64,
    /// Cookie replies sent to initiators while under load.
    pub cookie_replies_sent: u64,
    /// Handshake initiations dropped because too many were already waiting to be answered (a
    /// storm; their initiators retry).
    pub handshake_queue_dropped: u64,
    /// Packets read from the TUN device.
    pub tx_packets: u64,
    /// Packets from the TUN device that are not valid IP packets.
    pub tx_malformed: u64,
    /// Packets from the TUN device whose destination matches no peer's `allowed_ips`.
    pub tx_no_route: u64,
    /// Packets for a peer whose endpoint is not known yet.
    pub tx_no_endpoint: u64,
}
