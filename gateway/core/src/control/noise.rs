//! The control protocol's Noise IK handshake (`Noise_IK_25519_ChaChaPoly_BLAKE2s`, via `snow`).
//!
//! The client (initiator) knows the gateway's static key; both static keys are the x25519 keys
//! the two sides use for WireGuard. The prologue binds the protocol label and the initiation's
//! header (type, version, reserved bytes, client's session index) into the handshake hash, so a
//! tampered header makes the handshake fail.
//!
//! The initiation's payload is encrypted only to the gateway's static key: it has no forward
//! secrecy and can be replayed. It carries only a TAI64N timestamp ([`Tai64N`]) so the gateway can
//! refuse replays; no lease decision is ever taken on it. The response's payload (the gateway's
//! session index) is sent after both DH steps with the ephemeral keys.
//!
//! Randomness: snow asks its resolver for an RNG to make the ephemeral key. `SeededResolver`
//! hands it 32 bytes drawn from the caller's `CryptoRngCore` and nothing more, so the core never
//! touches OS randomness and tests are deterministic. snow is built without its `getrandom`
//! feature.

use std::cell::Cell;
use std::time::{SystemTime, UNIX_EPOCH};

use rand_core::CryptoRngCore;
use snow::params::{CipherChoice, DHChoice, HashChoice, NoiseParams};
use snow::resolvers::{CryptoResolver, DefaultResolver};
use snow::types::{Cipher, Dh, Hash, Random};
use snow::{HandshakeState, StatelessTransportState};

use super::wire::{
    HandshakeInit, HandshakeResponse, INIT_NOISE_LEN, INIT_PAYLOAD_LEN, RESPONSE_NOISE_LEN,
    RESPONSE_PAYLOAD_LEN,
};
use crate::keys::{PrivateKey, PublicKey, KEY_LEN};

/// The Noise protocol name.
pub const PROTOCOL_NAME: &str = "Noise_IK_25519_ChaChaPoly_BLAKE2s";

/// The start of the prologue; the initiation's 8-byte header follows it.
const PROLOGUE_LABEL: &[u8] = b"sitelink control v1";

/// Why a handshake message could not be made or accepted.
#[derive(Debug, thiserror::Error)]
pub enum NoiseError {
    /// snow refused: authentication or decryption failed, a bad key, or an internal error.
    #[error("noise handshake failed: {0}")]
    Snow(#[from] snow::Error),
    /// The handshake authenticated but its payload has the wrong length.
    #[error("handshake payload of {0} bytes has the wrong length")]
    BadPayload(usize),
    /// The message snow wrote has another length than the packet layout has room for.
    #[error("noise message of {0} bytes does not fit the packet layout")]
    BadMessageLength(usize),
}

/// A TAI64N timestamp: 8 bytes of seconds (offset by 2^62 + 10) and 4 bytes of nanoseconds,
/// big-endian, so byte order is time order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Tai64N([u8; 12]);

/// TAI64 label of the Unix epoch.
const TAI64_EPOCH: u64 = (1 << 62) + 10;

impl Tai64N {
    /// The timestamp of a wall-clock time (times before 1970 count as 1970).
    pub fn from_system_time(time: SystemTime) -> Self {
        let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
        Self::from_parts(
            TAI64_EPOCH.saturating_add(since.as_secs()),
            since.subsec_nanos(),
        )
    }

    fn from_parts(secs: u64, nanos: u32) -> Self {
        let mut b = [0u8; 12];
        b[..8].copy_from_slice(&secs.to_be_bytes());
        b[8..].copy_from_slice(&nanos.to_be_bytes());
        Self(b)
    }

    fn parts(&self) -> (u64, u32) {
        let mut s = [0u8; 8];
        let mut n = [0u8; 4];
        s.copy_from_slice(&self.0[..8]);
        n.copy_from_slice(&self.0[8..]);
        (u64::from_be_bytes(s), u32::from_be_bytes(n))
    }

    /// The smallest timestamp after this one (one nanosecond later).
    pub fn successor(&self) -> Self {
        let (secs, nanos) = self.parts();
        if nanos >= 999_999_999 {
            Self::from_parts(secs.saturating_add(1), 0)
        } else {
            Self::from_parts(secs, nanos + 1)
        }
    }

    /// The 12 bytes on the wire.
    pub fn to_bytes(self) -> [u8; 12] {
        self.0
    }

    /// A timestamp from its 12 bytes on the wire.
    pub fn from_bytes(bytes: [u8; 12]) -> Self {
        Self(bytes)
    }
}

/// An RNG for snow that yields one ephemeral key's worth of bytes, drawn beforehand from the
/// caller's RNG, and fails after that.
struct OneShotRandom(Option<[u8; KEY_LEN]>);

impl Random for OneShotRandom {
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), snow::Error> {
        match self.0.take() {
            Some(seed) if dest.len() == seed.len() => {
                dest.copy_from_slice(&seed);
                Ok(())
            }
            _ => Err(snow::Error::Rng),
        }
    }
}

impl Drop for OneShotRandom {
    fn drop(&mut self) {
        if let Some(seed) = self.0.as_mut() {
            seed.fill(0);
        }
    }
}

/// snow's default pure-Rust primitives, with randomness from the caller (see the module doc).
struct SeededResolver {
    seed: Cell<Option<[u8; KEY_LEN]>>,
}

impl SeededResolver {
    fn new<R: CryptoRngCore + ?Sized>(rng: &mut R) -> Self {
        let mut seed = [0u8; KEY_LEN];
        rng.fill_bytes(&mut seed);
        Self {
            seed: Cell::new(Some(seed)),
        }
    }
}

impl CryptoResolver for SeededResolver {
    fn resolve_rng(&self) -> Option<Box<dyn Random>> {
        Some(Box::new(OneShotRandom(self.seed.take())))
    }

    fn resolve_dh(&self, choice: &DHChoice) -> Option<Box<dyn Dh>> {
        DefaultResolver.resolve_dh(choice)
    }

    fn resolve_hash(&self, choice: &HashChoice) -> Option<Box<dyn Hash>> {
        DefaultResolver.resolve_hash(choice)
    }

    fn resolve_cipher(&self, choice: &CipherChoice) -> Option<Box<dyn Cipher>> {
        DefaultResolver.resolve_cipher(choice)
    }
}

fn params() -> Result<NoiseParams, NoiseError> {
    Ok(PROTOCOL_NAME.parse()?)
}

/// The prologue for an initiation with this header.
fn prologue(header: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(PROLOGUE_LABEL.len() + header.len());
    p.extend_from_slice(PROLOGUE_LABEL);
    p.extend_from_slice(header);
    p
}

/// A handshake the client started and the initiation that carries it.
pub(crate) struct Initiation {
    /// Waits for the response.
    pub(crate) state: HandshakeState,
    /// The datagram to send.
    pub(crate) packet: Vec<u8>,
}

/// Client: starts a handshake with the gateway, carrying `timestamp`.
pub(crate) fn initiate<R: CryptoRngCore + ?Sized>(
    local: &PrivateKey,
    gateway: &PublicKey,
    sender_index: u32,
    timestamp: Tai64N,
    rng: &mut R,
) -> Result<Initiation, NoiseError> {
    let mut packet = HandshakeInit::with_header(sender_index);
    let prologue = prologue(packet.header());
    let secret = local.to_static_secret();
    let mut state = snow::Builder::with_resolver(params()?, Box::new(SeededResolver::new(rng)))
        .local_private_key(secret.as_bytes())?
        .remote_public_key(gateway.as_bytes())?
        .prologue(&prologue)?
        .build_initiator()?;
    let written = state.write_message(&timestamp.to_bytes(), packet.noise_mut())?;
    if written != INIT_NOISE_LEN {
        return Err(NoiseError::BadMessageLength(written));
    }
    Ok(Initiation {
        state,
        packet: packet.into_inner(),
    })
}

/// An initiation the gateway decrypted: who sent it and when, not yet answered.
pub(crate) struct Accepted {
    /// The client's static key (authenticated by the handshake).
    pub(crate) client: PublicKey,
    /// The client's timestamp.
    pub(crate) timestamp: Tai64N,
    state: HandshakeState,
}

/// Gateway: reads an initiation. Fails if it does not decrypt with our static key.
pub(crate) fn accept<R: CryptoRngCore + ?Sized>(
    local: &PrivateKey,
    init: &HandshakeInit<&[u8]>,
    rng: &mut R,
) -> Result<Accepted, NoiseError> {
    let prologue = prologue(init.header());
    let secret = local.to_static_secret();
    let mut state = snow::Builder::with_resolver(params()?, Box::new(SeededResolver::new(rng)))
        .local_private_key(secret.as_bytes())?
        .prologue(&prologue)?
        .build_responder()?;
    let mut payload = [0u8; INIT_NOISE_LEN];
    let len = state.read_message(init.noise(), &mut payload)?;
    if len != INIT_PAYLOAD_LEN {
        return Err(NoiseError::BadPayload(len));
    }
    let mut ts = [0u8; INIT_PAYLOAD_LEN];
    ts.copy_from_slice(&payload[..INIT_PAYLOAD_LEN]);
    let client = state
        .get_remote_static()
        .and_then(|s| <[u8; KEY_LEN]>::try_from(s).ok())
        .map(PublicKey::from_bytes)
        .ok_or(NoiseError::Snow(snow::Error::Input))?;
    Ok(Accepted {
        client,
        timestamp: Tai64N::from_bytes(ts),
        state,
    })
}

/// Gateway: answers an accepted initiation, telling the client our session index. Returns the
/// response datagram and the session's transport state.
pub(crate) fn respond(
    accepted: Accepted,
    receiver_index: u32,
    local_index: u32,
) -> Result<(Vec<u8>, StatelessTransportState), NoiseError> {
    let mut state = accepted.state;
    let mut packet = HandshakeResponse::with_header(receiver_index);
    let written = state.write_message(&local_index.to_be_bytes(), packet.noise_mut())?;
    if written != RESPONSE_NOISE_LEN {
        return Err(NoiseError::BadMessageLength(written));
    }
    Ok((packet.into_inner(), state.into_stateless_transport_mode()?))
}

/// Client: reads the response to our initiation and returns the gateway's session index. On
/// failure `state` is unchanged, so a forged response does not spoil the handshake; on success
/// turn it into a transport with [`into_transport`].
pub(crate) fn complete(
    state: &mut HandshakeState,
    response: &HandshakeResponse<&[u8]>,
) -> Result<u32, NoiseError> {
    let mut payload = [0u8; RESPONSE_NOISE_LEN];
    let len = state.read_message(response.noise(), &mut payload)?;
    if len != RESPONSE_PAYLOAD_LEN {
        return Err(NoiseError::BadPayload(len));
    }
    Ok(u32::from_be_bytes([
        payload[0], payload[1], payload[2], payload[3],
    ]))
}

/// The transport state of a finished handshake.
pub(crate) fn into_transport(state: HandshakeState) -> Result<StatelessTransportState, NoiseError> {
    Ok(state.into_stateless_transport_mode()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::tests::rng;
    use crate::control::wire::{HandshakeInit, HandshakeResponse};
    use std::time::Duration;

    fn keys(rng: &mut impl CryptoRngCore) -> (PrivateKey, PrivateKey) {
        (PrivateKey::generate(rng), PrivateKey::generate(rng))
    }

    #[test]
    fn handshake_and_transport() {
        let mut rng = rng(1);
        let (client, gateway) = keys(&mut rng);
        let ts = Tai64N::from_system_time(UNIX_EPOCH + Duration::from_secs(1_700_000_000));
        let init = initiate(&client, &gateway.public_key(), 42, ts, &mut rng).expect("init");
        let view = HandshakeInit::new_checked(&init.packet[..]).expect("valid");
        let accepted = accept(&gateway, &view, &mut rng).expect("accept");
        assert_eq!(accepted.client, client.public_key());
        assert_eq!(accepted.timestamp, ts);
        let (response, server) = respond(accepted, 42, 7).expect("respond");
        let view = HandshakeResponse::new_checked(&response[..]).expect("valid");
        assert_eq!(view.receiver_index(), 42);
        let mut state = init.state;
        let index = complete(&mut state, &view).expect("complete");
        assert_eq!(index, 7);
        let client_transport = into_transport(state).expect("finished");

        let mut ct = [0u8; 64];
        let n = client_transport
            .write_message(5, b"hello", &mut ct)
            .expect("encrypt");
        let mut pt = [0u8; 64];
        let m = server.read_message(5, &ct[..n], &mut pt).expect("decrypt");
        assert_eq!(&pt[..m], b"hello");
        assert!(server.read_message(6, &ct[..n], &mut pt).is_err());
    }

    #[test]
    fn wrong_gateway_key_or_tampered_header_fails() {
        let mut rng = rng(2);
        let (client, gateway) = keys(&mut rng);
        let other = PrivateKey::generate(&mut rng);
        let ts = Tai64N::from_system_time(UNIX_EPOCH);
        let init = initiate(&client, &other.public_key(), 1, ts, &mut rng).expect("init");
        let view = HandshakeInit::new_checked(&init.packet[..]).expect("valid");
        assert!(accept(&gateway, &view, &mut rng).is_err());

        let init = initiate(&client, &gateway.public_key(), 1, ts, &mut rng).expect("init");
        let mut packet = init.packet.clone();
        packet[4] ^= 1; // sender index, bound by the prologue
        let view = HandshakeInit::new_checked(&packet[..]).expect("valid layout");
        assert!(accept(&gateway, &view, &mut rng).is_err());
    }

    #[test]
    fn unclamped_keys_agree_with_the_keys_module() {
        let mut rng = rng(3);
        let client = PrivateKey::from_bytes([0xFF; 32]);
        let gateway = PrivateKey::generate(&mut rng);
        let ts = Tai64N::from_system_time(UNIX_EPOCH);
        let init = initiate(&client, &gateway.public_key(), 1, ts, &mut rng).expect("init");
        let view = HandshakeInit::new_checked(&init.packet[..]).expect("valid");
        let accepted = accept(&gateway, &view, &mut rng).expect("accept");
        assert_eq!(accepted.client, client.public_key());
    }

    #[test]
    fn tai64n_orders_and_succeeds() {
        let a = Tai64N::from_system_time(UNIX_EPOCH + Duration::new(10, 999_999_999));
        let b = a.successor();
        assert!(b > a);
        assert_eq!(
            b,
            Tai64N::from_system_time(UNIX_EPOCH + Duration::new(11, 0))
        );
        let before = Tai64N::from_system_time(UNIX_EPOCH - Duration::from_secs(5));
        assert_eq!(before, Tai64N::from_system_time(UNIX_EPOCH));
    }
}
