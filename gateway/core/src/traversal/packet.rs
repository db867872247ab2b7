//! Traversal packets on the gateway's shared UDP port: probes, probe acks, rendezvous and relay.
//!
//! Every packet is authenticated and encrypted with a key both ends derive from their static
//! x25519 keys (the WireGuard keys): `BLAKE2s("sitelink traversal v1" ‖ DH(ours, theirs) ‖
//! lower key ‖ higher key)`, XChaCha20-Poly1305 with a random 24-byte nonce. Only configured
//! peers have a key, so nothing from an unknown key is decrypted or answered.
//!
//! ```text
//!  0  type (0xC4..=0xC9)   1  version (1)   2..4 reserved (0)
//!  4..36   sender's static public key       (associated data: bytes 0..36)
//! 36..60   nonce
//! 60..     ciphertext of: seq (8, big-endian) ‖ body, then the 16-byte tag
//! ```
//!
//! `seq` grows strictly per sender (it starts at the sender's wall clock in nanoseconds, so a
//! restart continues above the old values) and the receiver keeps a sliding replay window per
//! sender key: a recorded packet is refused when it comes again. See
//! `docs/control-protocol.md` §9 for the byte tables.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use blake2::{Blake2s256, Digest};
use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

use crate::control::message::{Candidate, CandidateKind};
use crate::keys::PublicKey;

/// The protocol version carried in byte 1.
pub const VERSION: u8 = 1;
/// A hole-punching probe (peer to peer).
pub const TYPE_PROBE: u8 = 0xC4;
/// The answer to a probe, sent to the probe's source.
pub const TYPE_PROBE_ACK: u8 = 0xC5;
/// A peer's candidates, sent to its rendezvous gateway, asking for another peer's.
pub const TYPE_REGISTER: u8 = 0xC6;
/// A peer's candidates, from the rendezvous gateway.
pub const TYPE_PEER_CANDIDATES: u8 = 0xC7;
/// A WireGuard datagram for the rendezvous gateway to relay to another peer.
pub const TYPE_RELAY_TO: u8 = 0xC8;
/// A WireGuard datagram relayed by the rendezvous gateway from another peer.
pub const TYPE_RELAY_FROM: u8 = 0xC9;

/// Length of the cleartext header (type, version, reserved, sender key, nonce).
pub const HEADER_LEN: usize = 60;
/// Length of the AEAD tag.
pub const TAG_LEN: usize = 16;
/// Length of the sequence number at the start of the plaintext.
const SEQ_LEN: usize = 8;
/// Bytes a traversal packet adds around its body.
pub const OVERHEAD: usize = HEADER_LEN + SEQ_LEN + TAG_LEN;
/// Most candidates a packet carries.
pub const MAX_CANDIDATES: usize = 16;
/// Largest traversal datagram accepted (a relayed WireGuard datagram of a 9000-byte MTU, plus
/// headers).
pub const MAX_DATAGRAM_LEN: usize = 9216;

/// Byte ranges of the header.
mod field {
    use std::ops::Range;

    pub(super) const TYPE: usize = 0;
    pub(super) const VERSION: usize = 1;
    pub(super) const RESERVED: Range<usize> = 2..4;
    pub(super) const SENDER: Range<usize> = 4..36;
    pub(super) const NONCE: Range<usize> = 36..60;
    /// What the AEAD authenticates without encrypting.
    pub(super) const AD: Range<usize> = 0..36;
}

/// Whether a datagram on the shared port is a traversal packet (first byte `0xC4..=0xC9`).
pub fn is_traversal_packet(bytes: &[u8]) -> bool {
    matches!(bytes.first(), Some(TYPE_PROBE..=TYPE_RELAY_FROM))
}

/// A traversal message, decrypted. The relay variants borrow the WireGuard datagram (from the
/// caller when sealing, from the decryption buffer when opened), so relaying copies no datagram
/// into a `Vec` of its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body<'a> {
    /// "Can you hear me?" — `txid` is echoed in the ack.
    Probe {
        /// Random per probe.
        txid: u64,
    },
    /// "I heard your probe `txid`."
    ProbeAck {
        /// The probe's txid.
        txid: u64,
    },
    /// "Here are my candidates; tell me `peer`'s and tell `peer` mine."
    Register {
        /// The peer the sender wants to reach.
        peer: PublicKey,
        /// The sender's own candidates (the rendezvous adds the address it sees).
        candidates: Vec<Candidate>,
    },
    /// "`peer` can be reached at these candidates" (empty while `peer` has not registered).
    PeerCandidates {
        /// Whose candidates these are.
        peer: PublicKey,
        /// Its candidates, the reflexive one first.
        candidates: Vec<Candidate>,
    },
    /// "Relay this WireGuard datagram to `peer`."
    RelayTo {
        /// The destination peer.
        peer: PublicKey,
        /// The datagram, still encrypted by WireGuard.
        datagram: &'a [u8],
    },
    /// "`peer` sent you this WireGuard datagram through me."
    RelayFrom {
        /// The peer that sent it.
        peer: PublicKey,
        /// The datagram.
        datagram: &'a [u8],
    },
}

impl<'a> Body<'a> {
    /// The packet type byte.
    pub fn type_code(&self) -> u8 {
        match self {
            Body::Probe { .. } => TYPE_PROBE,
            Body::ProbeAck { .. } => TYPE_PROBE_ACK,
            Body::Register { .. } => TYPE_REGISTER,
            Body::PeerCandidates { .. } => TYPE_PEER_CANDIDATES,
            Body::RelayTo { .. } => TYPE_RELAY_TO,
            Body::RelayFrom { .. } => TYPE_RELAY_FROM,
        }
    }

    /// How many bytes [`Self::encode`] writes.
    fn encoded_len(&self) -> usize {
        match self {
            Body::Probe { .. } | Body::ProbeAck { .. } => 8,
            Body::Register { candidates, .. } | Body::PeerCandidates { candidates, .. } => {
                32 + candidates
                    .iter()
                    .take(MAX_CANDIDATES)
                    .map(|c| if c.addr.is_ipv4() { 4 + 4 } else { 4 + 16 })
                    .sum::<usize>()
            }
            Body::RelayTo { datagram, .. } | Body::RelayFrom { datagram, .. } => {
                32 + datagram.len()
            }
        }
    }

    /// Appends the body's plaintext encoding (what follows the sequence number) to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Body::Probe { txid } | Body::ProbeAck { txid } => {
                out.extend_from_slice(&txid.to_be_bytes())
            }
            Body::Register { peer, candidates } | Body::PeerCandidates { peer, candidates } => {
                out.extend_from_slice(peer.as_bytes());
                for c in candidates.iter().take(MAX_CANDIDATES) {
                    out.push(c.kind.code());
                    out.extend_from_slice(&c.addr.port().to_be_bytes());
                    match c.addr.ip() {
                        IpAddr::V4(ip) => {
                            out.push(4);
                            out.extend_from_slice(&ip.octets());
                        }
                        IpAddr::V6(ip) => {
                            out.push(6);
                            out.extend_from_slice(&ip.octets());
                        }
                    }
                }
            }
            Body::RelayTo { peer, datagram } | Body::RelayFrom { peer, datagram } => {
                out.extend_from_slice(peer.as_bytes());
                out.extend_from_slice(datagram);
            }
        }
    }

    /// Decodes the body of a packet of `packet_type` from its plaintext (what follows the
    /// sequence number).
    pub fn decode(packet_type: u8, b: &'a [u8]) -> Result<Self, PacketError> {
        let txid = || -> Result<u64, PacketError> {
            let bytes: [u8; 8] = b.try_into().map_err(|_| PacketError::BadBody)?;
            Ok(u64::from_be_bytes(bytes))
        };
        let key = || -> Result<(PublicKey, &'a [u8]), PacketError> {
            let (k, rest) = b.split_first_chunk::<32>().ok_or(PacketError::BadBody)?;
            Ok((PublicKey::from_bytes(*k), rest))
        };
        Ok(match packet_type {
            TYPE_PROBE => Body::Probe { txid: txid()? },
            TYPE_PROBE_ACK => Body::ProbeAck { txid: txid()? },
            TYPE_REGISTER | TYPE_PEER_CANDIDATES => {
                let (peer, rest) = key()?;
                let candidates = parse_candidates(rest)?;
                if packet_type == TYPE_REGISTER {
                    Body::Register { peer, candidates }
                } else {
                    Body::PeerCandidates { peer, candidates }
                }
            }
            TYPE_RELAY_TO | TYPE_RELAY_FROM => {
                let (peer, datagram) = key()?;
                if packet_type == TYPE_RELAY_TO {
                    Body::RelayTo { peer, datagram }
                } else {
                    Body::RelayFrom { peer, datagram }
                }
            }
            other => return Err(PacketError::UnknownType(other)),
        })
    }
}

fn parse_candidates(mut b: &[u8]) -> Result<Vec<Candidate>, PacketError> {
    let mut out = Vec::new();
    while !b.is_empty() {
        let (head, rest) = b.split_first_chunk::<4>().ok_or(PacketError::BadBody)?;
        let kind = CandidateKind::from_code(head[0]);
        let port = u16::from_be_bytes([head[1], head[2]]);
        let (ip, rest) = match head[3] {
            4 => {
                let (ip, rest) = rest.split_first_chunk::<4>().ok_or(PacketError::BadBody)?;
                (IpAddr::V4(Ipv4Addr::from(*ip)), rest)
            }
            6 => {
                let (ip, rest) = rest.split_first_chunk::<16>().ok_or(PacketError::BadBody)?;
                (IpAddr::V6(Ipv6Addr::from(*ip)), rest)
            }
            _ => return Err(PacketError::BadBody),
        };
        if out.len() == MAX_CANDIDATES {
            return Err(PacketError::BadBody);
        }
        out.push(Candidate {
            kind,
            addr: SocketAddr::new(ip, port),
        });
        b = rest;
    }
    Ok(out)
}

/// Why a datagram is not an acceptable traversal packet. None of them is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    /// Shorter than a header and tag, longer than [`MAX_DATAGRAM_LEN`], bad version or reserved
    /// bytes.
    #[error("malformed traversal packet")]
    Malformed,
    /// The type byte is in the control range but not a traversal type.
    #[error("unknown traversal packet type {0:#04x}")]
    UnknownType(u8),
    /// The sender's key is not a configured peer.
    #[error("traversal packet from unknown key {0}")]
    UnknownKey(PublicKey),
    /// The tag did not verify (tampered, or the sender has another key than it claims).
    #[error("traversal packet failed authentication")]
    Auth,
    /// The sequence number was seen before or is too old.
    #[error("replayed traversal packet")]
    Replayed,
    /// The decrypted body does not decode.
    #[error("traversal packet with a bad body")]
    BadBody,
}

/// A verified packet's header fields that the receiver needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The packet type.
    pub packet_type: u8,
    /// The sender's static key (authenticated only once the packet opened).
    pub sender: PublicKey,
}

/// Reads the cleartext header: type and claimed sender. Checks the fixed bytes and length.
pub fn peek(bytes: &[u8]) -> Result<Header, PacketError> {
    if bytes.len() < OVERHEAD || bytes.len() > MAX_DATAGRAM_LEN {
        return Err(PacketError::Malformed);
    }
    let packet_type = bytes[field::TYPE];
    if !is_traversal_packet(bytes) {
        return Err(PacketError::UnknownType(packet_type));
    }
    if bytes[field::VERSION] != VERSION || bytes[field::RESERVED] != [0, 0] {
        return Err(PacketError::Malformed);
    }
    let mut sender = [0u8; 32];
    sender.copy_from_slice(&bytes[field::SENDER]);
    Ok(Header {
        packet_type,
        sender: PublicKey::from_bytes(sender),
    })
}

/// The symmetric key two gateways share for traversal packets.
#[derive(Clone)]
pub struct PairKey(XChaCha20Poly1305);

impl std::fmt::Debug for PairKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PairKey(..)")
    }
}

impl PairKey {
    /// Derives the key between `ours` (secret) and `theirs`; the same on both sides.
    pub fn derive(
        ours: &x25519_dalek::StaticSecret,
        our_public: &PublicKey,
        theirs: &PublicKey,
    ) -> Self {
        let shared = ours.diffie_hellman(&theirs.to_dalek());
        let (lo, hi) = if our_public.as_bytes() <= theirs.as_bytes() {
            (our_public, theirs)
        } else {
            (theirs, our_public)
        };
        let mut h = Blake2s256::new();
        h.update(b"sitelink traversal v1");
        h.update(shared.as_bytes());
        h.update(lo.as_bytes());
        h.update(hi.as_bytes());
        let key = h.finalize();
        Self(XChaCha20Poly1305::new(&key))
    }

    /// Seals `body` from `sender` with sequence number `seq` and the 24-byte `nonce`, into a new
    /// `Vec`. See [`Self::seal_into`] to reuse a buffer.
    pub fn seal(&self, sender: &PublicKey, seq: u64, nonce: [u8; 24], body: &Body<'_>) -> Vec<u8> {
        let mut out = Vec::new();
        self.seal_into(sender, seq, nonce, body, &mut out);
        out
    }

    /// Seals `body` like [`Self::seal`], replacing what `out` held. Allocates only when `out`
    /// has less capacity than the packet needs.
    pub fn seal_into(
        &self,
        sender: &PublicKey,
        seq: u64,
        nonce: [u8; 24],
        body: &Body<'_>,
        out: &mut Vec<u8>,
    ) {
        out.clear();
        out.reserve(OVERHEAD + body.encoded_len());
        out.push(body.type_code());
        out.push(VERSION);
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(sender.as_bytes());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&seq.to_be_bytes());
        body.encode(out);
        let (head, plaintext) = out.split_at_mut(HEADER_LEN);
        // Encryption fails only for plaintexts beyond 2^38 bytes.
        let tag = self
            .0
            .encrypt_in_place_detached(XNonce::from_slice(&nonce), &head[field::AD], plaintext)
            .unwrap_or_default();
        out.extend_from_slice(&tag);
    }

    /// Opens a packet whose header [`peek`] read: returns the sequence number and the body.
    ///
    /// The plaintext is decrypted into `scratch` (its old contents are replaced) and the body
    /// borrows it. Pass the same buffer every time: once it has grown to the largest packet,
    /// opening allocates nothing but a `Register`'s or `PeerCandidates`' candidate list.
    pub fn open<'s>(
        &self,
        bytes: &[u8],
        scratch: &'s mut Vec<u8>,
    ) -> Result<(u64, Body<'s>), PacketError> {
        let header = peek(bytes)?;
        let (head, rest) = bytes.split_at(HEADER_LEN);
        let (ciphertext, tag) = rest.split_at(rest.len() - TAG_LEN);
        scratch.clear();
        scratch.extend_from_slice(ciphertext);
        self.0
            .decrypt_in_place_detached(
                XNonce::from_slice(&head[field::NONCE]),
                &head[field::AD],
                scratch.as_mut_slice(),
                tag.into(),
            )
            .map_err(|_| PacketError::Auth)?;
        let (seq, body) = scratch
            .split_first_chunk::<SEQ_LEN>()
            .ok_or(PacketError::Malformed)?;
        let seq = u64::from_be_bytes(*seq);
        Ok((seq, Body::decode(header.packet_type, body)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::PrivateKey;

    fn pair() -> (PrivateKey, PrivateKey) {
        (
            PrivateKey::from_bytes([1; 32]),
            PrivateKey::from_bytes([2; 32]),
        )
    }

    #[test]
    fn both_sides_derive_the_same_key_and_round_trip() {
        let (a, b) = pair();
        let ka = PairKey::derive(&a.to_static_secret(), &a.public_key(), &b.public_key());
        let kb = PairKey::derive(&b.to_static_secret(), &b.public_key(), &a.public_key());
        let bodies = [
            Body::Probe { txid: 7 },
            Body::ProbeAck { txid: u64::MAX },
            Body::Register {
                peer: b.public_key(),
                candidates: vec![
                    Candidate {
                        kind: CandidateKind::Host,
                        addr: "192.168.1.2:51820"
                            .parse()
                            .unwrap_or_else(|_| unreachable!()),
                    },
                    Candidate {
                        kind: CandidateKind::Mapped,
                        addr: "[2001:db8::1]:4000"
                            .parse()
                            .unwrap_or_else(|_| unreachable!()),
                    },
                ],
            },
            Body::PeerCandidates {
                peer: a.public_key(),
                candidates: vec![],
            },
            Body::RelayTo {
                peer: b.public_key(),
                datagram: &[4, 0, 0, 0, 1, 2, 3],
            },
            Body::RelayFrom {
                peer: a.public_key(),
                datagram: &[],
            },
        ];
        for (i, body) in bodies.iter().enumerate() {
            let bytes = ka.seal(&a.public_key(), 100 + i as u64, [i as u8; 24], body);
            assert!(is_traversal_packet(&bytes));
            let h = peek(&bytes).expect("header");
            assert_eq!(h.sender, a.public_key());
            assert_eq!(h.packet_type, body.type_code());
            let mut scratch = Vec::new();
            assert_eq!(
                kb.open(&bytes, &mut scratch),
                Ok((100 + i as u64, body.clone()))
            );
        }
    }

    /// The relay packets are exactly the documented layout (the module docs), whether sealed
    /// into a new `Vec` or into a buffer that held a longer packet before: older and newer
    /// gateways interoperate.
    #[test]
    fn relay_packets_match_the_documented_layout() {
        let (a, b) = pair();
        let ka = PairKey::derive(&a.to_static_secret(), &a.public_key(), &b.public_key());
        let datagram: Vec<u8> = (0..148u8).collect();
        let (seq, nonce) = (0x0102_0304_0506_0708u64, [0x5a; 24]);
        for (type_code, body) in [
            (
                TYPE_RELAY_TO,
                Body::RelayTo {
                    peer: b.public_key(),
                    datagram: &datagram,
                },
            ),
            (
                TYPE_RELAY_FROM,
                Body::RelayFrom {
                    peer: b.public_key(),
                    datagram: &datagram,
                },
            ),
        ] {
            let mut expected = vec![type_code, VERSION, 0, 0];
            expected.extend_from_slice(a.public_key().as_bytes());
            expected.extend_from_slice(&nonce);
            let mut plaintext = seq.to_be_bytes().to_vec();
            plaintext.extend_from_slice(b.public_key().as_bytes());
            plaintext.extend_from_slice(&datagram);
            let tag =
                ka.0.encrypt_in_place_detached(
                    XNonce::from_slice(&nonce),
                    &expected[..36],
                    &mut plaintext,
                )
                .expect("encrypts");
            expected.extend_from_slice(&plaintext);
            expected.extend_from_slice(&tag);

            assert_eq!(ka.seal(&a.public_key(), seq, nonce, &body), expected);
            let mut reused = vec![0xee; 4000];
            ka.seal_into(&a.public_key(), seq, nonce, &body, &mut reused);
            assert_eq!(reused, expected);
        }
    }

    #[test]
    fn tampering_anywhere_fails() {
        let (a, b) = pair();
        let ka = PairKey::derive(&a.to_static_secret(), &a.public_key(), &b.public_key());
        let bytes = ka.seal(&a.public_key(), 1, [9; 24], &Body::Probe { txid: 3 });
        let mut scratch = Vec::new();
        for i in 0..bytes.len() {
            let mut t = bytes.clone();
            t[i] ^= 0x01;
            assert!(
                ka.open(&t, &mut scratch).is_err(),
                "flip at byte {i} accepted"
            );
        }
        assert_eq!(
            ka.open(&bytes[..bytes.len() - 1], &mut scratch),
            Err(PacketError::Auth)
        );
        assert_eq!(
            ka.open(&bytes[..OVERHEAD - 1], &mut scratch),
            Err(PacketError::Malformed)
        );
    }

    #[test]
    fn a_third_key_cannot_forge() {
        let (a, b) = pair();
        let c = PrivateKey::from_bytes([3; 32]);
        // C claims to be A but only has its own DH with B.
        let kc = PairKey::derive(&c.to_static_secret(), &c.public_key(), &b.public_key());
        let kb = PairKey::derive(&b.to_static_secret(), &b.public_key(), &a.public_key());
        let forged = kc.seal(&a.public_key(), 1, [0; 24], &Body::Probe { txid: 1 });
        assert_eq!(kb.open(&forged, &mut Vec::new()), Err(PacketError::Auth));
    }

    #[test]
    fn garbage_never_panics() {
        let (a, b) = pair();
        let ka = PairKey::derive(&a.to_static_secret(), &a.public_key(), &b.public_key());
        for len in 0..200 {
            let mut bytes = vec![0xC6u8; len];
            if len > 1 {
                bytes[1] = VERSION;
            }
            let _ = peek(&bytes);
            let _ = ka.open(&bytes, &mut Vec::new());
        }
    }
}
