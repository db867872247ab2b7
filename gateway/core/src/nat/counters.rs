//! What the NAT translated, refused and why, for `sitelink-gateway nat` and status output.

use serde::Serialize;

use super::DropReason;

/// Packets dropped, by reason.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Drops {
    /// Not a well-formed IPv4 packet (or a truncated transport header).
    pub malformed: u64,
    /// Fragments of flows that need port translation (the engine does not reassemble).
    pub fragment: u64,
    /// Protocols other than TCP, UDP and ICMP queries where port translation applies.
    pub unsupported_protocol: u64,
    /// Inbound packets to an external address that match no session, mapping or forward.
    pub no_session: u64,
    /// Inbound packets refused by their mapping's filtering behaviour.
    pub filtered: u64,
    /// No external port left in the pool.
    pub ports_exhausted: u64,
    /// The session limit was reached.
    pub session_limit: u64,
    /// The inside host holds its quota of external ports.
    pub host_quota: u64,
    /// ICMP errors about a flow the NAT has no session for.
    pub icmp_error_unmatched: u64,
}

impl Drops {
    pub(crate) fn count(&mut self, reason: DropReason) {
        let c = match reason {
            DropReason::Malformed => &mut self.malformed,
            DropReason::Fragment => &mut self.fragment,
            DropReason::UnsupportedProtocol(_) => &mut self.unsupported_protocol,
            DropReason::NoSession => &mut self.no_session,
            DropReason::Filtered => &mut self.filtered,
            DropReason::PortsExhausted => &mut self.ports_exhausted,
            DropReason::SessionLimit => &mut self.session_limit,
            DropReason::HostQuota => &mut self.host_quota,
            DropReason::IcmpErrorUnmatched => &mut self.icmp_error_unmatched,
        };
        *c += 1;
    }
}

/// Counters of one NAT engine.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct NatCounters {
    /// Outbound packets translated (masquerade, forward replies, netmap).
    pub translated_out: u64,
    /// Inbound packets translated.
    pub translated_in: u64,
    /// Of the outbound packets, those sent back inside through an external address.
    pub hairpinned: u64,
    /// ICMP errors translated together with the packet they quote.
    pub icmp_errors_translated: u64,
    /// Packets no rule applies to, passed unchanged (including IPv6).
    pub passed: u64,
    /// Packets dropped, by reason.
    pub dropped: Drops,
    /// Sessions created.
    pub sessions_created: u64,
    /// Sessions removed after their idle timeout.
    pub sessions_expired: u64,
    /// Mappings (external ports) created.
    pub mappings_created: u64,
    /// Mappings ended with their last session.
    pub mappings_ended: u64,
    /// Sessions now.
    pub sessions: u64,
    /// Mappings now.
    pub mappings: u64,
    /// New flows refused because the session limit was reached.
    pub session_limit_hits: u64,
    /// New mappings refused because the host had its quota of ports.
    pub host_quota_hits: u64,
    /// New mappings refused because the pool had no free port.
    pub port_exhaustion_hits: u64,
    /// ICMP "administratively prohibited" errors sent for refused packets.
    pub icmp_replies_sent: u64,
    /// Such errors not sent because of the rate limit.
    pub icmp_replies_rate_limited: u64,
}
