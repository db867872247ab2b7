//! ICMP errors: translating those that pass through together with the packet they quote
//! (RFC 5508 REQ-3), and building the "administratively prohibited" error the engine sends
//! when it refuses a packet.

use std::net::Ipv4Addr;
use std::time::Instant;

use etherparse::icmpv4::DestUnreachableHeader;
use etherparse::{Icmpv4Type, PacketBuilder};
use tracing::trace;

use super::checksum::Delta;
use super::packet::{self, field, Headers, Side};
use super::session::Direction;
use super::table::Ep;
use super::{remote_port, DropReason, Nat, Outcome};

/// Longest quoted prefix (embedded IPv4 header with options, 20 transport bytes) whose changes
/// the outer ICMP checksum has to follow.
const QUOTE_WINDOW: usize = 60 + 20;

impl Nat {
    /// Translates an ICMP error going in `dir`: the outer address on the inside's side and the
    /// quoted packet's matching endpoint, with the quoted IPv4 and transport checksums and the
    /// outer ICMP checksum. The session it belongs to is not refreshed.
    pub(super) fn translate_icmp_error(
        &mut self,
        packet: &mut [u8],
        h: &Headers,
        dir: Direction,
        now: Instant,
    ) -> Result<Outcome, DropReason> {
        let start = h.ihl + field::ICMP_ERROR_PAYLOAD;
        let quoted = packet.get(start..h.len).ok_or(DropReason::Malformed)?;
        let e = match packet::parse_embedded(quoted) {
            Ok(e) => e,
            // An error about something the NAT never translates passes if it is not ours.
            Err(DropReason::UnsupportedProtocol(_)) if !self.icmp_error_is_ours(h, dir) => {
                return Ok(Outcome::Untouched)
            }
            Err(r) => return Err(r),
        };
        let (esrc, edst) = (Ipv4Addr::from(e.src), Ipv4Addr::from(e.dst));
        // (side of the quoted packet, its new address and port, side of the outer header, its
        // new address)
        let plan = match dir {
            Direction::In => {
                // The quoted packet is one the NAT sent out: external endpoint -> remote.
                let ext = Ep::new(esrc, e.src_port);
                let rem = Ep::new(edst, remote_port(e.proto, e.dst_port));
                let found = self.table.session_in(e.proto, ext, rem);
                if let Some(id) = self.live(found, now) {
                    let m = self.mapping_of(id);
                    self.last_forward = m.is_some_and(|m| m.is_forward());
                    let int = m.map(|m| m.int());
                    int.map(|int| (Side::Src, int.addr, Some(int.port), Side::Dst, int.addr))
                } else {
                    self.rules.netmap_in(esrc).map(|real| {
                        let outer = self.rules.netmap_in(Ipv4Addr::from(h.dst)).unwrap_or(real);
                        (Side::Src, real, None, Side::Dst, outer)
                    })
                }
            }
            Direction::Out => {
                // The quoted packet is one an inside host received: remote -> inside endpoint.
                let int = Ep::new(edst, e.dst_port);
                let rem = Ep::new(esrc, remote_port(e.proto, e.src_port));
                let found = self.table.session_out(e.proto, int, rem);
                if let Some(id) = self.live(found, now) {
                    let ext = self.mapping_of(id).map(|m| m.ext());
                    ext.map(|ext| (Side::Dst, ext.addr, Some(ext.port), Side::Src, ext.addr))
                } else {
                    self.rules.netmap_out(edst).map(|mapped| {
                        let outer = self
                            .rules
                            .netmap_out(Ipv4Addr::from(h.src))
                            .unwrap_or(mapped);
                        (Side::Dst, mapped, None, Side::Src, outer)
                    })
                }
            }
        };
        let Some((inner_side, inner_addr, inner_port, outer_side, outer_addr)) = plan else {
            return if self.icmp_error_is_ours(h, dir) {
                Err(DropReason::IcmpErrorUnmatched)
            } else {
                Ok(Outcome::Untouched)
            };
        };
        trace!(?dir, %inner_addr, ?inner_port, %outer_addr, "NAT ICMP error");

        // The quoted packet, following its changes in the outer ICMP checksum.
        let icmp = &mut packet[h.ihl..h.len];
        let (header, body) = icmp.split_at_mut(field::ICMP_ERROR_PAYLOAD);
        let window = body.len().min(e.ihl + 20).min(QUOTE_WINDOW);
        let mut before = [0u8; QUOTE_WINDOW];
        before[..window].copy_from_slice(&body[..window]);
        packet::rewrite(
            body,
            e.ihl,
            Some(e.proto),
            inner_side,
            inner_addr.octets(),
            inner_port,
        );
        let mut delta = Delta::default();
        delta.region(&before[..window], &body[..window]);
        packet::set_icmp_checksum(header, delta.apply(packet::icmp_checksum(header)));

        // The outer header (ICMP's checksum does not cover it).
        packet::rewrite(packet, h.ihl, None, outer_side, outer_addr.octets(), None);
        self.counters.icmp_errors_translated += 1;
        Ok(Outcome::Translated)
    }

    fn mapping_of(&self, session: u32) -> Option<super::table::Mapping> {
        let s = self.table.sessions.get(session)?;
        self.table.mappings.get(s.mapping).copied()
    }

    /// Whether an untranslatable ICMP error concerns the NAT (and must not pass unchanged): an
    /// inbound one to an external address, an outbound one from a masqueraded host.
    fn icmp_error_is_ours(&self, h: &Headers, dir: Direction) -> bool {
        match dir {
            Direction::In => self.rules.is_external(Ipv4Addr::from(h.dst)),
            Direction::Out => self
                .rules
                .masquerade_for(Ipv4Addr::from(h.src), Ipv4Addr::from(h.dst))
                .is_some(),
        }
    }
}

/// An ICMP "destination unreachable, communication administratively prohibited" (type 3 code
/// 13) from `src` to `dst`, quoting `original` (already cut to fit in 576 bytes).
pub(crate) fn prohibited(original: &[u8], src: Ipv4Addr, dst: Ipv4Addr) -> Option<Vec<u8>> {
    let builder = PacketBuilder::ipv4(src.octets(), dst.octets(), 64).icmpv4(
        Icmpv4Type::DestinationUnreachable(DestUnreachableHeader::FilterProhibited),
    );
    let mut out = Vec::with_capacity(builder.size(original.len()));
    builder.write(&mut out, original).ok()?;
    Some(out)
}
