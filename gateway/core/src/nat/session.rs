//! What a session remembers of its flow (direction seen, TCP flags) and how long it may idle.

use std::net::SocketAddrV4;

use serde::Serialize;

use super::config::{Dependency, Timeouts};
use super::packet::{Proto, TcpFlags};

/// Bits of a session's state byte.
pub(crate) mod bits {
    /// An outbound packet was seen.
    pub(crate) const OUT: u8 = 1;
    /// An inbound packet was seen (the flow is answered).
    pub(crate) const IN: u8 = 2;
    /// More than one outbound packet was seen.
    pub(crate) const OUT_AGAIN: u8 = 4;
    /// TCP: the inside sent a FIN.
    pub(crate) const FIN_OUT: u8 = 8;
    /// TCP: the outside sent a FIN.
    pub(crate) const FIN_IN: u8 = 16;
    /// TCP: a RST was seen in either direction.
    pub(crate) const RST: u8 = 32;
}

/// Which way a packet goes through the NAT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Direction {
    /// From the inside to the outside.
    Out,
    /// From the outside to the inside.
    In,
}

/// The state after a packet in `dir` with `tcp` flags (if TCP).
pub(crate) fn advance(state: u8, dir: Direction, tcp: Option<TcpFlags>) -> u8 {
    let mut s = state;
    if let Some(f) = tcp {
        // A new SYN on a closed or reset connection starts it over (the host reuses the port).
        if f.syn && s & (bits::RST | bits::FIN_OUT | bits::FIN_IN) != 0 {
            s = 0;
        }
        if f.rst {
            s |= bits::RST;
        }
        if f.fin {
            s |= match dir {
                Direction::Out => bits::FIN_OUT,
                Direction::In => bits::FIN_IN,
            };
        }
    }
    match dir {
        Direction::Out if s & bits::OUT != 0 => s | bits::OUT_AGAIN,
        Direction::Out => s | bits::OUT,
        Direction::In => s | bits::IN,
    }
}

/// Whether a TCP session counts as established (RFC 5382): packets seen both ways, no RST, not
/// closed by FINs from both ends.
fn tcp_established(s: u8) -> bool {
    s & bits::OUT != 0
        && s & bits::IN != 0
        && s & bits::RST == 0
        && s & (bits::FIN_OUT | bits::FIN_IN) != (bits::FIN_OUT | bits::FIN_IN)
}

/// The idle timeout, in seconds, of a session in `state`.
pub(crate) fn timeout(proto: Proto, state: u8, t: &Timeouts) -> u32 {
    match proto {
        Proto::Udp if state & (bits::IN | bits::OUT_AGAIN) != 0 => t.udp,
        Proto::Udp => t.udp_initial,
        Proto::Tcp if tcp_established(state) => t.tcp_established,
        Proto::Tcp => t.tcp_transitory,
        Proto::Icmp => t.icmp,
    }
}

/// A readable name of the state, for listings.
pub(crate) fn describe(proto: Proto, s: u8) -> &'static str {
    match proto {
        Proto::Tcp if s & bits::RST != 0 => "reset",
        Proto::Tcp if s & (bits::FIN_OUT | bits::FIN_IN) == (bits::FIN_OUT | bits::FIN_IN) => {
            "closed"
        }
        Proto::Tcp if s & (bits::FIN_OUT | bits::FIN_IN) != 0 => "closing",
        Proto::Tcp if tcp_established(s) => "established",
        Proto::Tcp => "opening",
        _ if s & bits::IN != 0 => "answered",
        _ => "unanswered",
    }
}

/// How a session came about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SessionKind {
    /// Source NAT of a flow from the inside (or a flow let in by its mapping's filter).
    Masquerade,
    /// A port forward from the outside.
    Forward,
}

/// One session, as `sitelink-gateway nat [--json]` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SessionInfo {
    /// The protocol.
    pub proto: Proto,
    /// How it came about.
    pub kind: SessionKind,
    /// The inside endpoint (ICMP: the inside query id as the port).
    pub internal: SocketAddrV4,
    /// The endpoint the outside sees.
    pub external: SocketAddrV4,
    /// The outside peer (ICMP: port 0).
    pub remote: SocketAddrV4,
    /// The mapping behaviour of its mapping.
    pub mapping: Dependency,
    /// The filtering behaviour of its mapping.
    pub filtering: Dependency,
    /// `opening`, `established`, `closing`, `closed`, `reset` (TCP); `answered`, `unanswered`.
    pub state: &'static str,
    /// Seconds until it expires unless refreshed.
    pub expires_in: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcp_states() {
        let t = Timeouts::default();
        let syn = TcpFlags {
            syn: true,
            ..TcpFlags::default()
        };
        let ack = TcpFlags::default();
        let fin = TcpFlags {
            fin: true,
            ..TcpFlags::default()
        };
        let s = advance(0, Direction::Out, Some(syn));
        assert_eq!(timeout(Proto::Tcp, s, &t), 240);
        let s = advance(s, Direction::In, Some(syn));
        assert_eq!(timeout(Proto::Tcp, s, &t), 7440);
        let s = advance(s, Direction::Out, Some(fin));
        assert_eq!(describe(Proto::Tcp, s), "closing");
        assert_eq!(timeout(Proto::Tcp, s, &t), 7440);
        let s = advance(s, Direction::In, Some(fin));
        assert_eq!(timeout(Proto::Tcp, s, &t), 240);
        let s = advance(s, Direction::In, Some(ack));
        assert_eq!(describe(Proto::Tcp, s), "closed");
    }

    #[test]
    fn udp_single_packet_is_short() {
        let t = Timeouts::default();
        let s = advance(0, Direction::Out, None);
        assert_eq!(timeout(Proto::Udp, s, &t), 30);
        assert_eq!(
            timeout(Proto::Udp, advance(s, Direction::Out, None), &t),
            300
        );
        assert_eq!(
            timeout(Proto::Udp, advance(s, Direction::In, None), &t),
            300
        );
    }
}
