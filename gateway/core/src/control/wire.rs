//! Outer packet layouts of the control protocol: typed views over a datagram's bytes.
//!
//! Every control datagram starts with a type byte in `0xC0..=0xCF` and a version byte. WireGuard
//! messages start with a type in 1–4 followed by three zero bytes, so one byte tells the two
//! protocols apart on the gateway's shared UDP port ([`is_control_packet`]). Multi-byte fields are
//! big-endian. See `docs/control-protocol.md` for the byte tables.
//!
//! ```text
//! handshake init (0xC1), 116 bytes       handshake response (0xC2), 60 bytes
//!  0  type  1  version  2..4 reserved     0  type  1  version  2..4 reserved
//!  4..8   sender index                    4..8   receiver index
//!  8..116 Noise IK message 1              8..60  Noise IK message 2
//!
//! transport (0xC3), 32..=1232 bytes
//!  0  type  1  version  2..4 reserved
//!  4..8   receiver index   8..16 nonce   16.. ciphertext (message + 16-byte tag)
//! ```
//!
//! The views follow smoltcp's `Packet<T: AsRef<[u8]>>`: `new_checked` validates the length and
//! the fixed bytes once, after which the accessors cannot fail.

/// The version of the control protocol this code speaks.
pub const VERSION: u8 = 1;

/// First byte of a handshake initiation (client to gateway).
pub const TYPE_HANDSHAKE_INIT: u8 = 0xC1;
/// First byte of a handshake response (gateway to client).
pub const TYPE_HANDSHAKE_RESPONSE: u8 = 0xC2;
/// First byte of a transport packet (either direction).
pub const TYPE_TRANSPORT: u8 = 0xC3;

/// Length of a Noise tag (ChaCha20-Poly1305).
pub const TAG_LEN: usize = 16;
/// Length of an X25519 public key.
const DH_LEN: usize = 32;
/// Length of the handshake initiation's payload: a TAI64N timestamp.
pub const INIT_PAYLOAD_LEN: usize = 12;
/// Length of the handshake response's payload: the gateway's session index.
pub const RESPONSE_PAYLOAD_LEN: usize = 4;

/// Length of the fixed header every control packet starts with (type, version, reserved, index).
pub const HEADER_LEN: usize = 8;
/// Length of Noise IK's first message: `e`, encrypted `s`, encrypted payload.
pub const INIT_NOISE_LEN: usize = DH_LEN + (DH_LEN + TAG_LEN) + (INIT_PAYLOAD_LEN + TAG_LEN);
/// Length of a handshake initiation.
pub const INIT_LEN: usize = HEADER_LEN + INIT_NOISE_LEN;
/// Length of Noise IK's second message: `e`, encrypted payload.
pub const RESPONSE_NOISE_LEN: usize = DH_LEN + RESPONSE_PAYLOAD_LEN + TAG_LEN;
/// Length of a handshake response.
pub const RESPONSE_LEN: usize = HEADER_LEN + RESPONSE_NOISE_LEN;
/// Length of a transport packet's header (up to and including the nonce).
pub const TRANSPORT_HEADER_LEN: usize = 16;
/// Largest control datagram: fits the IPv6 minimum MTU (1280) less IPv6 and UDP headers.
pub const MAX_DATAGRAM_LEN: usize = 1232;
/// Largest plaintext a transport packet can carry.
pub const MAX_PLAINTEXT_LEN: usize = MAX_DATAGRAM_LEN - TRANSPORT_HEADER_LEN - TAG_LEN;

/// Byte ranges of the fields.
mod field {
    use std::ops::{Range, RangeFrom};

    pub(super) const TYPE: usize = 0;
    pub(super) const VERSION: usize = 1;
    pub(super) const RESERVED: Range<usize> = 2..4;
    /// Sender index (init) or receiver index (response, transport).
    pub(super) const INDEX: Range<usize> = 4..8;
    /// The Noise message of a handshake packet.
    pub(super) const NOISE: RangeFrom<usize> = 8..;
    pub(super) const NONCE: Range<usize> = 8..16;
    pub(super) const CIPHERTEXT: RangeFrom<usize> = 16..;
}

/// Whether a datagram on the shared port belongs to the control protocol rather than WireGuard.
///
/// True for a first byte in `0xC0..=0xCF` (the range reserved for control packet types); the
/// packet may still be malformed.
pub fn is_control_packet(bytes: &[u8]) -> bool {
    matches!(bytes.first(), Some(0xC0..=0xCF))
}

/// The kinds of control packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketKind {
    /// [`HandshakeInit`], client to gateway.
    HandshakeInit,
    /// [`HandshakeResponse`], gateway to client.
    HandshakeResponse,
    /// [`Transport`], either direction.
    Transport,
}

/// Why bytes are not a well-formed control packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The datagram is empty.
    #[error("empty datagram")]
    Empty,
    /// The first byte is not a control packet type (it may be WireGuard's).
    #[error("first byte {0:#04x} is not a control packet type")]
    NotControl(u8),
    /// The first byte is in the control range but no packet type of this version.
    #[error("unknown control packet type {0:#04x}")]
    UnknownType(u8),
    /// The version byte is not [`VERSION`].
    #[error("unsupported control protocol version {0}")]
    UnsupportedVersion(u8),
    /// The datagram has the wrong length for its type.
    #[error("{kind:?} of {len} bytes; expected {expected}")]
    BadLength {
        /// The packet type the first byte announced.
        kind: PacketKind,
        /// The datagram's length.
        len: usize,
        /// What this type needs (the minimum, for transport packets).
        expected: usize,
    },
    /// The datagram is longer than [`MAX_DATAGRAM_LEN`].
    #[error("datagram of {0} bytes is longer than {MAX_DATAGRAM_LEN}")]
    TooLong(usize),
    /// The packet is of another type than the view asked for.
    #[error("expected a {expected:?} packet, found a {found:?}")]
    WrongType {
        /// The view's type.
        expected: PacketKind,
        /// The packet's type.
        found: PacketKind,
    },
    /// The reserved bytes are not zero.
    #[error("reserved bytes are not zero")]
    ReservedNotZero,
}

/// Reads the type and version bytes: which kind of control packet this is.
pub fn classify(bytes: &[u8]) -> Result<PacketKind, WireError> {
    let first = *bytes.first().ok_or(WireError::Empty)?;
    let kind = match first {
        TYPE_HANDSHAKE_INIT => PacketKind::HandshakeInit,
        TYPE_HANDSHAKE_RESPONSE => PacketKind::HandshakeResponse,
        TYPE_TRANSPORT => PacketKind::Transport,
        0xC0..=0xCF => return Err(WireError::UnknownType(first)),
        _ => return Err(WireError::NotControl(first)),
    };
    match bytes.get(field::VERSION) {
        Some(&VERSION) => Ok(kind),
        Some(&other) => Err(WireError::UnsupportedVersion(other)),
        None => Err(WireError::BadLength {
            kind,
            len: bytes.len(),
            expected: min_len(kind),
        }),
    }
}

/// The shortest valid packet of `kind`.
fn min_len(kind: PacketKind) -> usize {
    match kind {
        PacketKind::HandshakeInit => INIT_LEN,
        PacketKind::HandshakeResponse => RESPONSE_LEN,
        PacketKind::Transport => TRANSPORT_HEADER_LEN + TAG_LEN,
    }
}

/// Checks type, version, length and reserved bytes for a packet of `kind`.
fn check(bytes: &[u8], kind: PacketKind) -> Result<(), WireError> {
    let found = classify(bytes)?;
    let len = bytes.len();
    if len > MAX_DATAGRAM_LEN {
        return Err(WireError::TooLong(len));
    }
    if found != kind {
        return Err(WireError::WrongType {
            expected: kind,
            found,
        });
    }
    let ok_len = match kind {
        PacketKind::HandshakeInit => len == INIT_LEN,
        PacketKind::HandshakeResponse => len == RESPONSE_LEN,
        PacketKind::Transport => len >= min_len(kind),
    };
    if !ok_len {
        return Err(WireError::BadLength {
            kind,
            len,
            expected: min_len(kind),
        });
    }
    if bytes[field::RESERVED] != [0, 0] {
        return Err(WireError::ReservedNotZero);
    }
    Ok(())
}

/// Writes the 8-byte header shared by all packet types.
fn emit_header(buf: &mut [u8], packet_type: u8, index: u32) {
    buf[field::TYPE] = packet_type;
    buf[field::VERSION] = VERSION;
    buf[field::RESERVED].fill(0);
    buf[field::INDEX].copy_from_slice(&index.to_be_bytes());
}

fn read_u32(bytes: &[u8]) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&bytes[..4]);
    u32::from_be_bytes(b)
}

fn read_u64(bytes: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&bytes[..8]);
    u64::from_be_bytes(b)
}

/// A handshake initiation: the client's session index and Noise IK message 1.
#[derive(Debug, Clone, Copy)]
pub struct HandshakeInit<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> HandshakeInit<T> {
    /// Wraps `buffer` after checking type, version, length and reserved bytes.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        check(buffer.as_ref(), PacketKind::HandshakeInit)?;
        Ok(Self { buffer })
    }

    /// The index the client wants gateway-to-client transport packets addressed to.
    pub fn sender_index(&self) -> u32 {
        read_u32(&self.buffer.as_ref()[field::INDEX])
    }

    /// The header bytes (bound into the handshake as part of the Noise prologue).
    pub fn header(&self) -> &[u8] {
        &self.buffer.as_ref()[..HEADER_LEN]
    }

    /// The Noise message.
    pub fn noise(&self) -> &[u8] {
        &self.buffer.as_ref()[field::NOISE]
    }
}

impl HandshakeInit<Vec<u8>> {
    /// A zeroed initiation with its header written; fill [`Self::noise_mut`] next.
    pub fn with_header(sender_index: u32) -> Self {
        let mut buffer = vec![0u8; INIT_LEN];
        emit_header(&mut buffer, TYPE_HANDSHAKE_INIT, sender_index);
        Self { buffer }
    }

    /// The Noise message, to be written.
    pub fn noise_mut(&mut self) -> &mut [u8] {
        &mut self.buffer[field::NOISE]
    }

    /// The datagram.
    pub fn into_inner(self) -> Vec<u8> {
        self.buffer
    }
}

/// A handshake response: the client's session index and Noise IK message 2.
#[derive(Debug, Clone, Copy)]
pub struct HandshakeResponse<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> HandshakeResponse<T> {
    /// Wraps `buffer` after checking type, version, length and reserved bytes.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        check(buffer.as_ref(), PacketKind::HandshakeResponse)?;
        Ok(Self { buffer })
    }

    /// The client's session index from its initiation.
    pub fn receiver_index(&self) -> u32 {
        read_u32(&self.buffer.as_ref()[field::INDEX])
    }

    /// The Noise message.
    pub fn noise(&self) -> &[u8] {
        &self.buffer.as_ref()[field::NOISE]
    }
}

impl HandshakeResponse<Vec<u8>> {
    /// A zeroed response with its header written; fill [`Self::noise_mut`] next.
    pub fn with_header(receiver_index: u32) -> Self {
        let mut buffer = vec![0u8; RESPONSE_LEN];
        emit_header(&mut buffer, TYPE_HANDSHAKE_RESPONSE, receiver_index);
        Self { buffer }
    }

    /// The Noise message, to be written.
    pub fn noise_mut(&mut self) -> &mut [u8] {
        &mut self.buffer[field::NOISE]
    }

    /// The datagram.
    pub fn into_inner(self) -> Vec<u8> {
        self.buffer
    }
}

/// A transport packet: receiver index, explicit nonce and an encrypted message.
#[derive(Debug, Clone, Copy)]
pub struct Transport<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Transport<T> {
    /// Wraps `buffer` after checking type, version, length and reserved bytes.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        check(buffer.as_ref(), PacketKind::Transport)?;
        Ok(Self { buffer })
    }

    /// The receiver's session index.
    pub fn receiver_index(&self) -> u32 {
        read_u32(&self.buffer.as_ref()[field::INDEX])
    }

    /// The nonce the message was encrypted with.
    pub fn nonce(&self) -> u64 {
        read_u64(&self.buffer.as_ref()[field::NONCE])
    }

    /// The encrypted message and its tag.
    pub fn ciphertext(&self) -> &[u8] {
        &self.buffer.as_ref()[field::CIPHERTEXT]
    }
}

impl Transport<Vec<u8>> {
    /// A zeroed transport packet for `plaintext_len` bytes of message, header written; fill
    /// [`Self::ciphertext_mut`] next. `None` if the message is longer than
    /// [`MAX_PLAINTEXT_LEN`].
    pub fn with_header(receiver_index: u32, nonce: u64, plaintext_len: usize) -> Option<Self> {
        if plaintext_len > MAX_PLAINTEXT_LEN {
            return None;
        }
        let mut buffer = vec![0u8; TRANSPORT_HEADER_LEN + plaintext_len + TAG_LEN];
        emit_header(&mut buffer, TYPE_TRANSPORT, receiver_index);
        buffer[field::NONCE].copy_from_slice(&nonce.to_be_bytes());
        Some(Self { buffer })
    }

    /// The ciphertext, to be written.
    pub fn ciphertext_mut(&mut self) -> &mut [u8] {
        &mut self.buffer[field::CIPHERTEXT]
    }

    /// The datagram.
    pub fn into_inner(self) -> Vec<u8> {
        self.buffer
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(INIT_LEN, 116);
        assert_eq!(RESPONSE_LEN, 60);
        assert_eq!(MAX_PLAINTEXT_LEN, 1200);
    }

    #[test]
    fn wireguard_is_not_control() {
        for t in 1u8..=4 {
            assert!(!is_control_packet(&[t, 0, 0, 0]));
            assert_eq!(classify(&[t, 0, 0, 0]), Err(WireError::NotControl(t)));
        }
        assert!(is_control_packet(&[0xC3]));
        assert_eq!(classify(&[]), Err(WireError::Empty));
    }

    #[test]
    fn headers_round_trip() {
        let init = HandshakeInit::with_header(0xDEAD_BEEF).into_inner();
        let view = HandshakeInit::new_checked(&init[..]).expect("valid");
        assert_eq!(view.sender_index(), 0xDEAD_BEEF);
        assert_eq!(view.noise().len(), INIT_NOISE_LEN);

        let resp = HandshakeResponse::with_header(7).into_inner();
        let view = HandshakeResponse::new_checked(&resp[..]).expect("valid");
        assert_eq!(view.receiver_index(), 7);
        assert_eq!(view.noise().len(), RESPONSE_NOISE_LEN);

        let t = Transport::with_header(9, u64::MAX - 1, 5)
            .expect("small")
            .into_inner();
        let view = Transport::new_checked(&t[..]).expect("valid");
        assert_eq!(view.receiver_index(), 9);
        assert_eq!(view.nonce(), u64::MAX - 1);
        assert_eq!(view.ciphertext().len(), 5 + TAG_LEN);
        assert!(Transport::with_header(1, 1, MAX_PLAINTEXT_LEN + 1).is_none());
    }

    #[test]
    fn rejects_bad_fixed_bytes() {
        let mut init = HandshakeInit::with_header(1).into_inner();
        init[1] = 2;
        assert_eq!(
            HandshakeInit::new_checked(&init[..]).err(),
            Some(WireError::UnsupportedVersion(2))
        );
        init[1] = VERSION;
        init[2] = 1;
        assert_eq!(
            HandshakeInit::new_checked(&init[..]).err(),
            Some(WireError::ReservedNotZero)
        );
        init[2] = 0;
        init.push(0);
        assert!(matches!(
            HandshakeInit::new_checked(&init[..]),
            Err(WireError::BadLength { .. })
        ));
        assert!(matches!(
            Transport::new_checked(&init[..]),
            Err(WireError::WrongType {
                expected: PacketKind::Transport,
                found: PacketKind::HandshakeInit
            })
        ));
        let long = vec![TYPE_TRANSPORT; MAX_DATAGRAM_LEN + 1];
        assert!(matches!(
            Transport::new_checked(&long[..]),
            Err(WireError::UnsupportedVersion(_))
        ));
    }

    #[test]
    fn every_short_prefix_is_an_error() {
        let packets = [
            HandshakeInit::with_header(1).into_inner(),
            HandshakeResponse::with_header(1).into_inner(),
            Transport::with_header(1, 1, 0).expect("small").into_inner(),
        ];
        for p in &packets {
            for len in 0..p.len() {
                let b = &p[..len];
                assert!(HandshakeInit::new_checked(b).is_err());
                assert!(HandshakeResponse::new_checked(b).is_err());
                assert!(Transport::new_checked(b).is_err());
            }
        }
    }
}
