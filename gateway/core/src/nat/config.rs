//! The `[nat]` config section.
//!
//! ```toml
//! [nat]
//! session_limit = 65536
//! host_port_quota = 2048
//!
//! [nat.timeouts]
//! udp = 300
//!
//! [[nat.netmap]]
//! real = "192.168.1.0/24"
//! mapped = "10.10.1.0/24"
//!
//! [[nat.masquerade]]
//! source = ["192.168.0.0/16"]
//! pool = ["203.0.113.1", "203.0.113.8/30"]
//! preset = "port-restricted-cone"
//!
//! [[nat.forward]]
//! proto = "tcp"
//! external_port = 8443
//! to = "192.168.1.10:443"
//! ```
//!
//! [`NatConfig::validate`] checks a parsed section; [`super::Nat::new`] calls it.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::str::FromStr;

use ipnet::Ipv4Net;
use serde::Deserialize;

/// The `[nat]` section: every NAT rule of one translation point (one `Nat`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatConfig {
    /// Static 1:1 maps of a whole prefix onto another of the same length, both directions and
    /// without state (`[[nat.netmap]]`). They take precedence over masquerading.
    #[serde(default)]
    pub netmap: Vec<NetmapRule>,
    /// Source NAT with port translation for packets leaving the inside (`[[nat.masquerade]]`);
    /// the first rule whose `source` matches applies.
    #[serde(default)]
    pub masquerade: Vec<MasqueradeRule>,
    /// Port forwards (destination NAT) for packets arriving from the outside (`[[nat.forward]]`).
    #[serde(default)]
    pub forward: Vec<PortForward>,
    /// Idle timeouts of sessions, per protocol and state.
    #[serde(default)]
    pub timeouts: Timeouts,
    /// Most sessions (flows) at once; new flows are refused past it and counted.
    #[serde(default = "default_session_limit")]
    pub session_limit: u32,
    /// Most external ports (mappings, over all protocols) one inside host may hold (RFC 6888
    /// REQ-4); 0 means no per-host limit.
    #[serde(default = "default_host_port_quota")]
    pub host_port_quota: u32,
    /// Seconds an external port stays unused after its mapping ends before it is handed out
    /// again.
    #[serde(default = "default_port_reuse_delay")]
    pub port_reuse_delay: u32,
    /// Source address of the ICMP errors the NAT sends to inside hosts whose packets it cannot
    /// translate; unset: the destination address of the refused packet.
    #[serde(default)]
    pub reply_source: Option<Ipv4Addr>,
    /// Most ICMP errors the NAT sends per second (the rest are not sent, and counted).
    #[serde(default = "default_icmp_reply_rate")]
    pub icmp_reply_rate: u32,
    /// External ports (and ICMP query ids) masquerade mappings use, `"lo-hi"`; unset: 1-1023
    /// for inside ports below 1024 and 1024-65535 for the others (RFC 4787 REQ-3). Set it when
    /// the pool addresses are also used by local services, so NAT ports and theirs stay apart.
    #[serde(default)]
    pub port_range: Option<PortRange>,
}

impl Default for NatConfig {
    fn default() -> Self {
        Self {
            netmap: Vec::new(),
            masquerade: Vec::new(),
            forward: Vec::new(),
            timeouts: Timeouts::default(),
            session_limit: default_session_limit(),
            host_port_quota: default_host_port_quota(),
            port_reuse_delay: default_port_reuse_delay(),
            reply_source: None,
            icmp_reply_rate: default_icmp_reply_rate(),
            port_range: None,
        }
    }
}

fn default_session_limit() -> u32 {
    1 << 20
}
fn default_host_port_quota() -> u32 {
    4096
}
fn default_port_reuse_delay() -> u32 {
    120
}
fn default_icmp_reply_rate() -> u32 {
    100
}

/// `[[nat.netmap]]`: `real` on the inside appears as `mapped` on the outside, host bits kept.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetmapRule {
    /// The prefix as the inside hosts have it (sources of outbound packets are rewritten from it).
    pub real: Ipv4Net,
    /// The prefix the outside sees (destinations of inbound packets are rewritten from it);
    /// same length as `real`.
    pub mapped: Ipv4Net,
}

/// `[[nat.masquerade]]`: source NAT with port translation onto a pool of external addresses.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MasqueradeRule {
    /// Inside source prefixes (or single addresses) the rule applies to; empty: every source.
    #[serde(default)]
    pub source: Vec<Prefix>,
    /// Destination prefixes the rule applies to; empty: every destination. With it, flows to
    /// different places can leave from different addresses (a LAN address towards the LAN, the
    /// WAN address towards the internet).
    #[serde(default)]
    pub destination: Vec<Prefix>,
    /// External addresses: single addresses or prefixes (a prefix shorter than /31 loses its
    /// network and broadcast addresses). An inside host keeps one address while it has ports.
    pub pool: Vec<Prefix>,
    /// A NAT type: `full-cone`, `restricted-cone`, `port-restricted-cone` (the default when
    /// neither this nor `mapping`/`filtering` is set) or `symmetric`.
    #[serde(default)]
    pub preset: Option<Preset>,
    /// Mapping behaviour (RFC 4787 section 4.1) instead of a preset: `endpoint-independent`,
    /// `address-dependent` or `address-and-port-dependent`.
    #[serde(default)]
    pub mapping: Option<Dependency>,
    /// Filtering behaviour (RFC 4787 section 5) instead of a preset, same values as `mapping`.
    #[serde(default)]
    pub filtering: Option<Dependency>,
}

/// `[[nat.forward]]`: inbound connections to an external port go to an inside host.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortForward {
    /// `tcp` or `udp`.
    pub proto: ForwardProto,
    /// The port outside hosts connect to.
    pub external_port: u16,
    /// The external address the forward listens on; unset: every masquerade pool address.
    #[serde(default)]
    pub external_addr: Option<Ipv4Addr>,
    /// The inside host, `"ip:port"`, or `"ip"` to keep the port.
    pub to: ForwardTarget,
    /// Gateway only: the source address forwarded connections get on their way to `to` (e.g.
    /// the gateway's tunnel address), so that a target without a route back through this
    /// gateway (a host in another office, a remote worker) answers through the tunnel. Unset:
    /// the client's own address is kept. The engine itself ignores it.
    #[serde(default)]
    pub source: Option<Ipv4Addr>,
}

/// Idle timeouts, in seconds. The minimums are the RFCs' and are enforced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Timeouts {
    /// UDP flows that have seen a reply or more than one packet (at least 120, RFC 4787 REQ-5).
    #[serde(default = "default_udp")]
    pub udp: u32,
    /// A UDP flow of a single unanswered packet.
    #[serde(default = "default_udp_initial")]
    pub udp_initial: u32,
    /// Established TCP connections (at least 7440 = 2 h 4 min, RFC 5382 REQ-5).
    #[serde(default = "default_tcp_established")]
    pub tcp_established: u32,
    /// TCP connections opening, closing or reset (at least 240 = 4 min, RFC 5382 REQ-5).
    #[serde(default = "default_tcp_transitory")]
    pub tcp_transitory: u32,
    /// ICMP query identifiers (at least 60, RFC 5508 REQ-1).
    #[serde(default = "default_icmp")]
    pub icmp: u32,
}

fn default_udp() -> u32 {
    300
}
fn default_udp_initial() -> u32 {
    30
}
fn default_tcp_established() -> u32 {
    7440
}
fn default_tcp_transitory() -> u32 {
    240
}
fn default_icmp() -> u32 {
    60
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            udp: default_udp(),
            udp_initial: default_udp_initial(),
            tcp_established: default_tcp_established(),
            tcp_transitory: default_tcp_transitory(),
            icmp: default_icmp(),
        }
    }
}

/// Which parts of the remote endpoint a mapping or a filter depends on (RFC 4787 terms).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Dependency {
    /// Mapping: one external port per inside endpoint, whatever the destination. Filtering:
    /// anyone may send to it.
    EndpointIndependent,
    /// Depends on the remote address: mappings per destination address; only addresses the
    /// inside endpoint has sent to may send back.
    AddressDependent,
    /// Depends on the remote address and port.
    AddressAndPortDependent,
}

/// The classic NAT types as mapping and filtering behaviours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Preset {
    /// Endpoint-independent mapping and filtering.
    FullCone,
    /// Endpoint-independent mapping, address-dependent filtering.
    RestrictedCone,
    /// Endpoint-independent mapping, address-and-port-dependent filtering.
    PortRestrictedCone,
    /// Address-and-port-dependent mapping and filtering.
    Symmetric,
}

impl Preset {
    /// `(mapping, filtering)` of this NAT type.
    pub fn behaviour(self) -> (Dependency, Dependency) {
        use Dependency::*;
        match self {
            Preset::FullCone => (EndpointIndependent, EndpointIndependent),
            Preset::RestrictedCone => (EndpointIndependent, AddressDependent),
            Preset::PortRestrictedCone => (EndpointIndependent, AddressAndPortDependent),
            Preset::Symmetric => (AddressAndPortDependent, AddressAndPortDependent),
        }
    }
}

/// Protocols a port forward can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ForwardProto {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

/// An IPv4 prefix written as `"a.b.c.d/n"` or a single address `"a.b.c.d"` (a /32).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct Prefix(pub Ipv4Net);

impl TryFrom<String> for Prefix {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl FromStr for Prefix {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if let Ok(net) = s.parse::<Ipv4Net>() {
            return Ok(Prefix(net));
        }
        s.parse::<Ipv4Addr>()
            .map(|a| Prefix(Ipv4Net::from(a)))
            .map_err(|_| format!("{s:?} is neither an IPv4 address nor an IPv4 prefix"))
    }
}

/// A forward's inside target: an address and optionally a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct ForwardTarget {
    /// The inside host.
    pub addr: Ipv4Addr,
    /// Its port; `None` keeps the external port.
    pub port: Option<u16>,
}

impl TryFrom<String> for ForwardTarget {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl FromStr for ForwardTarget {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if let Ok(sa) = s.parse::<SocketAddrV4>() {
            return Ok(Self {
                addr: *sa.ip(),
                port: Some(sa.port()),
            });
        }
        s.parse::<Ipv4Addr>()
            .map(|addr| Self { addr, port: None })
            .map_err(|_| format!("{s:?} is neither \"ip:port\" nor \"ip\" (IPv4)"))
    }
}

/// An inclusive range of ports, written `"20000-29999"` (or one port, `"5000"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct PortRange {
    /// The first port.
    pub lo: u16,
    /// The last port.
    pub hi: u16,
}

impl TryFrom<String> for PortRange {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl FromStr for PortRange {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not a port range like \"20000-29999\"");
        let (lo, hi) = match s.split_once('-') {
            Some((lo, hi)) => (lo.trim(), hi.trim()),
            None => (s.trim(), s.trim()),
        };
        let lo: u16 = lo.parse().map_err(|_| bad())?;
        let hi: u16 = hi.parse().map_err(|_| bad())?;
        Ok(Self { lo, hi })
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.lo, self.hi)
    }
}

/// What is wrong with a `[nat]` section.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NatConfigError {
    /// A netmap's two prefixes have different lengths.
    #[error("netmap {real} -> {mapped}: the prefixes must have the same length")]
    NetmapLength {
        /// The inside prefix.
        real: Ipv4Net,
        /// The outside prefix.
        mapped: Ipv4Net,
    },
    /// A netmap prefix has host bits set (e.g. `10.0.0.1/24`).
    #[error("netmap prefix {0} has host bits set (did you mean {net}?)", net = .0.trunc())]
    NetmapHostBits(Ipv4Net),
    /// Two netmaps overlap on the same side.
    #[error("netmap prefixes {0} and {1} overlap")]
    NetmapOverlap(Ipv4Net, Ipv4Net),
    /// A masquerade rule has no usable pool address.
    #[error("masquerade rule {rule}: the pool has no usable address")]
    EmptyPool {
        /// Index of the rule, from 0.
        rule: usize,
    },
    /// A masquerade rule has both a preset and an explicit mapping or filtering.
    #[error("masquerade rule {rule}: give either `preset` or `mapping`/`filtering`, not both")]
    PresetAndBehaviour {
        /// Index of the rule, from 0.
        rule: usize,
    },
    /// Only one of `mapping` and `filtering` is set.
    #[error("masquerade rule {rule}: `mapping` and `filtering` go together")]
    HalfBehaviour {
        /// Index of the rule, from 0.
        rule: usize,
    },
    /// A forward uses port 0.
    #[error("forward {rule}: port 0 cannot be forwarded")]
    ForwardPortZero {
        /// Index of the forward, from 0.
        rule: usize,
    },
    /// A forward without `external_addr` while no masquerade rule has a pool to listen on.
    #[error("forward {rule}: set external_addr (there is no masquerade pool to listen on)")]
    ForwardNeedsAddress {
        /// Index of the forward, from 0.
        rule: usize,
    },
    /// Two forwards claim the same protocol, address and port.
    #[error("forwards {0} and {1} claim the same external port")]
    ForwardConflict(usize, usize),
    /// A timeout is under its RFC minimum.
    #[error("timeouts.{name} = {value} s is below the minimum of {min} s ({rfc})")]
    TimeoutTooShort {
        /// The field.
        name: &'static str,
        /// The value given.
        value: u32,
        /// The minimum.
        min: u32,
        /// The requirement.
        rfc: &'static str,
    },
    /// `port_range` is empty or includes port 0.
    #[error("port_range {0} must be within 1-65535 with the first port not above the last")]
    PortRange(PortRange),
    /// `session_limit` is 0 or above what session indices allow.
    #[error("session_limit must be between 1 and {max}")]
    SessionLimit {
        /// The largest allowed value.
        max: u32,
    },
}

/// Largest accepted `session_limit` (indices are 32-bit, with room for sentinels).
pub const MAX_SESSIONS: u32 = 1 << 30;

impl NatConfig {
    /// Checks the section: netmap lengths and overlaps, pools, behaviours, forwards, timeouts.
    pub fn validate(&self) -> Result<(), NatConfigError> {
        for (i, n) in self.netmap.iter().enumerate() {
            if n.real.prefix_len() != n.mapped.prefix_len() {
                return Err(NatConfigError::NetmapLength {
                    real: n.real,
                    mapped: n.mapped,
                });
            }
            for p in [n.real, n.mapped] {
                if p.trunc() != p {
                    return Err(NatConfigError::NetmapHostBits(p));
                }
            }
            for m in &self.netmap[..i] {
                for (a, b) in [(n.real, m.real), (n.mapped, m.mapped)] {
                    if a.contains(&b) || b.contains(&a) {
                        return Err(NatConfigError::NetmapOverlap(b, a));
                    }
                }
            }
        }
        for (rule, m) in self.masquerade.iter().enumerate() {
            if m.preset.is_some() && (m.mapping.is_some() || m.filtering.is_some()) {
                return Err(NatConfigError::PresetAndBehaviour { rule });
            }
            if m.mapping.is_some() != m.filtering.is_some() {
                return Err(NatConfigError::HalfBehaviour { rule });
            }
            if pool_addresses(&m.pool).next().is_none() {
                return Err(NatConfigError::EmptyPool { rule });
            }
        }
        for (i, f) in self.forward.iter().enumerate() {
            if f.external_port == 0 || f.to.port == Some(0) {
                return Err(NatConfigError::ForwardPortZero { rule: i });
            }
            if f.external_addr.is_none() && self.masquerade.is_empty() {
                return Err(NatConfigError::ForwardNeedsAddress { rule: i });
            }
            for (j, g) in self.forward[..i].iter().enumerate() {
                let same_addr = match (f.external_addr, g.external_addr) {
                    (Some(a), Some(b)) => a == b,
                    _ => true,
                };
                if f.proto == g.proto && f.external_port == g.external_port && same_addr {
                    return Err(NatConfigError::ForwardConflict(j, i));
                }
            }
        }
        let t = &self.timeouts;
        for (name, value, min, rfc) in [
            ("udp", t.udp, 120, "RFC 4787 REQ-5"),
            ("tcp_established", t.tcp_established, 7440, "RFC 5382 REQ-5"),
            ("tcp_transitory", t.tcp_transitory, 240, "RFC 5382 REQ-5"),
            ("icmp", t.icmp, 60, "RFC 5508 REQ-1"),
            ("udp_initial", t.udp_initial, 1, "a flow must live"),
        ] {
            if value < min {
                return Err(NatConfigError::TimeoutTooShort {
                    name,
                    value,
                    min,
                    rfc,
                });
            }
        }
        if let Some(r) = self.port_range {
            if r.lo == 0 || r.lo > r.hi {
                return Err(NatConfigError::PortRange(r));
            }
        }
        if self.session_limit == 0 || self.session_limit > MAX_SESSIONS {
            return Err(NatConfigError::SessionLimit { max: MAX_SESSIONS });
        }
        Ok(())
    }
}

impl NatConfig {
    /// Every external address: the masquerade pools' usable addresses and the forwards'
    /// `external_addr`s, in order, without duplicates.
    pub fn external_addresses(&self) -> Vec<Ipv4Addr> {
        let mut out: Vec<Ipv4Addr> = Vec::new();
        let pools = self.masquerade.iter().flat_map(|m| pool_addresses(&m.pool));
        for a in pools.chain(self.forward.iter().filter_map(|f| f.external_addr)) {
            if !out.contains(&a) {
                out.push(a);
            }
        }
        out
    }
}

impl MasqueradeRule {
    /// `(mapping, filtering)` of this rule: explicit, else the preset, else port-restricted cone.
    pub fn behaviour(&self) -> (Dependency, Dependency) {
        match (self.mapping, self.filtering) {
            (Some(m), Some(f)) => (m, f),
            _ => self
                .preset
                .unwrap_or(Preset::PortRestrictedCone)
                .behaviour(),
        }
    }
}

/// The usable addresses of a pool, in order, without duplicates: no network or broadcast
/// address of a prefix shorter than /31.
pub(crate) fn pool_addresses(pool: &[Prefix]) -> impl Iterator<Item = Ipv4Addr> + '_ {
    let mut seen = std::collections::HashSet::new();
    // `hosts()` leaves out the network and broadcast addresses of prefixes up to /30 and yields
    // every address of a /31 or /32.
    pool.iter()
        .flat_map(|p| p.0.trunc().hosts())
        .filter(move |a| seen.insert(*a))
}

impl fmt::Display for Dependency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Dependency::EndpointIndependent => "endpoint-independent",
            Dependency::AddressDependent => "address-dependent",
            Dependency::AddressAndPortDependent => "address-and-port-dependent",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<NatConfig, toml::de::Error> {
        toml::from_str(s)
    }

    #[test]
    fn full_section_parses() {
        let c = parse(
            r#"
            session_limit = 1000
            host_port_quota = 10
            [timeouts]
            udp = 180
            [[netmap]]
            real = "192.168.1.0/24"
            mapped = "10.10.1.0/24"
            [[masquerade]]
            source = ["192.168.0.0/16", "172.16.0.1"]
            pool = ["203.0.113.1", "203.0.113.8/30"]
            preset = "symmetric"
            [[masquerade]]
            pool = ["198.51.100.1"]
            mapping = "endpoint-independent"
            filtering = "address-dependent"
            [[forward]]
            proto = "tcp"
            external_port = 8443
            to = "192.168.1.10:443"
            [[forward]]
            proto = "udp"
            external_port = 53
            external_addr = "203.0.113.1"
            to = "192.168.1.53"
            "#,
        )
        .expect("parses");
        c.validate().expect("valid");
        assert_eq!(c.timeouts.udp, 180);
        assert_eq!(c.timeouts.tcp_established, 7440);
        assert_eq!(
            c.masquerade[0].behaviour(),
            (
                Dependency::AddressAndPortDependent,
                Dependency::AddressAndPortDependent
            )
        );
        assert_eq!(
            c.masquerade[1].behaviour(),
            (
                Dependency::EndpointIndependent,
                Dependency::AddressDependent
            )
        );
        let pool: Vec<_> = pool_addresses(&c.masquerade[0].pool).collect();
        assert_eq!(
            pool,
            ["203.0.113.1", "203.0.113.9", "203.0.113.10"]
                .map(|s| s.parse::<Ipv4Addr>().expect("address"))
        );
        assert_eq!(c.forward[1].to.port, None);
    }

    #[test]
    fn unknown_fields_are_refused() {
        assert!(parse("sesion_limit = 3").is_err());
        assert!(parse("[[netmap]]\nreal = \"10.0.0.0/8\"\nmaped = \"11.0.0.0/8\"").is_err());
    }

    #[test]
    fn validation_errors() {
        let bad = |s: &str| parse(s).expect("parses").validate().expect_err("invalid");
        assert!(matches!(
            bad("[[netmap]]\nreal = \"10.0.0.0/8\"\nmapped = \"11.0.0.0/16\""),
            NatConfigError::NetmapLength { .. }
        ));
        assert!(matches!(
            bad("[[netmap]]\nreal = \"10.0.0.1/8\"\nmapped = \"11.0.0.0/8\""),
            NatConfigError::NetmapHostBits(_)
        ));
        assert!(matches!(
            bad("[timeouts]\nudp = 60"),
            NatConfigError::TimeoutTooShort { name: "udp", .. }
        ));
        assert!(matches!(
            bad("[timeouts]\ntcp_established = 3600"),
            NatConfigError::TimeoutTooShort { .. }
        ));
        assert!(matches!(
            bad("[[masquerade]]\npool = [\"1.2.3.4\"]\npreset = \"full-cone\"\nmapping = \"endpoint-independent\""),
            NatConfigError::PresetAndBehaviour { rule: 0 }
        ));
        assert!(matches!(
            bad("[[masquerade]]\npool = [\"1.2.3.4\"]\n[[forward]]\nproto = \"tcp\"\nexternal_port = 80\nto = \"10.0.0.1\"\n[[forward]]\nproto = \"tcp\"\nexternal_port = 80\nto = \"10.0.0.2\""),
            NatConfigError::ForwardConflict(0, 1)
        ));
        assert!(matches!(
            bad("[[forward]]\nproto = \"tcp\"\nexternal_port = 80\nto = \"10.0.0.1\""),
            NatConfigError::ForwardNeedsAddress { rule: 0 }
        ));
        assert!(matches!(
            bad("port_range = \"3000-2000\""),
            NatConfigError::PortRange(_)
        ));
        assert!(parse("port_range = \"3000-x\"").is_err());
        let c = parse("port_range = \"61000-65535\"").expect("parses");
        assert_eq!(
            c.port_range,
            Some(PortRange {
                lo: 61000,
                hi: 65535
            })
        );
    }
}
