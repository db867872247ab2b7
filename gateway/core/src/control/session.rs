//! A transport session: the keys from one handshake, explicit nonces, the replay window and
//! the limits after which the session is dropped.
//!
//! Both sides use snow's stateless transport mode: each packet carries its own 64-bit nonce,
//! which the sender counts up from 0 and the receiver checks against a [`ReplayWindow`] before
//! decrypting and marks only after the tag verified.

use std::time::{Duration, Instant};

use snow::StatelessTransportState;

use super::replay::{ReplayError, ReplayWindow};
use super::wire::{Transport, MAX_PLAINTEXT_LEN, TAG_LEN};

/// The gateway drops a session that has received nothing authentic for this long.
pub const SESSION_IDLE_TIMEOUT: Duration = Duration::from_secs(180);
/// The gateway drops a session this long after its handshake, however busy.
pub const SESSION_MAX_AGE: Duration = Duration::from_secs(600);
/// Either side stops using a session after this many packets in one direction.
pub const SESSION_MAX_MESSAGES: u64 = 1 << 16;
/// The client rehandshakes this much before the gateway's limits (and this many messages
/// before [`SESSION_MAX_MESSAGES`]), so the two sides never disagree about a session's life.
pub const REHANDSHAKE_MARGIN: Duration = Duration::from_secs(60);
/// Message margin, see [`REHANDSHAKE_MARGIN`].
const MESSAGE_MARGIN: u64 = 1024;

/// Why a transport packet could not be opened or sealed.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The nonce was seen before or is too old.
    #[error("replayed transport packet: {0}")]
    Replayed(#[from] ReplayError),
    /// The tag did not verify (tampered, or another session's key).
    #[error("transport packet failed authentication")]
    Decrypt,
    /// The session has sent or received its last allowed message.
    #[error("session exhausted its messages")]
    Exhausted,
    /// The message does not fit a transport packet.
    #[error("message of {0} bytes does not fit a transport packet")]
    TooLong(usize),
}

/// One side of an established session.
pub(crate) struct Session {
    transport: StatelessTransportState,
    /// Our index: the peer addresses its packets to it.
    pub(crate) local_index: u32,
    /// The peer's index: our packets carry it.
    pub(crate) remote_index: u32,
    next_nonce: u64,
    replay: ReplayWindow,
    received: u64,
    /// When the handshake completed.
    pub(crate) established: Instant,
    /// When an authentic packet last arrived (or `established`).
    pub(crate) last_received: Instant,
}

impl Session {
    pub(crate) fn new(
        transport: StatelessTransportState,
        local_index: u32,
        remote_index: u32,
        now: Instant,
    ) -> Self {
        Self {
            transport,
            local_index,
            remote_index,
            next_nonce: 0,
            replay: ReplayWindow::new(),
            received: 0,
            established: now,
            last_received: now,
        }
    }

    /// Encrypts `plaintext` into a transport packet with the next nonce.
    pub(crate) fn seal(&mut self, plaintext: &[u8]) -> Result<Vec<u8>, SessionError> {
        if self.next_nonce >= SESSION_MAX_MESSAGES {
            return Err(SessionError::Exhausted);
        }
        let nonce = self.next_nonce;
        let mut packet = Transport::with_header(self.remote_index, nonce, plaintext.len())
            .ok_or(SessionError::TooLong(plaintext.len()))?;
        self.transport
            .write_message(nonce, plaintext, packet.ciphertext_mut())
            .map_err(|_| SessionError::TooLong(plaintext.len()))?;
        self.next_nonce += 1;
        Ok(packet.into_inner())
    }

    /// Checks the nonce, decrypts, and only then remembers the nonce.
    pub(crate) fn open(
        &mut self,
        packet: &Transport<&[u8]>,
        now: Instant,
    ) -> Result<Vec<u8>, SessionError> {
        if self.received >= SESSION_MAX_MESSAGES {
            return Err(SessionError::Exhausted);
        }
        let nonce = packet.nonce();
        self.replay.check(nonce)?;
        let ciphertext = packet.ciphertext();
        let mut plaintext = vec![
            0u8;
            ciphertext
                .len()
                .saturating_sub(TAG_LEN)
                .min(MAX_PLAINTEXT_LEN)
        ];
        let len = self
            .transport
            .read_message(nonce, ciphertext, &mut plaintext)
            .map_err(|_| SessionError::Decrypt)?;
        self.replay.mark(nonce)?;
        plaintext.truncate(len);
        self.received += 1;
        self.last_received = now;
        Ok(plaintext)
    }

    /// When the gateway drops this session unless something arrives first.
    pub(crate) fn expires_at(&self) -> Instant {
        (self.last_received + SESSION_IDLE_TIMEOUT).min(self.established + SESSION_MAX_AGE)
    }

    /// Whether the gateway should drop the session now.
    pub(crate) fn is_expired(&self, now: Instant) -> bool {
        now >= self.expires_at() || self.exhausted()
    }

    /// Whether it has sent or received its last allowed message.
    pub(crate) fn exhausted(&self) -> bool {
        self.received >= SESSION_MAX_MESSAGES || self.next_nonce >= SESSION_MAX_MESSAGES
    }

    /// Whether the client should make a new session before sending: within
    /// [`REHANDSHAKE_MARGIN`] of the gateway's limits.
    pub(crate) fn needs_rehandshake(&self, now: Instant) -> bool {
        now + REHANDSHAKE_MARGIN >= self.expires_at()
            || self.next_nonce + MESSAGE_MARGIN >= SESSION_MAX_MESSAGES
            || self.received + MESSAGE_MARGIN >= SESSION_MAX_MESSAGES
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::noise::{accept, complete, initiate, into_transport, respond, Tai64N};
    use crate::control::tests::rng;
    use crate::control::wire::{HandshakeInit, HandshakeResponse};
    use crate::keys::PrivateKey;
    use std::time::UNIX_EPOCH;

    /// A connected pair: (client, gateway).
    pub(crate) fn pair(now: Instant) -> (Session, Session) {
        let mut rng = rng(9);
        let client = PrivateKey::generate(&mut rng);
        let gateway = PrivateKey::generate(&mut rng);
        let ts = Tai64N::from_system_time(UNIX_EPOCH);
        let init = initiate(&client, &gateway.public_key(), 11, ts, &mut rng).expect("init");
        let view = HandshakeInit::new_checked(&init.packet[..]).expect("valid");
        let accepted = accept(&gateway, &view, &mut rng).expect("accept");
        let (resp, server) = respond(accepted, 11, 22).expect("respond");
        let view = HandshakeResponse::new_checked(&resp[..]).expect("valid");
        let mut state = init.state;
        let index = complete(&mut state, &view).expect("complete");
        let client_t = into_transport(state).expect("finished");
        (
            Session::new(client_t, 11, index, now),
            Session::new(server, 22, 11, now),
        )
    }

    #[test]
    fn seal_open_replay_tamper() {
        let now = Instant::now();
        let (mut c, mut g) = pair(now);
        let p1 = c.seal(b"one").expect("seal");
        let p2 = c.seal(b"two").expect("seal");
        let v2 = Transport::new_checked(&p2[..]).expect("valid");
        assert_eq!(v2.receiver_index(), 22);
        assert_eq!(g.open(&v2, now).expect("open"), b"two");
        let v1 = Transport::new_checked(&p1[..]).expect("valid");
        assert_eq!(g.open(&v1, now).expect("reordered is fine"), b"one");
        assert!(matches!(
            g.open(&v1, now),
            Err(SessionError::Replayed(ReplayError::Duplicate(0)))
        ));

        let p3 = c.seal(b"three").expect("seal");
        let mut bad = p3.clone();
        let last = bad.len() - 1;
        bad[last] ^= 0x80;
        let vb = Transport::new_checked(&bad[..]).expect("valid layout");
        assert!(matches!(g.open(&vb, now), Err(SessionError::Decrypt)));
        // The forged copy did not burn the nonce: the real packet still opens.
        let v3 = Transport::new_checked(&p3[..]).expect("valid");
        assert_eq!(g.open(&v3, now).expect("open"), b"three");

        // Changing the nonce in the header breaks the tag.
        let p4 = c.seal(b"four").expect("seal");
        let mut moved = p4.clone();
        moved[15] ^= 0x10; // nonce 3 becomes 19, unseen
        let vm = Transport::new_checked(&moved[..]).expect("valid layout");
        assert!(matches!(g.open(&vm, now), Err(SessionError::Decrypt)));

        // The gateway answers on the same session.
        let back = g.seal(b"reply").expect("seal");
        let vback = Transport::new_checked(&back[..]).expect("valid");
        assert_eq!(vback.receiver_index(), 11);
        assert_eq!(c.open(&vback, now).expect("open"), b"reply");
    }

    #[test]
    fn lifetimes() {
        let now = Instant::now();
        let (c, g) = pair(now);
        assert!(!g.is_expired(now));
        assert!(!c.needs_rehandshake(now));
        let soon = now + SESSION_IDLE_TIMEOUT - REHANDSHAKE_MARGIN;
        assert!(c.needs_rehandshake(soon));
        assert!(!g.is_expired(soon));
        assert!(g.is_expired(now + SESSION_IDLE_TIMEOUT));
    }
}
