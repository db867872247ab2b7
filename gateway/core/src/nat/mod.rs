//! A userspace NAT44 engine, sans-IO: packets and `now` in; verdicts, rewritten packets and
//! events out.
//!
//! [`Nat`] sits between the inside (LAN or tunnel side) and the outside. The driver gives it each
//! IPv4 packet as a `&mut [u8]`, which it rewrites in place:
//!
//! - [`Nat::translate_outbound`] for packets leaving the inside,
//! - [`Nat::translate_inbound`] for packets arriving from the outside,
//!
//! and acts on the returned [`Verdict`]: send the packet on, send it back inside (hairpin), drop
//! it, or drop it and send the ICMP error the engine built back to the sender. Whenever `now`
//! reaches [`Nat::poll_timeout`] it calls [`Nat::handle_timeout`], which expires idle sessions
//! and frees held ports; [`Nat::poll_event`] drains notable events (limits reached). Nothing
//! here reads the clock, opens a socket or asks the OS for randomness: port choice is keyed by
//! the seed given to [`Nat::new`].
//!
//! ```text
//! loop {
//!     packet from inside  -> match nat.translate_outbound(&mut p, now) { .. }
//!     packet from outside -> match nat.translate_inbound(&mut p, now) { .. }
//!     timer at nat.poll_timeout() -> nat.handle_timeout(now)
//!     while let Some(e) = nat.poll_event() { log or alert }
//! }
//! ```
//!
//! What it does, with the RFC behind each part:
//! - masquerade (source NAT with port translation) onto one address or a pool; port
//!   preservation when the port is free; an inside host keeps one pool address ("paired",
//!   RFC 4787 REQ-2) until its ports there run out; well-known source ports map to well-known
//!   ports (REQ-3); a released port waits `port_reuse_delay` seconds before reuse;
//! - mapping and filtering behaviour per rule (RFC 4787 sections 4.1 and 5), with the presets
//!   full cone, restricted cone, port-restricted cone and symmetric;
//! - port forwards (destination NAT) and static netmaps of a prefix onto another, both ways;
//! - idle timeouts per protocol and state (RFC 4787 REQ-5, RFC 5382 REQ-5, RFC 5508 REQ-1);
//!   outbound packets refresh a session, inbound ones that pass the filter do too, ICMP errors
//!   never do;
//! - a session limit and per-host port quotas (RFC 6888 REQ-4), with counters; a packet refused
//!   for lack of resources gets an ICMP "communication administratively prohibited" (type 3 code
//!   13) back while existing flows go on;
//! - incremental checksum updates (RFC 1624); ICMP errors translated with the packet they quote
//!   (RFC 5508); hairpinning (RFC 4787 REQ-9).
//!
//! Not done: IPv6 (NAT66/NAT64; IPv6 packets pass unchanged), reassembly (fragments of
//! port-translated flows are dropped; netmap translates them), ALGs, and sharing one external
//! port between symmetric mappings to different remotes (each mapping owns its port).

mod checksum;
mod config;
mod counters;
mod icmp;
mod packet;
mod ports;
mod rules;
mod session;
mod table;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, VecDeque};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use tracing::{debug, trace};

pub use config::{
    Dependency, ForwardProto, ForwardTarget, MasqueradeRule, NatConfig, NatConfigError, NetmapRule,
    PortForward, PortRange, Prefix, Preset, Timeouts, MAX_SESSIONS,
};
pub use counters::{Drops, NatCounters};
pub use packet::Proto;
pub use session::{SessionInfo, SessionKind};

use packet::{Headers, Side, Transport};
use ports::PortSpaces;
use rules::Rules;
use session::Direction;
use table::{Ep, Mapping, Table};

/// How often [`Nat::handle_timeout`] wants to run while there is state to expire.
pub const SWEEP_INTERVAL: Duration = Duration::from_millis(250);
/// Each sweep looks at this share of the session slots (so the whole table once a second).
const SWEEP_PARTS: usize = 4;
/// ...but at least this many, so small tables are swept whole each time.
const SWEEP_MIN: usize = 65_536;
/// Events kept for [`Nat::poll_event`]; more are dropped until the driver catches up.
const MAX_EVENTS: usize = 64;
/// ICMP errors quote as much of the packet as fits in 576 bytes (RFC 1812 4.3.2.3).
const MAX_ERROR_LEN: usize = 576;

/// Why a packet was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DropReason {
    /// Not a well-formed IPv4 packet, or its transport header is cut short.
    #[error("malformed packet")]
    Malformed,
    /// A fragment of a flow that needs port translation; the engine does not reassemble.
    #[error("fragment of a port-translated flow")]
    Fragment,
    /// A protocol the engine cannot port-translate (it translates TCP, UDP and ICMP queries).
    #[error("protocol {0} cannot be port-translated")]
    UnsupportedProtocol(u8),
    /// An inbound packet for an external address that matches no session, mapping or forward.
    #[error("no session")]
    NoSession,
    /// An inbound packet that its mapping's filtering behaviour refuses.
    #[error("refused by the mapping's filter")]
    Filtered,
    /// No free external port in the pool.
    #[error("no free external port")]
    PortsExhausted,
    /// The session limit is reached.
    #[error("session limit reached")]
    SessionLimit,
    /// The inside host holds its quota of external ports.
    #[error("host port quota reached")]
    HostQuota,
    /// An ICMP error about a flow the engine does not know.
    #[error("ICMP error for no known session")]
    IcmpErrorUnmatched,
}

/// What to do with a packet after translation.
#[must_use]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Translated in place: send it on in the direction it was going.
    Forward,
    /// No NAT rule applies: unchanged, send it on.
    Pass,
    /// An outbound packet to one of the NAT's own external endpoints, translated in place
    /// (source to its external endpoint, destination to the inside host): send it back inside.
    Hairpin,
    /// Drop it.
    Drop(DropReason),
    /// Drop it, and send `packet` (an ICMP error the engine built) back inside to its sender.
    Reply {
        /// Why the packet was refused.
        reason: DropReason,
        /// The IPv4 ICMP "destination unreachable, communication administratively prohibited".
        packet: Vec<u8>,
    },
}

/// Something the operator may want to hear about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NatEvent {
    /// A new flow or mapping was refused: the session limit, a host's port quota, or the pool's
    /// ports ran out.
    LimitReached {
        /// Which limit.
        reason: DropReason,
        /// The inside host whose flow was refused.
        host: Ipv4Addr,
    },
}

/// What the packet path did, before counting.
enum Outcome {
    Translated,
    Hairpin,
    Untouched,
    /// Dropped after rewriting had begun (no ICMP reply: the original is gone).
    Dropped(DropReason),
}

/// The NAT engine. See the [module docs](self) for how a driver runs it.
pub struct Nat {
    rules: Rules,
    table: Table,
    ports: PortSpaces,
    pool_index: HashMap<Ipv4Addr, u32>,
    counters: NatCounters,
    events: VecDeque<NatEvent>,
    epoch: Instant,
    hasher: ahash::RandomState,
    allocations: u64,
    next_sweep: Instant,
    sweep_cursor: usize,
    reply_window: (u32, u32),
    /// Whether outbound packets may open new masquerade mappings (see
    /// [`Nat::translate_outbound_existing`]).
    new_mappings: bool,
    /// Whether the last packet translated inbound belongs to a port forward's session.
    last_forward: bool,
}

impl std::fmt::Debug for Nat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Nat")
            .field("sessions", &self.table.sessions.len())
            .field("mappings", &self.table.mappings.len())
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

/// SplitMix64: spreads one seed over the hasher's four keys.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Remote ICMP endpoints have no port: the query id belongs to the inside/external side.
fn remote_port(proto: Proto, port: u16) -> u16 {
    if proto == Proto::Icmp {
        0
    } else {
        port
    }
}

/// The transport whose checksum covers the addresses, for address-only rewrites (netmap).
fn l4_of(h: &Headers) -> Option<Proto> {
    match h.transport {
        Transport::Tcp { .. } => Some(Proto::Tcp),
        Transport::Udp { .. } => Some(Proto::Udp),
        _ => None,
    }
}

impl Nat {
    /// An engine for `config`. `seed` keys the hash tables and the port choice (pass a random
    /// value from the I/O layer; the same seed gives the same choices). `now` is its epoch.
    pub fn new(config: &NatConfig, seed: u64, now: Instant) -> Result<Self, NatConfigError> {
        let (rules, reservations) = Rules::compile(config)?;
        let mut s = seed;
        let hasher = ahash::RandomState::with_seeds(
            splitmix(&mut s),
            splitmix(&mut s),
            splitmix(&mut s),
            splitmix(&mut s),
        );
        let pool_index = rules
            .pool
            .iter()
            .enumerate()
            .map(|(i, a)| (*a, i as u32))
            .collect();
        let ports = PortSpaces::new(rules.pool.clone(), reservations, rules.port_reuse_delay)
            .with_range(config.port_range.map(|r| (r.lo, r.hi)));
        Ok(Self {
            table: Table::new(&hasher),
            rules,
            ports,
            pool_index,
            counters: NatCounters::default(),
            events: VecDeque::new(),
            epoch: now,
            hasher,
            allocations: 0,
            next_sweep: now,
            sweep_cursor: 0,
            reply_window: (0, 0),
            new_mappings: true,
            last_forward: false,
        })
    }

    /// Translates a packet leaving the inside, in place.
    pub fn translate_outbound(&mut self, packet: &mut [u8], now: Instant) -> Verdict {
        self.translate(packet, now, Direction::Out)
    }

    /// Translates a packet arriving from the outside, in place.
    pub fn translate_inbound(&mut self, packet: &mut [u8], now: Instant) -> Verdict {
        self.translate(packet, now, Direction::In)
    }

    /// Like [`Nat::translate_outbound`], but a packet that would open a new masquerade mapping
    /// passes unchanged instead: only existing sessions, netmaps and ICMP errors translate.
    pub(crate) fn translate_outbound_existing(
        &mut self,
        packet: &mut [u8],
        now: Instant,
    ) -> Verdict {
        self.new_mappings = false;
        let v = self.translate(packet, now, Direction::Out);
        self.new_mappings = true;
        v
    }

    /// Whether the last packet [`Nat::translate_inbound`] translated (or ICMP error about a
    /// flow) belongs to a port forward's session.
    pub(crate) fn last_inbound_was_forward(&self) -> bool {
        self.last_forward
    }

    fn translate(&mut self, packet: &mut [u8], now: Instant, dir: Direction) -> Verdict {
        self.last_forward = false;
        if packet::is_ipv6(packet) {
            self.counters.passed += 1;
            return Verdict::Pass;
        }
        let h = match packet::parse(packet) {
            Ok(h) => h,
            Err(r) => return self.dropped(r),
        };
        let result = if h.transport == Transport::IcmpError {
            self.translate_icmp_error(packet, &h, dir, now)
        } else {
            match dir {
                Direction::Out => self.outbound(packet, &h, now),
                Direction::In => self.inbound(packet, &h, now),
            }
        };
        match result {
            Ok(Outcome::Translated) => {
                match dir {
                    Direction::Out => self.counters.translated_out += 1,
                    Direction::In => self.counters.translated_in += 1,
                }
                Verdict::Forward
            }
            Ok(Outcome::Hairpin) => {
                self.counters.translated_out += 1;
                self.counters.hairpinned += 1;
                Verdict::Hairpin
            }
            Ok(Outcome::Untouched) => {
                self.counters.passed += 1;
                Verdict::Pass
            }
            Ok(Outcome::Dropped(r)) => self.dropped(r),
            Err(
                r @ (DropReason::PortsExhausted | DropReason::SessionLimit | DropReason::HostQuota),
            ) if dir == Direction::Out => self.refuse(packet, &h, r, now),
            Err(r) => self.dropped(r),
        }
    }

    fn dropped(&mut self, reason: DropReason) -> Verdict {
        trace!(%reason, "NAT drop");
        self.counters.dropped.count(reason);
        Verdict::Drop(reason)
    }

    /// Drops an outbound packet refused for lack of resources and answers with ICMP type 3
    /// code 13, within the rate limit.
    fn refuse(&mut self, packet: &[u8], h: &Headers, reason: DropReason, now: Instant) -> Verdict {
        self.counters.dropped.count(reason);
        let second = self.floor(now);
        if self.reply_window.0 != second {
            self.reply_window = (second, 0);
        }
        if self.reply_window.1 >= self.rules.icmp_reply_rate {
            self.counters.icmp_replies_rate_limited += 1;
            return Verdict::Drop(reason);
        }
        let src = self.rules.reply_source.unwrap_or(Ipv4Addr::from(h.dst));
        let quoted = &packet[..h.len.min(MAX_ERROR_LEN - 28)];
        match icmp::prohibited(quoted, src, Ipv4Addr::from(h.src)) {
            Some(reply) => {
                self.reply_window.1 += 1;
                self.counters.icmp_replies_sent += 1;
                Verdict::Reply {
                    reason,
                    packet: reply,
                }
            }
            None => Verdict::Drop(reason),
        }
    }

    fn outbound(
        &mut self,
        packet: &mut [u8],
        h: &Headers,
        now: Instant,
    ) -> Result<Outcome, DropReason> {
        let src = Ipv4Addr::from(h.src);
        let dst = Ipv4Addr::from(h.dst);
        let ports = if h.fragmented { None } else { h.ports() };
        if let Some((proto, sport, dport)) = ports {
            let int = Ep::new(src, sport);
            let rem = Ep::new(dst, remote_port(proto, dport));
            let found = self.table.session_out(proto, int, rem);
            if let Some(id) = self.live(found, now) {
                let m = self.touch(id, Direction::Out, h, now);
                let ext = m.ext();
                trace!(?proto, %int.addr, int.port, %ext.addr, ext.port, "NAT out");
                packet::rewrite(
                    packet,
                    h.ihl,
                    Some(proto),
                    Side::Src,
                    ext.addr.octets(),
                    Some(ext.port),
                );
                return Ok(self.hairpin(packet, dst, now));
            }
        }
        if let Some(mapped) = self.rules.netmap_out(src) {
            trace!(%src, %mapped, "netmap out");
            packet::rewrite(packet, h.ihl, l4_of(h), Side::Src, mapped.octets(), None);
            return Ok(Outcome::Translated);
        }
        let Some(rule) = self
            .rules
            .masquerade_for(src, dst)
            .filter(|_| self.new_mappings)
        else {
            return Ok(Outcome::Untouched);
        };
        if h.fragmented {
            return Err(DropReason::Fragment);
        }
        let Some((proto, sport, dport)) = ports else {
            let number = match h.transport {
                Transport::Other(p) => p,
                _ => 1,
            };
            return Err(DropReason::UnsupportedProtocol(number));
        };
        let int = Ep::new(src, sport);
        let rem = Ep::new(dst, remote_port(proto, dport));
        self.check_session_limit(src)?;
        let mapping = self.mapping_for(rule, proto, int, rem, now)?;
        let m = self.new_session(mapping, rem, Direction::Out, h, now);
        let ext = m.ext();
        trace!(?proto, %int.addr, int.port, %ext.addr, ext.port, "NAT out (new)");
        packet::rewrite(
            packet,
            h.ihl,
            Some(proto),
            Side::Src,
            ext.addr.octets(),
            Some(ext.port),
        );
        Ok(self.hairpin(packet, dst, now))
    }

    /// After source translation: a packet to one of our external addresses goes back inside.
    fn hairpin(&mut self, packet: &mut [u8], dst: Ipv4Addr, now: Instant) -> Outcome {
        if !self.rules.is_external(dst) {
            return Outcome::Translated;
        }
        let h = match packet::parse(packet) {
            Ok(h) => h,
            Err(r) => return Outcome::Dropped(r),
        };
        match self.inbound(packet, &h, now) {
            Ok(Outcome::Translated) => {
                trace!(%dst, "NAT hairpin");
                Outcome::Hairpin
            }
            Ok(Outcome::Dropped(r)) | Err(r) => Outcome::Dropped(r),
            Ok(_) => Outcome::Dropped(DropReason::NoSession),
        }
    }

    fn inbound(
        &mut self,
        packet: &mut [u8],
        h: &Headers,
        now: Instant,
    ) -> Result<Outcome, DropReason> {
        let src = Ipv4Addr::from(h.src);
        let dst = Ipv4Addr::from(h.dst);
        let ports = if h.fragmented { None } else { h.ports() };
        if let Some((proto, sport, dport)) = ports {
            let ext = Ep::new(dst, dport);
            let rem = Ep::new(src, remote_port(proto, sport));
            let found = self.table.session_in(proto, ext, rem);
            if let Some(id) = self.live(found, now) {
                let m = self.touch(id, Direction::In, h, now);
                self.last_forward = m.is_forward();
                let int = m.int();
                trace!(?proto, %ext.addr, ext.port, %int.addr, int.port, "NAT in");
                packet::rewrite(
                    packet,
                    h.ihl,
                    Some(proto),
                    Side::Dst,
                    int.addr.octets(),
                    Some(int.port),
                );
                return Ok(Outcome::Translated);
            }
        }
        if let Some(real) = self.rules.netmap_in(dst) {
            trace!(%dst, %real, "netmap in");
            packet::rewrite(packet, h.ihl, l4_of(h), Side::Dst, real.octets(), None);
            return Ok(Outcome::Translated);
        }
        let external = self.rules.is_external(dst);
        let Some((proto, sport, dport)) = ports else {
            if !external {
                return Ok(Outcome::Untouched);
            }
            return Err(match h.transport {
                Transport::Other(p) => DropReason::UnsupportedProtocol(p),
                _ if h.fragmented => DropReason::Fragment,
                _ => DropReason::NoSession,
            });
        };
        let ext = Ep::new(dst, dport);
        let rem = Ep::new(src, remote_port(proto, sport));
        if let Some(id) = self.table.mapping_by_ext(proto, ext) {
            let Some(m) = self.table.mappings.get(id).copied() else {
                return Err(DropReason::NoSession);
            };
            let allowed = match m.filtering() {
                Dependency::EndpointIndependent => true,
                Dependency::AddressDependent => self.table.permits(id, src),
                Dependency::AddressAndPortDependent => false,
            };
            // The inside endpoint may already talk to this remote through another mapping
            // (address-dependent mapping); one flow cannot have two.
            if !allowed || self.table.session_out(proto, m.int(), rem).is_some() {
                return Err(DropReason::Filtered);
            }
            self.check_session_limit(m.int().addr)?;
            let int = self.new_session(id, rem, Direction::In, h, now).int();
            trace!(?proto, %ext.addr, ext.port, %int.addr, int.port, "NAT in (filter let in)");
            packet::rewrite(
                packet,
                h.ihl,
                Some(proto),
                Side::Dst,
                int.addr.octets(),
                Some(int.port),
            );
            return Ok(Outcome::Translated);
        }
        if let Some(f) = self.rules.forward_for(proto, dst, dport) {
            let int = Ep::new(f.to, f.to_port.unwrap_or(dport));
            if self.table.session_out(proto, int, rem).is_some() {
                return Err(DropReason::Filtered);
            }
            self.check_session_limit(f.to)?;
            let any = Ep::new(Ipv4Addr::UNSPECIFIED, 0);
            let ei = Dependency::EndpointIndependent;
            let id = self
                .table
                .insert_mapping(Mapping::new(proto, int, ext, any, ei, ei, true));
            self.counters.mappings_created += 1;
            self.new_session(id, rem, Direction::In, h, now);
            self.last_forward = true;
            trace!(?proto, %ext.addr, ext.port, %int.addr, int.port, "NAT in (forward)");
            packet::rewrite(
                packet,
                h.ihl,
                Some(proto),
                Side::Dst,
                int.addr.octets(),
                Some(int.port),
            );
            return Ok(Outcome::Translated);
        }
        if external {
            Err(DropReason::NoSession)
        } else {
            Ok(Outcome::Untouched)
        }
    }

    fn check_session_limit(&mut self, host: Ipv4Addr) -> Result<(), DropReason> {
        if self.table.sessions.len() >= self.rules.session_limit as usize {
            self.counters.session_limit_hits += 1;
            self.event(DropReason::SessionLimit, host);
            return Err(DropReason::SessionLimit);
        }
        Ok(())
    }

    fn event(&mut self, reason: DropReason, host: Ipv4Addr) {
        debug!(%reason, %host, "NAT limit reached");
        if self.events.len() < MAX_EVENTS {
            self.events
                .push_back(NatEvent::LimitReached { reason, host });
        }
    }

    /// The mapping a new flow from `int` to `rem` uses under masquerade rule `rule`: an
    /// existing one its behaviour allows, else a new one with a fresh external port.
    fn mapping_for(
        &mut self,
        rule: usize,
        proto: Proto,
        int: Ep,
        rem: Ep,
        now: Instant,
    ) -> Result<u32, DropReason> {
        let r = &self.rules.masquerade[rule];
        let (dep, filtering) = (r.mapping, r.filtering);
        if dep != Dependency::AddressAndPortDependent {
            if let Some(id) = self.table.mapping_by_int(proto, dep, int, rem) {
                return Ok(id);
            }
        }
        let quota = self.rules.host_port_quota;
        if quota != 0 && self.table.host_ports(int.addr) >= quota {
            self.counters.host_quota_hits += 1;
            self.event(DropReason::HostQuota, int.addr);
            return Err(DropReason::HostQuota);
        }
        let pool = &self.rules.masquerade[rule].pool;
        let n = pool.len();
        // Paired pooling: a host starts at the same pool address every time.
        let start = (self.hasher.hash_one(int.addr) % n as u64) as usize;
        self.allocations += 1;
        let hint = self.hasher.hash_one((proto, int, rem, self.allocations)) as u16;
        let mut ext = None;
        for k in 0..n {
            let p = pool[(start + k) % n];
            if let Some(port) = self.ports.allocate(p, proto, int.port, hint) {
                ext = Some(Ep::new(self.ports.addr(p), port));
                break;
            }
        }
        let Some(ext) = ext else {
            self.counters.port_exhaustion_hits += 1;
            self.event(DropReason::PortsExhausted, int.addr);
            return Err(DropReason::PortsExhausted);
        };
        let dep_ep = match dep {
            Dependency::EndpointIndependent => Ep::new(Ipv4Addr::UNSPECIFIED, 0),
            Dependency::AddressDependent => Ep::new(rem.addr, 0),
            Dependency::AddressAndPortDependent => rem,
        };
        let id = self
            .table
            .insert_mapping(Mapping::new(proto, int, ext, dep_ep, dep, filtering, false));
        self.counters.mappings_created += 1;
        debug!(
            ?proto,
            internal = %SocketAddrV4::new(int.addr, int.port),
            external = %SocketAddrV4::new(ext.addr, ext.port),
            mapping = %dep,
            filtering = %filtering,
            at = ?now.saturating_duration_since(self.epoch),
            "NAT mapping created"
        );
        Ok(id)
    }

    /// Adds a session of `mapping` with `rem`, in the state after its first packet.
    fn new_session(
        &mut self,
        mapping: u32,
        rem: Ep,
        dir: Direction,
        h: &Headers,
        now: Instant,
    ) -> Mapping {
        let m = self.table.mappings.get(mapping).copied();
        let Some(m) = m else {
            debug_assert!(false, "new session on a missing mapping");
            return Mapping::new(
                Proto::Udp,
                rem,
                rem,
                rem,
                Dependency::EndpointIndependent,
                Dependency::EndpointIndependent,
                true,
            );
        };
        let state = session::advance(0, dir, h.tcp_flags());
        let expires =
            self.ceil(now)
                .saturating_add(session::timeout(m.proto, state, &self.rules.timeouts));
        self.table.insert_session(mapping, rem, state, expires);
        self.counters.sessions_created += 1;
        debug!(
            proto = ?m.proto,
            internal = %SocketAddrV4::new(m.int().addr, m.int().port),
            external = %SocketAddrV4::new(m.ext().addr, m.ext().port),
            remote = %SocketAddrV4::new(rem.addr, rem.port),
            forward = m.is_forward(),
            "NAT session created"
        );
        m
    }

    /// `id` if that session exists and has not expired (an expired one is removed now).
    fn live(&mut self, id: Option<u32>, now: Instant) -> Option<u32> {
        let id = id?;
        let expires = self.table.sessions.get(id)?.expires;
        if self.floor(now) >= expires {
            self.expire(id, now);
            return None;
        }
        Some(id)
    }

    /// Refreshes a session for a packet in `dir` and returns its mapping.
    fn touch(&mut self, id: u32, dir: Direction, h: &Headers, now: Instant) -> Mapping {
        let ceil = self.ceil(now);
        let t = self.rules.timeouts;
        if let Some(s) = self.table.sessions.get_mut(id) {
            s.state = session::advance(s.state, dir, h.tcp_flags());
            s.expires = ceil.saturating_add(session::timeout(s.proto, s.state, &t));
            if let Some(m) = self.table.mappings.get(s.mapping) {
                return *m;
            }
        }
        debug_assert!(false, "touched a missing session");
        let any = Ep::new(Ipv4Addr::UNSPECIFIED, 0);
        Mapping::new(
            Proto::Udp,
            any,
            any,
            any,
            Dependency::EndpointIndependent,
            Dependency::EndpointIndependent,
            true,
        )
    }

    /// Removes an expired session, and its mapping with its last session.
    fn expire(&mut self, id: u32, now: Instant) {
        let release_at = self.ceil(now);
        let Some((s, ended)) = self.table.remove_session(id) else {
            return;
        };
        self.counters.sessions_expired += 1;
        debug!(proto = ?s.proto, remote = %SocketAddrV4::new(s.remote().addr, s.remote().port), "NAT session expired");
        if let Some(m) = ended {
            self.counters.mappings_ended += 1;
            let ext = m.ext();
            debug!(proto = ?m.proto, internal = %SocketAddrV4::new(m.int().addr, m.int().port), external = %SocketAddrV4::new(ext.addr, ext.port), "NAT mapping ended");
            if !m.is_forward() {
                if let Some(&p) = self.pool_index.get(&ext.addr) {
                    self.ports.release(p, m.proto, ext.port, release_at);
                }
            }
        }
    }

    /// Expires idle sessions and frees ports whose reuse delay is over. Call it when `now`
    /// reaches [`Nat::poll_timeout`]; calling it earlier does nothing.
    pub fn handle_timeout(&mut self, now: Instant) {
        if now < self.next_sweep {
            return;
        }
        self.next_sweep = now + SWEEP_INTERVAL;
        let floor = self.floor(now);
        let slots = self.table.sessions.slots();
        let budget = slots.div_ceil(SWEEP_PARTS).max(SWEEP_MIN).min(slots);
        for _ in 0..budget {
            if self.sweep_cursor >= slots {
                self.sweep_cursor = 0;
            }
            let id = self.sweep_cursor as u32;
            self.sweep_cursor += 1;
            if self
                .table
                .sessions
                .get(id)
                .is_some_and(|s| floor >= s.expires)
            {
                self.expire(id, now);
            }
        }
        self.ports.expire(floor);
    }

    /// When [`Nat::handle_timeout`] should next run; `None` while there is nothing to expire.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        (self.table.sessions.len() > 0 || self.ports.held() > 0).then_some(self.next_sweep)
    }

    /// The next event, oldest first.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<NatEvent> {
        self.events.pop_front()
    }

    /// The live sessions, for listings (`sitelink-gateway nat [--json]`).
    pub fn sessions(&self, now: Instant) -> impl Iterator<Item = SessionInfo> + '_ {
        let floor = self.floor(now);
        self.table.sessions.iter().filter_map(move |(_, s)| {
            if s.expires <= floor {
                return None;
            }
            let m = self.table.mappings.get(s.mapping)?;
            let (int, ext, rem) = (m.int(), m.ext(), s.remote());
            Some(SessionInfo {
                proto: s.proto,
                kind: if m.is_forward() {
                    SessionKind::Forward
                } else {
                    SessionKind::Masquerade
                },
                internal: SocketAddrV4::new(int.addr, int.port),
                external: SocketAddrV4::new(ext.addr, ext.port),
                remote: SocketAddrV4::new(rem.addr, rem.port),
                mapping: m.mapping_dep(),
                filtering: m.filtering(),
                state: session::describe(s.proto, s.state),
                expires_in: s.expires - floor,
            })
        })
    }

    /// The counters, with the current numbers of sessions and mappings.
    #[must_use]
    pub fn counters(&self) -> NatCounters {
        NatCounters {
            sessions: self.table.sessions.len() as u64,
            mappings: self.table.mappings.len() as u64,
            ..self.counters
        }
    }

    /// Heap bytes the engine holds for sessions, mappings, indices and port bitmaps (computed
    /// from capacities, as hashbrown lays them out).
    #[must_use]
    pub fn heap_bytes(&self) -> usize {
        self.table.heap_bytes() + self.ports.heap_bytes()
    }

    fn elapsed(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.epoch)
    }

    /// Whole seconds since the epoch, rounded down (for "has it expired").
    fn floor(&self, now: Instant) -> u32 {
        u32::try_from(self.elapsed(now).as_secs()).unwrap_or(u32::MAX / 2)
    }

    /// Whole seconds since the epoch, rounded up (for "expires at", so timeouts are never cut).
    fn ceil(&self, now: Instant) -> u32 {
        let d = self.elapsed(now);
        let s = u32::try_from(d.as_secs()).unwrap_or(u32::MAX / 2);
        s + u32::from(d.subsec_nanos() > 0)
    }
}
