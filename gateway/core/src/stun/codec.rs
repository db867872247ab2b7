//! Binding requests and responses on the wire, through the `stun-rs` codec.
//!
//! Only what a STUN *client* needs: encode a Binding request (optionally with RFC 5780's
//! CHANGE-REQUEST), and decode what comes back — a success response with its mapped address
//! (XOR-MAPPED-ADDRESS, or MAPPED-ADDRESS from RFC 3489 servers), OTHER-ADDRESS and
//! RESPONSE-ORIGIN when the server offers RFC 5780, an error response, or a Binding request (our
//! own, come back through a hairpinning NAT). No credentials: public STUN servers take none.

use std::net::SocketAddr;

use stun_rs::attributes::discovery::ResponseOrigin;
use stun_rs::attributes::discovery::{ChangeRequest, ChangeRequestFlags, OtherAddress};
use stun_rs::attributes::stun::{ErrorCode, MappedAddress, XorMappedAddress};
use stun_rs::methods::BINDING;
use stun_rs::{
    MessageClass, MessageDecoderBuilder, MessageEncoderBuilder, StunMessage, StunMessageBuilder,
    TransactionId as RawTransactionId,
};

/// The fixed value in bytes 4..8 of every RFC 5389/8489 message.
pub const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xa4, 0x42];

/// The size of a STUN message header.
pub const HEADER_LEN: usize = 20;

/// The largest Binding request we encode: header, CHANGE-REQUEST (8 bytes), some slack.
const MAX_REQUEST_LEN: usize = 64;

/// A 96-bit STUN transaction ID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TransactionId(pub [u8; 12]);

impl std::fmt::Display for TransactionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// What to ask the server to change when it answers (RFC 5780 §7.2, CHANGE-REQUEST).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Change {
    /// Answer from the alternate IP address.
    pub ip: bool,
    /// Answer from the alternate port.
    pub port: bool,
}

impl Change {
    /// No change: a plain Binding request.
    pub const NONE: Change = Change {
        ip: false,
        port: false,
    };
    /// Answer from the other IP and the other port (filtering test II).
    pub const IP_AND_PORT: Change = Change {
        ip: true,
        port: true,
    };
    /// Answer from the same IP but the other port (filtering test III).
    pub const PORT: Change = Change {
        ip: false,
        port: true,
    };

    fn is_none(self) -> bool {
        !self.ip && !self.port
    }
}

/// A decoded message that matters to a STUN client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A Binding success response.
    Success {
        /// The transaction it answers.
        id: TransactionId,
        /// Where the server saw the request come from: our public endpoint as seen by it.
        mapped: SocketAddr,
        /// RFC 5780 OTHER-ADDRESS: the server's alternate IP and port, when it has one.
        other_address: Option<SocketAddr>,
        /// RFC 5780 RESPONSE-ORIGIN: the address the response was sent from.
        response_origin: Option<SocketAddr>,
    },
    /// A Binding error response, e.g. 420 when the server does not know CHANGE-REQUEST.
    Error {
        /// The transaction it answers.
        id: TransactionId,
        /// The error code, 300..=699 (0 when the response carried none).
        code: u16,
        /// The server's reason phrase.
        reason: String,
    },
    /// A Binding request (we see our own when a NAT hairpins it back to us).
    Request {
        /// Its transaction ID.
        id: TransactionId,
    },
}

/// Why bytes are not a usable STUN message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Too short for a header, wrong leading bits or no magic cookie: not STUN at all.
    #[error("not a STUN message")]
    NotStun,
    /// The codec refused the message (bad length, attribute, padding, ...).
    #[error("malformed STUN message: {0}")]
    Malformed(String),
    /// A well-formed message that is not a Binding request or response (indication, other
    /// method).
    #[error("not a Binding request or response")]
    Unexpected,
    /// A success response without (XOR-)MAPPED-ADDRESS.
    #[error("Binding success response without a mapped address")]
    NoMappedAddress,
}

/// A cheap first look: could these bytes be a STUN message (RFC 8489 §5: two zero bits, a length
/// that is a multiple of 4 and matches, and the magic cookie)? Lets a socket shared with
/// WireGuard tell the two apart before decoding.
pub fn is_stun(bytes: &[u8]) -> bool {
    if bytes.len() < HEADER_LEN || bytes[0] & 0xc0 != 0 || bytes[4..8] != MAGIC_COOKIE {
        return false;
    }
    let len = usize::from(u16::from_be_bytes([bytes[2], bytes[3]]));
    len % 4 == 0 && len + HEADER_LEN == bytes.len()
}

/// Encodes a Binding request with transaction `id`, asking the server for `change`.
pub fn encode_request(id: TransactionId, change: Change) -> Vec<u8> {
    let mut builder = StunMessageBuilder::new(BINDING, MessageClass::Request)
        .with_transaction_id(RawTransactionId::from(id.0));
    if !change.is_none() {
        let mut flags = None;
        if change.ip {
            flags = Some(ChangeRequestFlags::ChangeIp.into());
        }
        if change.port {
            flags = Some(match flags {
                Some(f) => f | ChangeRequestFlags::ChangePort,
                None => ChangeRequestFlags::ChangePort.into(),
            });
        }
        builder = builder.with_attribute(ChangeRequest::new(flags));
    }
    let msg = builder.build();
    let mut buf = [0u8; MAX_REQUEST_LEN];
    match MessageEncoderBuilder::default()
        .build()
        .encode(&mut buf, &msg)
    {
        Ok(n) => buf[..n].to_vec(),
        // The request is fixed and small; the codec cannot refuse it. Fall back to the header
        // alone (a valid Binding request without attributes) rather than panic.
        Err(e) => {
            tracing::error!(error = %e, "stun: encoding a Binding request failed");
            let mut header = vec![0x00, 0x01, 0x00, 0x00];
            header.extend_from_slice(&MAGIC_COOKIE);
            header.extend_from_slice(&id.0);
            header
        }
    }
}

/// Decodes a Binding response or request.
pub fn decode(bytes: &[u8]) -> Result<Message, DecodeError> {
    if !is_stun(bytes) {
        return Err(DecodeError::NotStun);
    }
    let decoder = MessageDecoderBuilder::default().build();
    let (msg, _) = decoder
        .decode(bytes)
        .map_err(|e| DecodeError::Malformed(e.to_string()))?;
    if msg.method() != BINDING {
        return Err(DecodeError::Unexpected);
    }
    let id = TransactionId(*msg.transaction_id().as_bytes());
    match msg.class() {
        MessageClass::Request => Ok(Message::Request { id }),
        MessageClass::SuccessResponse => {
            let mapped = mapped_address(&msg).ok_or(DecodeError::NoMappedAddress)?;
            let other_address = msg
                .get::<OtherAddress>()
                .and_then(|a| a.as_other_address().ok())
                .map(|a| *a.socket_address());
            let response_origin = msg
                .get::<ResponseOrigin>()
                .and_then(|a| a.as_response_origin().ok())
                .map(|a| *a.socket_address());
            Ok(Message::Success {
                id,
                mapped,
                other_address,
                response_origin,
            })
        }
        MessageClass::ErrorResponse => {
            let (code, reason) = msg
                .get::<ErrorCode>()
                .and_then(|a| a.as_error_code().ok())
                .map(|e| {
                    let e = e.error_code();
                    (e.error_code(), e.reason().to_owned())
                })
                .unwrap_or((0, String::new()));
            Ok(Message::Error { id, code, reason })
        }
        MessageClass::Indication => Err(DecodeError::Unexpected),
    }
}

/// XOR-MAPPED-ADDRESS, or MAPPED-ADDRESS from an RFC 3489 server.
fn mapped_address(msg: &StunMessage) -> Option<SocketAddr> {
    if let Some(a) = msg
        .get::<XorMappedAddress>()
        .and_then(|a| a.as_xor_mapped_address().ok())
    {
        return Some(*a.socket_address());
    }
    msg.get::<MappedAddress>()
        .and_then(|a| a.as_mapped_address().ok())
        .map(|a| *a.socket_address())
}

/// Encodes responses and reads requests as a server would: for tests, fuzz seeds and test
/// servers, not for the client path.
pub mod server {
    use super::*;

    /// A Binding success response for `id` carrying `mapped`, and OTHER-ADDRESS when given.
    pub fn success(id: TransactionId, mapped: SocketAddr, other: Option<SocketAddr>) -> Vec<u8> {
        let mut builder = StunMessageBuilder::new(BINDING, MessageClass::SuccessResponse)
            .with_transaction_id(RawTransactionId::from(id.0))
            .with_attribute(XorMappedAddress::from(mapped));
        if let Some(other) = other {
            builder = builder.with_attribute(OtherAddress::from(other));
        }
        encode(&builder.build())
    }

    /// A Binding error response for `id`.
    pub fn error(id: TransactionId, code: u16, reason: &str) -> Vec<u8> {
        let builder = StunMessageBuilder::new(BINDING, MessageClass::ErrorResponse)
            .with_transaction_id(RawTransactionId::from(id.0));
        let builder = match stun_rs::ErrorCode::new(code, reason) {
            Ok(e) => builder.with_attribute(ErrorCode::from(e)),
            Err(_) => builder,
        };
        encode(&builder.build())
    }

    fn encode(msg: &StunMessage) -> Vec<u8> {
        let mut buf = [0u8; 256];
        let n = MessageEncoderBuilder::default()
            .build()
            .encode(&mut buf, msg)
            .unwrap_or(0);
        buf[..n].to_vec()
    }

    /// The transaction ID and CHANGE-REQUEST of a request we encoded.
    pub fn parse_request(bytes: &[u8]) -> Option<(TransactionId, Change)> {
        let (msg, _) = MessageDecoderBuilder::default()
            .build()
            .decode(bytes)
            .ok()?;
        if msg.method() != BINDING || msg.class() != MessageClass::Request {
            return None;
        }
        let change = msg
            .get::<ChangeRequest>()
            .and_then(|a| a.as_change_request().ok())
            .map(|c| Change {
                ip: c.flags().contains(ChangeRequestFlags::ChangeIp),
                port: c.flags().contains(ChangeRequestFlags::ChangePort),
            })
            .unwrap_or_default();
        Some((TransactionId(*msg.transaction_id().as_bytes()), change))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: TransactionId = TransactionId([7; 12]);

    #[test]
    fn request_round_trip() {
        for change in [Change::NONE, Change::PORT, Change::IP_AND_PORT] {
            let bytes = encode_request(ID, change);
            assert!(is_stun(&bytes), "{bytes:02x?}");
            assert_eq!(&bytes[..2], &[0x00, 0x01], "Binding request type");
            assert_eq!(server::parse_request(&bytes), Some((ID, change)));
            assert_eq!(decode(&bytes), Ok(Message::Request { id: ID }));
        }
        assert_eq!(encode_request(ID, Change::NONE).len(), HEADER_LEN);
    }

    #[test]
    fn success_response() {
        let mapped: SocketAddr = "203.0.113.7:40000".parse().expect("addr");
        let other: SocketAddr = "198.51.100.11:3479".parse().expect("addr");
        let bytes = server::success(ID, mapped, Some(other));
        assert_eq!(
            decode(&bytes),
            Ok(Message::Success {
                id: ID,
                mapped,
                other_address: Some(other),
                response_origin: None,
            })
        );
        let v6: SocketAddr = "[2001:db8::7]:40000".parse().expect("addr");
        let bytes = server::success(ID, v6, None);
        assert!(matches!(decode(&bytes), Ok(Message::Success { mapped, .. }) if mapped == v6));
    }

    /// RFC 5769 §2.2: a sample IPv4 response (the integrity and fingerprint are not checked: we
    /// send no credentials).
    #[test]
    fn rfc5769_ipv4_response() {
        let bytes: [u8; 80] = [
            0x01, 0x01, 0x00, 0x3c, 0x21, 0x12, 0xa4, 0x42, 0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34,
            0xd6, 0x86, 0xfa, 0x87, 0xdf, 0xae, 0x80, 0x22, 0x00, 0x0b, 0x74, 0x65, 0x73, 0x74,
            0x20, 0x76, 0x65, 0x63, 0x74, 0x6f, 0x72, 0x20, 0x00, 0x20, 0x00, 0x08, 0x00, 0x01,
            0xa1, 0x47, 0xe1, 0x12, 0xa6, 0x43, 0x00, 0x08, 0x00, 0x14, 0x2b, 0x91, 0xf5, 0x99,
            0xfd, 0x9e, 0x90, 0xc3, 0x8c, 0x74, 0x89, 0xf9, 0x2a, 0xf9, 0xba, 0x53, 0xf0, 0x6b,
            0xe7, 0xd7, 0x80, 0x28, 0x00, 0x04, 0xc0, 0x7d, 0x4c, 0x96,
        ];
        match decode(&bytes) {
            Ok(Message::Success { mapped, .. }) => {
                assert_eq!(
                    mapped,
                    "192.0.2.1:32853".parse::<SocketAddr>().expect("addr")
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn error_response() {
        let bytes = server::error(ID, 420, "Unknown Attribute");
        assert_eq!(
            decode(&bytes),
            Ok(Message::Error {
                id: ID,
                code: 420,
                reason: "Unknown Attribute".to_owned()
            })
        );
    }

    #[test]
    fn not_stun() {
        // A WireGuard handshake initiation starts 01 00 00 00 and has no magic cookie.
        let mut wg = vec![1u8, 0, 0, 0];
        wg.extend_from_slice(&[0x55; 144]);
        assert!(!is_stun(&wg));
        assert_eq!(decode(&wg), Err(DecodeError::NotStun));
        assert_eq!(decode(&[]), Err(DecodeError::NotStun));
        // Right header, length pointing past the end.
        let mut short = encode_request(ID, Change::NONE);
        short[3] = 8;
        assert_eq!(decode(&short), Err(DecodeError::NotStun));
    }

    #[test]
    fn success_without_address() {
        let msg = StunMessageBuilder::new(BINDING, MessageClass::SuccessResponse)
            .with_transaction_id(RawTransactionId::from(ID.0))
            .build();
        let mut buf = [0u8; 64];
        let n = MessageEncoderBuilder::default()
            .build()
            .encode(&mut buf, &msg)
            .expect("encode");
        assert_eq!(decode(&buf[..n]), Err(DecodeError::NoMappedAddress));
    }
}
