//! The few IPv4 header fields the NAT reads and rewrites.
//!
//! Headers are read and validated with etherparse's slices; the writers below change an address
//! and a port (or ICMP query id) in place and fix every checksum covering them incrementally
//! ([`super::checksum`]). Byte offsets live in [`field`] and nowhere else.

use etherparse::{Icmpv4Slice, Ipv4HeaderSlice, TcpHeaderSlice, UdpHeaderSlice};

use super::checksum::Delta;
use super::DropReason;

/// Byte ranges of the rewritten fields.
pub(crate) mod field {
    use std::ops::Range;

    /// IPv4 header checksum.
    pub(crate) const IP_CHECKSUM: Range<usize> = 10..12;
    /// IPv4 source address.
    pub(crate) const IP_SRC: Range<usize> = 12..16;
    /// IPv4 destination address.
    pub(crate) const IP_DST: Range<usize> = 16..20;
    /// TCP/UDP source port (from the start of the transport header).
    pub(crate) const SRC_PORT: Range<usize> = 0..2;
    /// TCP/UDP destination port.
    pub(crate) const DST_PORT: Range<usize> = 2..4;
    /// TCP checksum.
    pub(crate) const TCP_CHECKSUM: Range<usize> = 16..18;
    /// UDP checksum.
    pub(crate) const UDP_CHECKSUM: Range<usize> = 6..8;
    /// ICMP checksum.
    pub(crate) const ICMP_CHECKSUM: Range<usize> = 2..4;
    /// ICMP query identifier (echo, timestamp).
    pub(crate) const ICMP_ID: Range<usize> = 4..6;
    /// Where the packet embedded in an ICMP error starts (after type, code, checksum, unused).
    pub(crate) const ICMP_ERROR_PAYLOAD: usize = 8;
}

/// The transport protocols the NAT translates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
#[repr(u8)]
pub enum Proto {
    /// ICMP queries (echo, timestamp); the query identifier plays the part of a port.
    Icmp = 1,
    /// TCP.
    Tcp = 6,
    /// UDP.
    Udp = 17,
}

impl Proto {
    /// Index for per-protocol arrays.
    pub(crate) fn index(self) -> usize {
        match self {
            Proto::Icmp => 0,
            Proto::Tcp => 1,
            Proto::Udp => 2,
        }
    }
}

/// TCP flags the session state follows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct TcpFlags {
    pub(crate) syn: bool,
    pub(crate) fin: bool,
    pub(crate) rst: bool,
}

/// What the transport header of a packet is, as far as the NAT cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transport {
    /// TCP with its ports and flags.
    Tcp {
        src_port: u16,
        dst_port: u16,
        flags: TcpFlags,
    },
    /// UDP with its ports.
    Udp { src_port: u16, dst_port: u16 },
    /// An ICMP query or its reply (echo, timestamp) with its identifier.
    IcmpQuery { id: u16 },
    /// An ICMP error (destination unreachable, time exceeded, parameter problem) carrying the
    /// start of the packet that caused it.
    IcmpError,
    /// A later fragment: no transport header.
    Fragment,
    /// Any other protocol or ICMP type.
    Other(u8),
}

/// A parsed IPv4 packet: addresses, lengths and transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Headers {
    pub(crate) src: [u8; 4],
    pub(crate) dst: [u8; 4],
    /// IPv4 header length in bytes.
    pub(crate) ihl: usize,
    /// IPv4 total length (bytes past it are link padding and left alone).
    pub(crate) len: usize,
    /// Whether this packet is a fragment (first or later).
    pub(crate) fragmented: bool,
    pub(crate) transport: Transport,
}

impl Headers {
    /// The protocol, source and destination port (ICMP: the id on both sides), for the
    /// protocols the NAT translates.
    pub(crate) fn ports(&self) -> Option<(Proto, u16, u16)> {
        match self.transport {
            Transport::Tcp {
                src_port, dst_port, ..
            } => Some((Proto::Tcp, src_port, dst_port)),
            Transport::Udp { src_port, dst_port } => Some((Proto::Udp, src_port, dst_port)),
            Transport::IcmpQuery { id } => Some((Proto::Icmp, id, id)),
            _ => None,
        }
    }

    /// The TCP flags, if TCP.
    pub(crate) fn tcp_flags(&self) -> Option<TcpFlags> {
        match self.transport {
            Transport::Tcp { flags, .. } => Some(flags),
            _ => None,
        }
    }
}

/// Whether `buf` starts with an IPv6 header (passed through untranslated).
pub(crate) fn is_ipv6(buf: &[u8]) -> bool {
    buf.first().is_some_and(|b| b >> 4 == 6)
}

/// Parses an IPv4 packet.
pub(crate) fn parse(buf: &[u8]) -> Result<Headers, DropReason> {
    let ip = Ipv4HeaderSlice::from_slice(buf).map_err(|_| DropReason::Malformed)?;
    let ihl = ip.slice().len();
    let len = usize::from(ip.total_len());
    if len < ihl || len > buf.len() {
        return Err(DropReason::Malformed);
    }
    let payload = &buf[ihl..len];
    let later_fragment = ip.fragments_offset().value() != 0;
    let fragmented = later_fragment || ip.more_fragments();
    let proto = ip.protocol().0;
    let transport = if later_fragment {
        Transport::Fragment
    } else {
        match proto {
            6 => {
                let tcp = TcpHeaderSlice::from_slice(payload).map_err(|_| DropReason::Malformed)?;
                Transport::Tcp {
                    src_port: tcp.source_port(),
                    dst_port: tcp.destination_port(),
                    flags: TcpFlags {
                        syn: tcp.syn(),
                        fin: tcp.fin(),
                        rst: tcp.rst(),
                    },
                }
            }
            17 => {
                let udp = UdpHeaderSlice::from_slice(payload).map_err(|_| DropReason::Malformed)?;
                Transport::Udp {
                    src_port: udp.source_port(),
                    dst_port: udp.destination_port(),
                }
            }
            1 => {
                let icmp = Icmpv4Slice::from_slice(payload).map_err(|_| DropReason::Malformed)?;
                match icmp.type_u8() {
                    // Echo reply/request, timestamp request/reply.
                    0 | 8 | 13 | 14 => {
                        let b = icmp.bytes5to8();
                        Transport::IcmpQuery {
                            id: u16::from_be_bytes([b[0], b[1]]),
                        }
                    }
                    // Destination unreachable, time exceeded, parameter problem.
                    3 | 11 | 12 => Transport::IcmpError,
                    _ => Transport::Other(proto),
                }
            }
            other => Transport::Other(other),
        }
    };
    Ok(Headers {
        src: ip.source(),
        dst: ip.destination(),
        ihl,
        len,
        fragmented,
        transport,
    })
}

/// The packet embedded in an ICMP error: its header and the first bytes of its transport header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Embedded {
    pub(crate) src: [u8; 4],
    pub(crate) dst: [u8; 4],
    pub(crate) ihl: usize,
    pub(crate) proto: Proto,
    pub(crate) src_port: u16,
    pub(crate) dst_port: u16,
}

/// Parses the packet embedded in an ICMP error (`inner` starts at its IPv4 header and may be
/// truncated after the first 8 bytes of its transport header).
pub(crate) fn parse_embedded(inner: &[u8]) -> Result<Embedded, DropReason> {
    let ip = Ipv4HeaderSlice::from_slice(inner).map_err(|_| DropReason::Malformed)?;
    let ihl = ip.slice().len();
    if ip.fragments_offset().value() != 0 {
        return Err(DropReason::Fragment);
    }
    let l4 = inner.get(ihl..ihl + 8).ok_or(DropReason::Malformed)?;
    let word = |r: std::ops::Range<usize>| u16::from_be_bytes([l4[r.start], l4[r.start + 1]]);
    let (proto, src_port, dst_port) = match ip.protocol().0 {
        6 => (Proto::Tcp, word(field::SRC_PORT), word(field::DST_PORT)),
        17 => (Proto::Udp, word(field::SRC_PORT), word(field::DST_PORT)),
        // Only errors about our own queries (echo/timestamp requests and replies).
        1 if matches!(l4[0], 0 | 8 | 13 | 14) => {
            let id = word(field::ICMP_ID);
            (Proto::Icmp, id, id)
        }
        other => return Err(DropReason::UnsupportedProtocol(other)),
    };
    Ok(Embedded {
        src: ip.source(),
        dst: ip.destination(),
        ihl,
        proto,
        src_port,
        dst_port,
    })
}

/// Which end of a packet to rewrite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    Src,
    Dst,
}

fn read16(buf: &[u8], r: std::ops::Range<usize>) -> u16 {
    u16::from_be_bytes([buf[r.start], buf[r.start + 1]])
}

fn write16(buf: &mut [u8], r: std::ops::Range<usize>, v: u16) {
    buf[r].copy_from_slice(&v.to_be_bytes());
}

/// Rewrites one end of the IPv4 packet at the start of `pkt` (a whole packet, or the truncated
/// packet inside an ICMP error): its address, its port or ICMP query id when `port` is given, the
/// IPv4 header checksum and the transport checksum if it lies within `pkt`. `ihl` is the header
/// length and `proto` the transport (`None`: addresses only, e.g. a later fragment or a protocol
/// that netmap passes through).
///
/// The caller has validated the header (`parse` or `parse_embedded`), so every range is in bounds
/// for the header and the first 8 transport bytes.
pub(crate) fn rewrite(
    pkt: &mut [u8],
    ihl: usize,
    proto: Option<Proto>,
    side: Side,
    addr: [u8; 4],
    port: Option<u16>,
) {
    let addr_range = match side {
        Side::Src => field::IP_SRC,
        Side::Dst => field::IP_DST,
    };
    let mut old_addr = [0u8; 4];
    old_addr.copy_from_slice(&pkt[addr_range.clone()]);
    let mut addr_delta = Delta::default();
    addr_delta.addr(old_addr, addr);
    if !addr_delta.is_empty() {
        pkt[addr_range].copy_from_slice(&addr);
        let c = addr_delta.apply(read16(pkt, field::IP_CHECKSUM));
        write16(pkt, field::IP_CHECKSUM, c);
    }

    let Some(proto) = proto else { return };
    let l4 = &mut pkt[ihl..];
    let mut delta = Delta::default();
    let port_range = match (proto, side) {
        (Proto::Icmp, _) => field::ICMP_ID,
        (_, Side::Src) => field::SRC_PORT,
        (_, Side::Dst) => field::DST_PORT,
    };
    if let Some(port) = port {
        let old = read16(l4, port_range.clone());
        if old != port {
            delta.word(old, port);
            write16(l4, port_range, port);
        }
    }
    // TCP and UDP checksums cover the addresses through the pseudo-header; ICMP's does not.
    if proto != Proto::Icmp {
        delta.add(addr_delta);
    }
    if delta.is_empty() {
        return;
    }
    let check_range = match proto {
        Proto::Tcp => field::TCP_CHECKSUM,
        Proto::Udp => field::UDP_CHECKSUM,
        Proto::Icmp => field::ICMP_CHECKSUM,
    };
    if l4.len() < check_range.end {
        // Truncated inside an ICMP error: the checksum was not quoted.
        return;
    }
    let old = read16(l4, check_range.clone());
    let new = match proto {
        Proto::Udp => delta.apply_udp(old),
        _ => delta.apply(old),
    };
    write16(l4, check_range, new);
}

/// Reads a 16-bit word of the ICMP header at the start of `icmp`.
pub(crate) fn icmp_checksum(icmp: &[u8]) -> u16 {
    read16(icmp, field::ICMP_CHECKSUM)
}

/// Writes the checksum of the ICMP header at the start of `icmp`.
pub(crate) fn set_icmp_checksum(icmp: &mut [u8], v: u16) {
    write16(icmp, field::ICMP_CHECKSUM, v)
}
