//! The control protocol between `sitelink-client` and the gateway: DHCP-like leases of virtual
//! addresses over a Noise IK channel that shares the gateway's WireGuard UDP port.
//!
//! The written specification is `docs/control-protocol.md`. In short:
//!
//! - The client knows the gateway's static key; both use their WireGuard x25519 keys. A
//!   handshake ([`noise`]) carries only a TAI64N timestamp, which the gateway requires to grow
//!   per client key, so replayed initiations are refused. Afterwards both sides use snow's
//!   stateless transport mode: each [`wire::Transport`] packet carries the receiver's session
//!   index and an explicit nonce, checked against a sliding [`replay`] window.
//! - Inside, [`message`]s mirror DHCP: Discover → Offer, Request → Ack | Nak, Renew → Ack | Nak,
//!   Release → ReleaseAck, plus an endpoint exchange for NAT traversal.
//! - [`server::ControlServer`] answers them, asking a [`crate::lease::AddressAuthority`] for the
//!   addresses, and emits events the gateway uses to add and remove WireGuard peers.
//!   [`client::ControlClient`] runs the DHCP client state machine with retransmission.
//! - Anything that does not authenticate — unknown keys, replays, tampered or garbage packets —
//!   gets no answer at all; it is counted in [`ControlCounters`] and reported as a
//!   [`ControlError`] to the caller.
//!
//! Both state machines are sans-IO in quinn's style: `handle_input`, `handle_timeout` in;
//! `poll_transmit`, `poll_event`, `poll_timeout` out. Time (`Instant` for timers, `SystemTime`
//! for timestamps and leases) and randomness come in as arguments.

pub mod client;
pub mod message;
pub mod noise;
pub mod replay;
pub mod server;
pub mod session;
pub mod wire;

#[cfg(test)]
pub(crate) mod tests;

use std::net::SocketAddr;
use std::time::Duration;

use serde::Serialize;

use crate::keys::PublicKey;

pub use wire::is_control_packet;

/// A datagram to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Where to send it.
    pub destination: SocketAddr,
    /// The datagram.
    pub contents: Vec<u8>,
}

/// Exponential backoff for retransmissions: `initial`, doubling, at most `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retransmit {
    /// Delay before the first retransmission.
    pub initial: Duration,
    /// Longest delay between two transmissions.
    pub max: Duration,
}

impl Default for Retransmit {
    /// 1 s, 2 s, 4 s, … 32 s.
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(32),
        }
    }
}

impl Retransmit {
    /// The delay after the `attempt`-th transmission (0 for the first).
    pub fn delay(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
        self.initial.saturating_mul(factor).min(self.max)
    }
}

/// What happened to the control packets a side received. Every packet that gets no answer is
/// counted under exactly one reason.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ControlCounters {
    /// Control datagrams handed to `handle_input`.
    pub rx_packets: u64,
    /// Not a well-formed control packet (type, version, length, reserved bytes).
    pub rx_malformed: u64,
    /// Handshakes or transport packets that failed authentication (tampered, wrong key).
    pub rx_auth_failed: u64,
    /// Authenticated handshakes from a key that is not authorised (gateway only).
    pub rx_unknown_key: u64,
    /// Handshakes whose timestamp was not newer than the last accepted one for that key.
    pub rx_replayed_handshake: u64,
    /// Transport packets or responses for a session index we do not have.
    pub rx_unknown_session: u64,
    /// Transport packets whose nonce was already seen or is too old.
    pub rx_replayed: u64,
    /// Authenticated packets whose message does not decode.
    pub rx_bad_message: u64,
    /// Valid messages that were not expected (wrong direction, stale transaction, wrong state).
    pub rx_unexpected: u64,
    /// Handshakes completed.
    pub handshakes: u64,
    /// Datagrams queued for sending.
    pub tx_packets: u64,
    /// Our own failures (a message that would not encode, snow refusing to build a handshake).
    pub internal_errors: u64,
}

/// Why a received control datagram was dropped without an answer.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// Not a well-formed control packet.
    #[error(transparent)]
    Malformed(#[from] wire::WireError),
    /// The handshake did not authenticate (or snow failed).
    #[error(transparent)]
    Handshake(#[from] noise::NoiseError),
    /// The handshake authenticated a key that is not authorised.
    #[error("handshake from unknown key {0}")]
    UnknownKey(PublicKey),
    /// The handshake's timestamp is not newer than the last accepted one from this key.
    #[error("replayed handshake from {0}")]
    ReplayedHandshake(PublicKey),
    /// No session has this index (never had, expired, or replaced).
    #[error("no session with index {0:#010x}")]
    UnknownSession(u32),
    /// A transport packet was replayed or failed authentication.
    #[error(transparent)]
    Session(#[from] session::SessionError),
    /// The decrypted message does not decode.
    #[error(transparent)]
    Message(#[from] message::MessageError),
    /// A valid message that this side does not expect now.
    #[error("unexpected {message} message: {why}")]
    Unexpected {
        /// The message's name.
        message: &'static str,
        /// Why it is not expected.
        why: &'static str,
    },
    /// Our own failure while answering; nothing was sent.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ControlError {
    /// Counts this error under its reason.
    fn count(&self, counters: &mut ControlCounters) {
        let slot = match self {
            ControlError::Malformed(_) => &mut counters.rx_malformed,
            ControlError::Handshake(noise::NoiseError::Snow(_))
            | ControlError::Handshake(noise::NoiseError::BadPayload(_))
            | ControlError::Session(session::SessionError::Decrypt) => &mut counters.rx_auth_failed,
            ControlError::Handshake(noise::NoiseError::BadMessageLength(_))
            | ControlError::Internal(_)
            | ControlError::Session(session::SessionError::TooLong(_)) => {
                &mut counters.internal_errors
            }
            ControlError::UnknownKey(_) => &mut counters.rx_unknown_key,
            ControlError::ReplayedHandshake(_) => &mut counters.rx_replayed_handshake,
            ControlError::UnknownSession(_)
            | ControlError::Session(session::SessionError::Exhausted) => {
                &mut counters.rx_unknown_session
            }
            ControlError::Session(session::SessionError::Replayed(_)) => &mut counters.rx_replayed,
            ControlError::Message(_) => &mut counters.rx_bad_message,
            ControlError::Unexpected { .. } => &mut counters.rx_unexpected,
        };
        *slot += 1;
    }
}

/// A short label for logs: the first 8 characters of a key's base64.
fn short_key(key: &PublicKey) -> String {
    key.to_base64().chars().take(8).collect()
}
