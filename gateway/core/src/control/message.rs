//! Control messages: the plaintext inside a transport packet.
//!
//! ```text
//!  0      message type (Discover = 1 … PeerEndpoints = 10)
//!  1..5   transaction id (big-endian u32), echoed by the answer
//!  5..    options: code (u8), length (u8), value; repeated until the end
//! ```
//!
//! Options are DHCP-style: a decoder skips codes it does not know (so a later version can add
//! options without breaking older peers) but refuses a known option with a bad length or value,
//! a single-valued option given twice, and a message missing a required option. Which options
//! each message carries is in `docs/control-protocol.md`.
//!
//! [`MessagePacket`] is the typed view (length checks, header fields, an option iterator that
//! cannot read out of bounds); [`Message`] is the parsed form with [`Message::parse`] and
//! [`Message::emit`].

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use ipnet::IpNet;

use super::wire::MAX_PLAINTEXT_LEN;
use crate::keys::{PublicKey, KEY_LEN};
use crate::lease::{LeaseInfo, Refusal};

/// Length of the message header (type and transaction id).
pub const HEADER_LEN: usize = 5;
/// Most routes an Ack carries.
pub const MAX_ROUTES: usize = 64;
/// Most DNS servers an Ack carries.
pub const MAX_DNS_SERVERS: usize = 8;
/// Most endpoint candidates a message carries.
pub const MAX_CANDIDATES: usize = 16;

/// Byte ranges of the header.
mod field {
    use std::ops::{Range, RangeFrom};

    pub(super) const TYPE: usize = 0;
    pub(super) const XID: Range<usize> = 1..5;
    pub(super) const OPTIONS: RangeFrom<usize> = 5..;
}

/// Option codes.
pub mod option {
    /// The address a client would like (Discover): 4 bytes.
    pub const REQUESTED_ADDRESS: u8 = 1;
    /// The address offered, requested, acknowledged, renewed or released: 4 bytes.
    pub const ADDRESS: u8 = 2;
    /// Prefix length of the client's interface address: 1 byte, at most 32.
    pub const PREFIX_LEN: u8 = 3;
    /// Lease time in seconds: 4 bytes.
    pub const LEASE_TIME: u8 = 4;
    /// T1, seconds after which the client renews: 4 bytes.
    pub const RENEW_AFTER: u8 = 5;
    /// T2, seconds after which the client rebinds: 4 bytes.
    pub const REBIND_AFTER: u8 = 6;
    /// A pushed route, repeated: prefix length (1 byte) then an IPv4 (4) or IPv6 (16) address.
    pub const ROUTE: u8 = 7;
    /// A DNS server, repeated: an IPv4 (4 bytes) or IPv6 (16 bytes) address.
    pub const DNS_SERVER: u8 = 8;
    /// Why a request was refused: 1 byte ([`super::NakReason`]).
    pub const NAK_REASON: u8 = 9;
    /// An endpoint candidate, repeated: kind (1 byte), port (2), IPv4 (4) or IPv6 (16) address.
    pub const CANDIDATE: u8 = 10;
    /// A peer's public key: 32 bytes.
    pub const PEER_KEY: u8 = 11;
}

/// Why bytes are not a valid control message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    /// Shorter than the 5-byte header.
    #[error("message of {0} bytes is shorter than its header")]
    Truncated(usize),
    /// Longer than a transport packet can carry ([`MAX_PLAINTEXT_LEN`]).
    #[error("message of {0} bytes is longer than {MAX_PLAINTEXT_LEN}")]
    TooLong(usize),
    /// The message type is not one of this version's.
    #[error("unknown message type {0}")]
    UnknownType(u8),
    /// An option's header or value runs past the end of the message.
    #[error("option {code} runs past the end of the message")]
    TruncatedOption {
        /// The option's code.
        code: u8,
    },
    /// A known option has a length its kind never has.
    #[error("option {code} has a bad length {len}")]
    BadOptionLength {
        /// The option's code.
        code: u8,
        /// The length it claims.
        len: usize,
    },
    /// A known option's value is invalid (a prefix length over 32, an unknown address family).
    #[error("option {code} has an invalid value")]
    BadOptionValue {
        /// The option's code.
        code: u8,
    },
    /// A single-valued option appears twice.
    #[error("option {code} appears more than once")]
    DuplicateOption {
        /// The option's code.
        code: u8,
    },
    /// A repeated option appears more often than allowed.
    #[error("option {code} appears more than {max} times")]
    TooManyOptions {
        /// The option's code.
        code: u8,
        /// The most allowed.
        max: usize,
    },
    /// An option the message type requires is absent.
    #[error("message type {message} lacks option {code}")]
    MissingOption {
        /// The message type.
        message: u8,
        /// The missing option's code.
        code: u8,
    },
    /// The lease times are not ordered `0 < T1 <= T2 <= lease time`.
    #[error("lease times are not 0 < T1 <= T2 <= lease time")]
    BadLeaseTimes,
}

/// Why the gateway refused a Discover, Request or Renew (the `NAK_REASON` option).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NakReason {
    /// Every address is leased; nothing can be reclaimed.
    PoolExhausted,
    /// The address asked for is not available to this client.
    AddressUnavailable,
    /// The client holds no lease on that address.
    NoSuchLease,
    /// The gateway failed (e.g. its lease store); nothing was promised.
    ServerError,
    /// A reason code this version does not know.
    Unknown(u8),
}

impl NakReason {
    /// The code on the wire.
    pub fn code(self) -> u8 {
        match self {
            NakReason::PoolExhausted => 1,
            NakReason::AddressUnavailable => 2,
            NakReason::NoSuchLease => 3,
            NakReason::ServerError => 4,
            NakReason::Unknown(code) => code,
        }
    }

    /// The reason for a code on the wire.
    pub fn from_code(code: u8) -> Self {
        match code {
            1 => NakReason::PoolExhausted,
            2 => NakReason::AddressUnavailable,
            3 => NakReason::NoSuchLease,
            4 => NakReason::ServerError,
            other => NakReason::Unknown(other),
        }
    }

    /// The reason to send for an authority's refusal; store errors are not detailed on the wire.
    pub fn from_refusal(refusal: &Refusal) -> Self {
        match refusal {
            Refusal::PoolExhausted => NakReason::PoolExhausted,
            Refusal::AddressUnavailable(_) => NakReason::AddressUnavailable,
            Refusal::NoSuchLease(_) => NakReason::NoSuchLease,
            Refusal::Store(_) => NakReason::ServerError,
        }
    }
}

impl std::fmt::Display for NakReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NakReason::PoolExhausted => f.write_str("the address pool is exhausted"),
            NakReason::AddressUnavailable => f.write_str("the address is not available"),
            NakReason::NoSuchLease => f.write_str("no such lease"),
            NakReason::ServerError => f.write_str("gateway error"),
            NakReason::Unknown(code) => write!(f, "unknown reason {code}"),
        }
    }
}

/// How a NAT-traversal endpoint candidate was learnt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CandidateKind {
    /// An address of one of the host's own interfaces.
    Host,
    /// The public address a server saw (STUN, or the gateway's view of the sender).
    Reflexive,
    /// A port mapping the host made on its NAT (UPnP IGD, NAT-PMP, PCP).
    Mapped,
    /// A relay that forwards to the host.
    Relay,
    /// A kind this version does not know.
    Unknown(u8),
}

impl CandidateKind {
    /// The code on the wire.
    pub fn code(self) -> u8 {
        match self {
            CandidateKind::Host => 1,
            CandidateKind::Reflexive => 2,
            CandidateKind::Mapped => 3,
            CandidateKind::Relay => 4,
            CandidateKind::Unknown(code) => code,
        }
    }

    /// The kind for a code on the wire.
    pub fn from_code(code: u8) -> Self {
        match code {
            1 => CandidateKind::Host,
            2 => CandidateKind::Reflexive,
            3 => CandidateKind::Mapped,
            4 => CandidateKind::Relay,
            other => CandidateKind::Unknown(other),
        }
    }
}

/// An address at which a peer may be reachable directly (for NAT traversal, issue #5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Candidate {
    /// How the address was learnt.
    pub kind: CandidateKind,
    /// The address and UDP port (IPv6 flow info and scope are not carried).
    pub addr: SocketAddr,
}

/// An address and its timers, as offered or acknowledged. Times are whole seconds on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseParams {
    /// The client's virtual address.
    pub address: Ipv4Addr,
    /// Prefix length for the client's interface.
    pub prefix_len: u8,
    /// Total lease time.
    pub lease_time: Duration,
    /// T1: when to start renewing, from the time the request was sent.
    pub renew_after: Duration,
    /// T2: when to start rebinding.
    pub rebind_after: Duration,
}

impl LeaseParams {
    /// The parameters of an authority's lease.
    pub fn from_lease(lease: &LeaseInfo) -> Self {
        Self {
            address: lease.address,
            prefix_len: lease.prefix_len,
            lease_time: lease.lease_time,
            renew_after: lease.renew_after,
            rebind_after: lease.rebind_after,
        }
    }

    /// Whether `0 < T1 <= T2 <= lease time` in whole seconds, and the prefix length is valid.
    fn check(&self) -> Result<(), MessageError> {
        let (t1, t2, lease) = (
            secs(self.renew_after),
            secs(self.rebind_after),
            secs(self.lease_time),
        );
        if self.prefix_len > 32 {
            return Err(MessageError::BadOptionValue {
                code: option::PREFIX_LEN,
            });
        }
        if t1 == 0 || t1 > t2 || t2 > lease {
            return Err(MessageError::BadLeaseTimes);
        }
        Ok(())
    }
}

/// A duration in whole seconds as carried on the wire (saturating at `u32::MAX`).
fn secs(d: Duration) -> u32 {
    u32::try_from(d.as_secs()).unwrap_or(u32::MAX)
}

/// What a message says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// Client: I need an address (preferably `requested`, e.g. the one I had).
    Discover {
        /// The address the client would like.
        requested: Option<Ipv4Addr>,
    },
    /// Gateway: you may have this address.
    Offer(LeaseParams),
    /// Client: I take this address.
    Request {
        /// The offered address.
        address: Ipv4Addr,
    },
    /// Gateway: the address is yours, with these routes and DNS servers.
    Ack {
        /// The lease.
        lease: LeaseParams,
        /// Routes to send into the tunnel (`0.0.0.0/0` for full tunnel).
        routes: Vec<IpNet>,
        /// DNS servers to use.
        dns: Vec<IpAddr>,
    },
    /// Gateway: refused.
    Nak {
        /// Why.
        reason: NakReason,
        /// The address the refusal is about, if any.
        address: Option<Ipv4Addr>,
    },
    /// Client: extend my lease on this address.
    Renew {
        /// The leased address.
        address: Ipv4Addr,
    },
    /// Client: I am done with this address.
    Release {
        /// The leased address.
        address: Ipv4Addr,
    },
    /// Gateway: the release is noted (sent whether or not a lease existed).
    ReleaseAck {
        /// The released address.
        address: Ipv4Addr,
    },
    /// Client: these are my endpoint candidates; tell me `peer`'s (or echo mine).
    EndpointUpdate {
        /// The client's candidates.
        candidates: Vec<Candidate>,
        /// The peer whose candidates the client wants; `None` asks for its own, as stored.
        peer: Option<PublicKey>,
    },
    /// Gateway: the candidates stored for `peer`.
    PeerEndpoints {
        /// The peer the candidates belong to.
        peer: PublicKey,
        /// Its candidates (empty if unknown).
        candidates: Vec<Candidate>,
    },
}

impl Body {
    /// The message type code.
    pub fn type_code(&self) -> u8 {
        match self {
            Body::Discover { .. } => 1,
            Body::Offer(_) => 2,
            Body::Request { .. } => 3,
            Body::Ack { .. } => 4,
            Body::Nak { .. } => 5,
            Body::Renew { .. } => 6,
            Body::Release { .. } => 7,
            Body::ReleaseAck { .. } => 8,
            Body::EndpointUpdate { .. } => 9,
            Body::PeerEndpoints { .. } => 10,
        }
    }

    /// A short name for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Body::Discover { .. } => "discover",
            Body::Offer(_) => "offer",
            Body::Request { .. } => "request",
            Body::Ack { .. } => "ack",
            Body::Nak { .. } => "nak",
            Body::Renew { .. } => "renew",
            Body::Release { .. } => "release",
            Body::ReleaseAck { .. } => "release-ack",
            Body::EndpointUpdate { .. } => "endpoint-update",
            Body::PeerEndpoints { .. } => "peer-endpoints",
        }
    }
}

/// A control message: a transaction id and a body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Chosen at random by the client per transaction; the gateway's answer carries the same.
    pub xid: u32,
    /// What the message says.
    pub body: Body,
}

/// A typed view of a message's bytes.
#[derive(Debug, Clone, Copy)]
pub struct MessagePacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> MessagePacket<T> {
    /// Wraps `buffer` after checking that it holds a header and is not too long.
    pub fn new_checked(buffer: T) -> Result<Self, MessageError> {
        let len = buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(MessageError::Truncated(len));
        }
        if len > MAX_PLAINTEXT_LEN {
            return Err(MessageError::TooLong(len));
        }
        Ok(Self { buffer })
    }

    /// The message type code.
    pub fn message_type(&self) -> u8 {
        self.buffer.as_ref()[field::TYPE]
    }

    /// The transaction id.
    pub fn xid(&self) -> u32 {
        let mut b = [0u8; 4];
        b.copy_from_slice(&self.buffer.as_ref()[field::XID]);
        u32::from_be_bytes(b)
    }

    /// The options, in order, as `(code, value)`; an item is an error (and the last) if an
    /// option runs past the end.
    pub fn options(&self) -> Options<'_> {
        Options {
            rest: &self.buffer.as_ref()[field::OPTIONS],
        }
    }
}

/// Iterator over a message's options; see [`MessagePacket::options`].
#[derive(Debug, Clone)]
pub struct Options<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Options<'a> {
    type Item = Result<(u8, &'a [u8]), MessageError>;

    fn next(&mut self) -> Option<Self::Item> {
        let (&code, after_code) = self.rest.split_first()?;
        let parsed = after_code
            .split_first()
            .and_then(|(&len, after_len)| {
                let len = usize::from(len);
                (after_len.len() >= len).then(|| after_len.split_at(len))
            })
            .ok_or(MessageError::TruncatedOption { code });
        match parsed {
            Ok((value, rest)) => {
                self.rest = rest;
                Some(Ok((code, value)))
            }
            Err(e) => {
                self.rest = &[];
                Some(Err(e))
            }
        }
    }
}

/// Every known option of a message, collected before the body is built.
#[derive(Default)]
struct Collected {
    requested: Option<Ipv4Addr>,
    address: Option<Ipv4Addr>,
    prefix_len: Option<u8>,
    lease_time: Option<u32>,
    renew_after: Option<u32>,
    rebind_after: Option<u32>,
    routes: Vec<IpNet>,
    dns: Vec<IpAddr>,
    nak_reason: Option<NakReason>,
    candidates: Vec<Candidate>,
    peer: Option<PublicKey>,
}

fn set_once<V>(slot: &mut Option<V>, value: V, code: u8) -> Result<(), MessageError> {
    if slot.replace(value).is_some() {
        return Err(MessageError::DuplicateOption { code });
    }
    Ok(())
}

fn push_bounded<V>(list: &mut Vec<V>, value: V, code: u8, max: usize) -> Result<(), MessageError> {
    if list.len() >= max {
        return Err(MessageError::TooManyOptions { code, max });
    }
    list.push(value);
    Ok(())
}

fn fixed<const N: usize>(code: u8, value: &[u8]) -> Result<[u8; N], MessageError> {
    <[u8; N]>::try_from(value).map_err(|_| MessageError::BadOptionLength {
        code,
        len: value.len(),
    })
}

/// An IPv4 (4 bytes) or IPv6 (16 bytes) address.
fn ip(code: u8, value: &[u8]) -> Result<IpAddr, MessageError> {
    match value.len() {
        4 => Ok(IpAddr::from(fixed::<4>(code, value)?)),
        16 => Ok(IpAddr::from(fixed::<16>(code, value)?)),
        len => Err(MessageError::BadOptionLength { code, len }),
    }
}

fn emit_ip(out: &mut Vec<u8>, addr: IpAddr) {
    match addr {
        IpAddr::V4(a) => out.extend_from_slice(&a.octets()),
        IpAddr::V6(a) => out.extend_from_slice(&a.octets()),
    }
}

impl Collected {
    fn add(&mut self, code: u8, value: &[u8]) -> Result<(), MessageError> {
        match code {
            option::REQUESTED_ADDRESS => set_once(
                &mut self.requested,
                Ipv4Addr::from(fixed::<4>(code, value)?),
                code,
            ),
            option::ADDRESS => set_once(
                &mut self.address,
                Ipv4Addr::from(fixed::<4>(code, value)?),
                code,
            ),
            option::PREFIX_LEN => {
                let [len] = fixed::<1>(code, value)?;
                if len > 32 {
                    return Err(MessageError::BadOptionValue { code });
                }
                set_once(&mut self.prefix_len, len, code)
            }
            option::LEASE_TIME | option::RENEW_AFTER | option::REBIND_AFTER => {
                let v = u32::from_be_bytes(fixed::<4>(code, value)?);
                let slot = match code {
                    option::LEASE_TIME => &mut self.lease_time,
                    option::RENEW_AFTER => &mut self.renew_after,
                    _ => &mut self.rebind_after,
                };
                set_once(slot, v, code)
            }
            option::ROUTE => {
                let (&prefix, addr) = value.split_first().ok_or(MessageError::BadOptionLength {
                    code,
                    len: value.len(),
                })?;
                let net = IpNet::new(ip(code, addr)?, prefix)
                    .map_err(|_| MessageError::BadOptionValue { code })?;
                push_bounded(&mut self.routes, net, code, MAX_ROUTES)
            }
            option::DNS_SERVER => {
                push_bounded(&mut self.dns, ip(code, value)?, code, MAX_DNS_SERVERS)
            }
            option::NAK_REASON => {
                let [reason] = fixed::<1>(code, value)?;
                set_once(&mut self.nak_reason, NakReason::from_code(reason), code)
            }
            option::CANDIDATE => {
                if value.len() != 7 && value.len() != 19 {
                    return Err(MessageError::BadOptionLength {
                        code,
                        len: value.len(),
                    });
                }
                let kind = CandidateKind::from_code(value[0]);
                let port = u16::from_be_bytes([value[1], value[2]]);
                let addr = SocketAddr::new(ip(code, &value[3..])?, port);
                push_bounded(
                    &mut self.candidates,
                    Candidate { kind, addr },
                    code,
                    MAX_CANDIDATES,
                )
            }
            option::PEER_KEY => set_once(
                &mut self.peer,
                PublicKey::from_bytes(fixed::<KEY_LEN>(code, value)?),
                code,
            ),
            // Unknown options are skipped: a later version may add some.
            _ => Ok(()),
        }
    }

    fn lease(&self, message: u8) -> Result<LeaseParams, MessageError> {
        let missing = |code| MessageError::MissingOption { message, code };
        let lease = LeaseParams {
            address: self.address.ok_or(missing(option::ADDRESS))?,
            prefix_len: self.prefix_len.ok_or(missing(option::PREFIX_LEN))?,
            lease_time: Duration::from_secs(
                self.lease_time.ok_or(missing(option::LEASE_TIME))?.into(),
            ),
            renew_after: Duration::from_secs(
                self.renew_after.ok_or(missing(option::RENEW_AFTER))?.into(),
            ),
            rebind_after: Duration::from_secs(
                self.rebind_after
                    .ok_or(missing(option::REBIND_AFTER))?
                    .into(),
            ),
        };
        lease.check()?;
        Ok(lease)
    }

    fn address(&self, message: u8) -> Result<Ipv4Addr, MessageError> {
        self.address.ok_or(MessageError::MissingOption {
            message,
            code: option::ADDRESS,
        })
    }
}

impl Message {
    /// Parses a decrypted message.
    pub fn parse(bytes: &[u8]) -> Result<Self, MessageError> {
        let packet = MessagePacket::new_checked(bytes)?;
        let mut c = Collected::default();
        for item in packet.options() {
            let (code, value) = item?;
            c.add(code, value)?;
        }
        let t = packet.message_type();
        let body = match t {
            1 => Body::Discover {
                requested: c.requested,
            },
            2 => Body::Offer(c.lease(t)?),
            3 => Body::Request {
                address: c.address(t)?,
            },
            4 => Body::Ack {
                lease: c.lease(t)?,
                routes: c.routes,
                dns: c.dns,
            },
            5 => Body::Nak {
                reason: c.nak_reason.ok_or(MessageError::MissingOption {
                    message: t,
                    code: option::NAK_REASON,
                })?,
                address: c.address,
            },
            6 => Body::Renew {
                address: c.address(t)?,
            },
            7 => Body::Release {
                address: c.address(t)?,
            },
            8 => Body::ReleaseAck {
                address: c.address(t)?,
            },
            9 => Body::EndpointUpdate {
                candidates: c.candidates,
                peer: c.peer,
            },
            10 => Body::PeerEndpoints {
                peer: c.peer.ok_or(MessageError::MissingOption {
                    message: t,
                    code: option::PEER_KEY,
                })?,
                candidates: c.candidates,
            },
            other => return Err(MessageError::UnknownType(other)),
        };
        Ok(Message {
            xid: packet.xid(),
            body,
        })
    }

    /// Encodes the message; fails if it would not fit a transport packet, if a list is longer
    /// than its limit, or if lease times are inconsistent.
    pub fn emit(&self) -> Result<Vec<u8>, MessageError> {
        let mut out = Vec::with_capacity(64);
        out.push(self.body.type_code());
        out.extend_from_slice(&self.xid.to_be_bytes());
        let mut w = Writer { out };
        match &self.body {
            Body::Discover { requested } => {
                if let Some(a) = requested {
                    w.option(option::REQUESTED_ADDRESS, &a.octets());
                }
            }
            Body::Offer(lease) => w.lease(lease)?,
            Body::Request { address }
            | Body::Renew { address }
            | Body::Release { address }
            | Body::ReleaseAck { address } => w.option(option::ADDRESS, &address.octets()),
            Body::Ack { lease, routes, dns } => {
                w.lease(lease)?;
                limit(routes.len(), option::ROUTE, MAX_ROUTES)?;
                limit(dns.len(), option::DNS_SERVER, MAX_DNS_SERVERS)?;
                for route in routes {
                    let mut v = vec![route.prefix_len()];
                    emit_ip(&mut v, route.addr());
                    w.option(option::ROUTE, &v);
                }
                for server in dns {
                    let mut v = Vec::with_capacity(16);
                    emit_ip(&mut v, *server);
                    w.option(option::DNS_SERVER, &v);
                }
            }
            Body::Nak { reason, address } => {
                w.option(option::NAK_REASON, &[reason.code()]);
                if let Some(a) = address {
                    w.option(option::ADDRESS, &a.octets());
                }
            }
            Body::EndpointUpdate { candidates, peer } => {
                w.candidates(candidates)?;
                if let Some(p) = peer {
                    w.option(option::PEER_KEY, p.as_bytes());
                }
            }
            Body::PeerEndpoints { peer, candidates } => {
                w.option(option::PEER_KEY, peer.as_bytes());
                w.candidates(candidates)?;
            }
        }
        let out = w.out;
        if out.len() > MAX_PLAINTEXT_LEN {
            return Err(MessageError::TooLong(out.len()));
        }
        Ok(out)
    }
}

fn limit(len: usize, code: u8, max: usize) -> Result<(), MessageError> {
    if len > max {
        return Err(MessageError::TooManyOptions { code, max });
    }
    Ok(())
}

/// Appends options to a message.
struct Writer {
    out: Vec<u8>,
}

impl Writer {
    /// Appends one option; every value this module writes is at most 32 bytes.
    fn option(&mut self, code: u8, value: &[u8]) {
        self.out.push(code);
        self.out.push(u8::try_from(value.len()).unwrap_or(u8::MAX));
        self.out.extend_from_slice(value);
    }

    fn lease(&mut self, lease: &LeaseParams) -> Result<(), MessageError> {
        lease.check()?;
        self.option(option::ADDRESS, &lease.address.octets());
        self.option(option::PREFIX_LEN, &[lease.prefix_len]);
        self.option(option::LEASE_TIME, &secs(lease.lease_time).to_be_bytes());
        self.option(option::RENEW_AFTER, &secs(lease.renew_after).to_be_bytes());
        self.option(
            option::REBIND_AFTER,
            &secs(lease.rebind_after).to_be_bytes(),
        );
        Ok(())
    }

    fn candidates(&mut self, candidates: &[Candidate]) -> Result<(), MessageError> {
        limit(candidates.len(), option::CANDIDATE, MAX_CANDIDATES)?;
        for c in candidates {
            let mut v = vec![c.kind.code()];
            v.extend_from_slice(&c.addr.port().to_be_bytes());
            emit_ip(&mut v, c.addr.ip());
            self.option(option::CANDIDATE, &v);
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::Ipv6Addr;

    fn ipv4() -> impl Strategy<Value = Ipv4Addr> {
        any::<[u8; 4]>().prop_map(Ipv4Addr::from)
    }

    fn ip_addr() -> impl Strategy<Value = IpAddr> {
        prop_oneof![
            ipv4().prop_map(IpAddr::V4),
            any::<[u8; 16]>().prop_map(|b| IpAddr::V6(Ipv6Addr::from(b))),
        ]
    }

    fn route() -> impl Strategy<Value = IpNet> {
        prop_oneof![
            (ipv4(), 0u8..=32)
                .prop_map(|(a, p)| IpNet::new(IpAddr::V4(a), p).expect("prefix <= 32")),
            (any::<[u8; 16]>(), 0u8..=128).prop_map(|(a, p)| {
                IpNet::new(IpAddr::V6(Ipv6Addr::from(a)), p).expect("prefix <= 128")
            }),
        ]
    }

    fn lease() -> impl Strategy<Value = LeaseParams> {
        (ipv4(), 0u8..=32, 1u32..=u32::MAX)
            .prop_flat_map(|(address, prefix_len, lease)| {
                (Just((address, prefix_len, lease)), 1..=lease)
            })
            .prop_flat_map(|(base, t1)| (Just(base), Just(t1), t1..=base.2))
            .prop_map(|((address, prefix_len, lease), t1, t2)| LeaseParams {
                address,
                prefix_len,
                lease_time: Duration::from_secs(lease.into()),
                renew_after: Duration::from_secs(t1.into()),
                rebind_after: Duration::from_secs(t2.into()),
            })
    }

    fn nak_reason() -> impl Strategy<Value = NakReason> {
        prop_oneof![
            Just(NakReason::PoolExhausted),
            Just(NakReason::AddressUnavailable),
            Just(NakReason::NoSuchLease),
            Just(NakReason::ServerError),
            (5u8..=255).prop_map(NakReason::Unknown),
            Just(NakReason::Unknown(0)),
        ]
    }

    fn candidate() -> impl Strategy<Value = Candidate> {
        let kind = prop_oneof![
            Just(CandidateKind::Host),
            Just(CandidateKind::Reflexive),
            Just(CandidateKind::Mapped),
            Just(CandidateKind::Relay),
            (5u8..=255).prop_map(CandidateKind::Unknown),
        ];
        (kind, ip_addr(), any::<u16>()).prop_map(|(kind, ip, port)| Candidate {
            kind,
            addr: SocketAddr::new(ip, port),
        })
    }

    fn key() -> impl Strategy<Value = PublicKey> {
        any::<[u8; 32]>().prop_map(PublicKey::from_bytes)
    }

    /// Any message that fits a transport packet.
    pub(crate) fn message() -> impl Strategy<Value = Message> {
        let body = prop_oneof![
            proptest::option::of(ipv4()).prop_map(|requested| Body::Discover { requested }),
            lease().prop_map(Body::Offer),
            ipv4().prop_map(|address| Body::Request { address }),
            (
                lease(),
                proptest::collection::vec(route(), 0..=MAX_ROUTES / 2),
                proptest::collection::vec(ip_addr(), 0..=MAX_DNS_SERVERS),
            )
                .prop_map(|(lease, routes, dns)| Body::Ack { lease, routes, dns }),
            (nak_reason(), proptest::option::of(ipv4()))
                .prop_map(|(reason, address)| Body::Nak { reason, address }),
            ipv4().prop_map(|address| Body::Renew { address }),
            ipv4().prop_map(|address| Body::Release { address }),
            ipv4().prop_map(|address| Body::ReleaseAck { address }),
            (
                proptest::collection::vec(candidate(), 0..=MAX_CANDIDATES),
                proptest::option::of(key())
            )
                .prop_map(|(candidates, peer)| Body::EndpointUpdate { candidates, peer }),
            (
                key(),
                proptest::collection::vec(candidate(), 0..=MAX_CANDIDATES)
            )
                .prop_map(|(peer, candidates)| Body::PeerEndpoints { peer, candidates }),
        ];
        (any::<u32>(), body).prop_map(|(xid, body)| Message { xid, body })
    }

    proptest! {
        #[test]
        fn round_trip(message in message()) {
            // The strategy's lists are short enough that every message fits.
            let bytes = message.emit().expect("fits");
            prop_assert!(bytes.len() <= MAX_PLAINTEXT_LEN);
            prop_assert_eq!(Message::parse(&bytes), Ok(message));
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..1300)) {
            if let Ok(m) = Message::parse(&bytes) {
                // Whatever parses re-encodes to something that parses to the same message.
                let again = m.emit().expect("a parsed message encodes");
                prop_assert_eq!(Message::parse(&again), Ok(m));
            }
        }

        #[test]
        fn unknown_options_are_skipped(message in message(), code in 12u8.., value in proptest::collection::vec(any::<u8>(), 0..20)) {
            if let Ok(mut bytes) = message.emit() {
                bytes.push(code);
                bytes.push(u8::try_from(value.len()).expect("short"));
                bytes.extend_from_slice(&value);
                if bytes.len() <= MAX_PLAINTEXT_LEN {
                    prop_assert_eq!(Message::parse(&bytes), Ok(message));
                }
            }
        }
    }

    #[test]
    fn decode_errors() {
        assert_eq!(Message::parse(&[]), Err(MessageError::Truncated(0)));
        assert_eq!(
            Message::parse(&[99, 0, 0, 0, 1]),
            Err(MessageError::UnknownType(99))
        );
        // Request without its address.
        assert_eq!(
            Message::parse(&[3, 0, 0, 0, 1]),
            Err(MessageError::MissingOption {
                message: 3,
                code: option::ADDRESS
            })
        );
        // Option header cut short.
        assert_eq!(
            Message::parse(&[3, 0, 0, 0, 1, option::ADDRESS]),
            Err(MessageError::TruncatedOption {
                code: option::ADDRESS
            })
        );
        assert_eq!(
            Message::parse(&[3, 0, 0, 0, 1, option::ADDRESS, 4, 10, 0]),
            Err(MessageError::TruncatedOption {
                code: option::ADDRESS
            })
        );
        // Wrong length, duplicate, bad prefix.
        assert_eq!(
            Message::parse(&[3, 0, 0, 0, 1, option::ADDRESS, 3, 10, 0, 0]),
            Err(MessageError::BadOptionLength {
                code: option::ADDRESS,
                len: 3
            })
        );
        assert_eq!(
            Message::parse(&[
                3,
                0,
                0,
                0,
                1,
                option::ADDRESS,
                4,
                10,
                0,
                0,
                1,
                option::ADDRESS,
                4,
                10,
                0,
                0,
                2
            ]),
            Err(MessageError::DuplicateOption {
                code: option::ADDRESS
            })
        );
        assert_eq!(
            Message::parse(&[4, 0, 0, 0, 1, option::PREFIX_LEN, 1, 33]),
            Err(MessageError::BadOptionValue {
                code: option::PREFIX_LEN
            })
        );
        assert_eq!(
            Message::parse(&vec![1; MAX_PLAINTEXT_LEN + 1]),
            Err(MessageError::TooLong(MAX_PLAINTEXT_LEN + 1))
        );
    }

    #[test]
    fn lease_times_must_be_ordered() {
        let lease = LeaseParams {
            address: Ipv4Addr::new(10, 0, 0, 2),
            prefix_len: 24,
            lease_time: Duration::from_secs(100),
            renew_after: Duration::from_secs(80),
            rebind_after: Duration::from_secs(50),
        };
        let m = Message {
            xid: 1,
            body: Body::Offer(lease),
        };
        assert_eq!(m.emit(), Err(MessageError::BadLeaseTimes));
    }

    #[test]
    fn too_many_routes() {
        let lease = LeaseParams {
            address: Ipv4Addr::new(10, 0, 0, 2),
            prefix_len: 24,
            lease_time: Duration::from_secs(100),
            renew_after: Duration::from_secs(50),
            rebind_after: Duration::from_secs(75),
        };
        let m = Message {
            xid: 1,
            body: Body::Ack {
                lease,
                routes: vec!["10.0.0.0/8".parse().expect("cidr"); MAX_ROUTES + 1],
                dns: vec![],
            },
        };
        assert_eq!(
            m.emit(),
            Err(MessageError::TooManyOptions {
                code: option::ROUTE,
                max: MAX_ROUTES
            })
        );
        // The most routes, all IPv6: within the count limit but too big for a packet.
        let m = Message {
            xid: 1,
            body: Body::Ack {
                lease,
                routes: vec!["2001:db8::/32".parse().expect("cidr"); MAX_ROUTES],
                dns: vec![],
            },
        };
        assert!(matches!(m.emit(), Err(MessageError::TooLong(_))));
    }
}
