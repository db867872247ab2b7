//! The `[nat]` rules in the gateway's data path.
//!
//! The gateway runs up to two [`Nat`] engines on inner packets, because its rules have two
//! different "insides":
//!
//! - **LAN side** (`[[nat.netmap]]`): the inside is the TUN device, i.e. this office's LAN; the
//!   outside is the tunnels. A packet read from the TUN has its source moved from `real` to
//!   `mapped` before it is routed to a peer; a packet from a peer has its destination moved from
//!   `mapped` back to `real` before it is written to the TUN. Other sites see this LAN only as
//!   `mapped` (which goes into their `allowed_ips`).
//! - **Tunnel side** (`[[nat.masquerade]]`, `[[nat.forward]]`): the inside is the tunnels
//!   (remote workers, other offices); the outside is whatever the kernel routes to beyond the TUN
//!   (the LAN, the internet). A decrypted packet whose source a masquerade rule names leaves
//!   through the TUN with its source moved to a pool address, which is an address the gateway
//!   owns (its LAN address: workers reach LAN hosts that have no route back; its WAN address:
//!   full-tunnel egress). Packets to a pool address on a NAT port, and to forwarded ports, are
//!   steered into the TUN by policy routing (see `sitelink_io::nat_routing`); the engine
//!   translates them back, or, for forwards, to the inside target (a worker's virtual address,
//!   a host in another office), and they are routed to the peer that owns the new destination.
//!
//! TUN → tunnels: tunnel side inbound, then LAN side outbound, then routing by the (new)
//! destination. Tunnels → TUN: source check against the peer's `allowed_ips` (as received),
//! LAN side inbound, then tunnel side outbound. Decrypted packets to another peer (transit
//! between tunnels) skip the tunnel side: they are not masqueraded.

use std::time::Instant;

use serde::Serialize;
use tracing::{trace, warn};

use std::net::Ipv4Addr;

use crate::nat::{
    DropReason, MasqueradeRule, Nat, NatConfig, NatConfigError, NatCounters, NatEvent, PortRange,
    Prefix, Preset, SessionInfo, Verdict,
};

/// NAT ports the gateway uses when `port_range` is unset: above Linux's default ephemeral range
/// (32768-60999), so the gateway's own connections and the NAT never want the same port.
pub const DEFAULT_GATEWAY_PORT_RANGE: PortRange = PortRange {
    lo: 61000,
    hi: 65535,
};

/// Sessions listed by [`NatReport`] at most (the counters cover the rest).
pub const MAX_LISTED_SESSIONS: usize = 1000;

/// `config` as the gateway runs it: `port_range` defaults to [`DEFAULT_GATEWAY_PORT_RANGE`].
#[must_use]
pub fn effective_config(config: &NatConfig) -> NatConfig {
    let mut c = config.clone();
    if c.port_range.is_none() {
        c.port_range = Some(DEFAULT_GATEWAY_PORT_RANGE);
    }
    c
}

/// The NAT engines of one gateway and the scratch buffer they rewrite in.
pub(super) struct GatewayNat {
    /// Inside: the TUN (LAN); netmaps, and the source NAT of forwards with a `source`.
    lan: Option<Nat>,
    /// The forwards' `source` addresses (the LAN side's masquerade pool).
    forward_sources: Vec<Ipv4Addr>,
    /// Inside: the tunnels; masquerading and forwards.
    tunnels: Option<Nat>,
    pub(super) buf: Box<[u8]>,
    /// Packets the tunnel side sends back into the tunnels (hairpins, ICMP errors), sent after
    /// the datagram that caused them.
    pub(super) to_tunnels: Vec<Vec<u8>>,
}

/// What to do with a packet read from the TUN after NAT.
pub(super) enum FromTun {
    /// Route the (rewritten) packet in the scratch buffer, of this length, to a peer.
    Route(usize),
    /// Write this packet back to the TUN (a netmap ICMP error, or an ICMP error the tunnel side
    /// does not know, handed to the local stack).
    BackToTun(Option<Vec<u8>>),
    /// Dropped.
    Drop,
}

/// What to do with a decrypted packet after NAT.
pub(super) enum ToTun {
    /// Write the packet in the scratch buffer, of this length, to the TUN.
    Write(usize),
    /// Send the packet in the scratch buffer, of this length, back into the tunnels.
    Tunnels(usize),
    /// Send this packet (an ICMP error) back into the tunnels.
    Reply(Vec<u8>),
    /// Dropped.
    Drop,
}

impl GatewayNat {
    /// Engines for `config` (see [`effective_config`]); `None` when it has no rules.
    pub(super) fn new(
        config: &NatConfig,
        seed: u64,
        now: Instant,
        buf_len: usize,
    ) -> Result<Option<Self>, NatConfigError> {
        let config = effective_config(config);
        config.validate()?;
        // A forward with a `source`: after the tunnel side has moved the destination to the
        // target, the LAN side moves the source to `source` (and back for the replies). Only
        // the forwarded flows: other packets to the target (the gateway's own, the LAN's, the
        // replies of the target's own flows) keep their source.
        let snat: Vec<MasqueradeRule> = config
            .forward
            .iter()
            .filter_map(|f| {
                f.source.map(|s| MasqueradeRule {
                    source: Vec::new(),
                    destination: vec![Prefix(f.to.addr.into())],
                    pool: vec![Prefix(s.into())],
                    preset: Some(Preset::PortRestrictedCone),
                    mapping: None,
                    filtering: None,
                })
            })
            .collect();
        let forward_sources: Vec<Ipv4Addr> =
            config.forward.iter().filter_map(|f| f.source).collect();
        let lan = (!config.netmap.is_empty() || !snat.is_empty())
            .then(|| {
                let c = NatConfig {
                    masquerade: snat,
                    forward: Vec::new(),
                    ..config.clone()
                };
                Nat::new(&c, seed, now)
            })
            .transpose()?;
        let tunnels = (!config.masquerade.is_empty() || !config.forward.is_empty())
            .then(|| {
                let c = NatConfig {
                    netmap: Vec::new(),
                    ..config.clone()
                };
                Nat::new(&c, seed ^ 0x5eed, now)
            })
            .transpose()?;
        if lan.is_none() && tunnels.is_none() {
            return Ok(None);
        }
        Ok(Some(Self {
            lan,
            forward_sources,
            tunnels,
            buf: vec![0u8; buf_len].into_boxed_slice(),
            to_tunnels: Vec::new(),
        }))
    }

    /// Translates the first `len` bytes of the scratch buffer, read from the TUN.
    pub(super) fn translate_from_tun(&mut self, len: usize, now: Instant) -> FromTun {
        let p = &mut self.buf[..len];
        let mut forwarded = false;
        if let Some(nat) = &mut self.tunnels {
            let verdict = nat.translate_inbound(p, now);
            forwarded = nat.last_inbound_was_forward();
            match verdict {
                Verdict::Forward | Verdict::Pass | Verdict::Hairpin => {}
                Verdict::Drop(DropReason::IcmpErrorUnmatched) => {
                    // Steered here because it went to a pool address, but about none of our
                    // flows: it is the gateway's own (e.g. path MTU for its UDP socket).
                    return FromTun::BackToTun(None);
                }
                Verdict::Drop(reason) => {
                    trace!(%reason, "tunnel-side NAT dropped a packet from the TUN");
                    return FromTun::Drop;
                }
                Verdict::Reply { packet, .. } => return FromTun::BackToTun(Some(packet)),
            }
        }
        if let Some(nat) = &mut self.lan {
            // Only a forwarded flow may open a source mapping onto a forward's `source`.
            let verdict = if forwarded {
                nat.translate_outbound(p, now)
            } else {
                nat.translate_outbound_existing(p, now)
            };
            match verdict {
                Verdict::Forward | Verdict::Pass => {}
                Verdict::Hairpin => return FromTun::BackToTun(Some(p.to_vec())),
                Verdict::Drop(reason) => {
                    trace!(%reason, "LAN-side NAT dropped a packet from the TUN");
                    return FromTun::Drop;
                }
                Verdict::Reply { packet, .. } => return FromTun::BackToTun(Some(packet)),
            }
        }
        FromTun::Route(len)
    }

    /// Translates the first `len` bytes of the scratch buffer, decrypted from a peer.
    /// `transit`: the destination belongs to a peer (the packet only passes through).
    pub(super) fn translate_to_tun(&mut self, len: usize, transit: bool, now: Instant) -> ToTun {
        let p = &mut self.buf[..len];
        if let Some(nat) = &mut self.lan {
            match nat.translate_inbound(p, now) {
                Verdict::Forward | Verdict::Pass | Verdict::Hairpin => {}
                // To a forward's `source` (the gateway's own tunnel address, say) but none of
                // its flows: the gateway's own traffic, let it through.
                Verdict::Drop(DropReason::NoSession)
                    if p.get(16..20).is_some_and(|d| {
                        self.forward_sources
                            .contains(&Ipv4Addr::new(d[0], d[1], d[2], d[3]))
                    }) => {}
                Verdict::Drop(reason) => {
                    trace!(%reason, "LAN-side NAT dropped a packet from a peer");
                    return ToTun::Drop;
                }
                Verdict::Reply { packet, .. } => return ToTun::Reply(packet),
            }
        }
        if transit {
            return ToTun::Write(len);
        }
        if let Some(nat) = &mut self.tunnels {
            match nat.translate_outbound(p, now) {
                Verdict::Forward | Verdict::Pass => {}
                Verdict::Hairpin => return ToTun::Tunnels(len),
                Verdict::Drop(reason) => {
                    trace!(%reason, "tunnel-side NAT dropped a packet from a peer");
                    return ToTun::Drop;
                }
                Verdict::Reply { packet, .. } => return ToTun::Reply(packet),
            }
        }
        ToTun::Write(len)
    }

    /// The earliest timer of either engine.
    pub(super) fn poll_timeout(&self) -> Option<Instant> {
        [&self.lan, &self.tunnels]
            .into_iter()
            .flatten()
            .filter_map(Nat::poll_timeout)
            .min()
    }

    /// Runs both engines' timers and logs their events.
    pub(super) fn handle_timeout(&mut self, now: Instant) {
        for (side, nat) in [("lan", &mut self.lan), ("tunnels", &mut self.tunnels)] {
            let Some(nat) = nat else { continue };
            if nat.poll_timeout().is_some_and(|t| t <= now) {
                nat.handle_timeout(now);
            }
            while let Some(NatEvent::LimitReached { reason, host }) = nat.poll_event() {
                warn!(side, %reason, %host, "NAT refused a new flow");
            }
        }
    }

    /// Sessions and counters of both engines.
    pub(super) fn report(&self, now: Instant) -> NatReport {
        let side = |nat: &Option<Nat>| {
            nat.as_ref().map(|n| {
                let mut sessions: Vec<SessionInfo> = n.sessions(now).collect();
                let total = sessions.len();
                sessions.truncate(MAX_LISTED_SESSIONS);
                NatSideReport {
                    counters: n.counters(),
                    sessions_total: total,
                    sessions,
                }
            })
        };
        NatReport {
            lan_side: side(&self.lan),
            tunnel_side: side(&self.tunnels),
        }
    }
}

/// What `sitelink-gateway nat` shows: each engine's counters and sessions.
#[derive(Debug, Clone, Serialize)]
pub struct NatReport {
    /// The netmaps (inside: the LAN behind the TUN); `None` without `[[nat.netmap]]`.
    pub lan_side: Option<NatSideReport>,
    /// Masquerading and forwards (inside: the tunnels); `None` without such rules.
    pub tunnel_side: Option<NatSideReport>,
}

/// One engine's part of a [`NatReport`].
#[derive(Debug, Clone, Serialize)]
pub struct NatSideReport {
    /// Its counters.
    pub counters: NatCounters,
    /// Live sessions (netmaps keep none), at most [`MAX_LISTED_SESSIONS`].
    pub sessions: Vec<SessionInfo>,
    /// How many live sessions there are in all.
    pub sessions_total: usize,
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    /// An IPv4/UDP packet with valid checksums.
    fn udp(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16) -> Vec<u8> {
        let b = etherparse::PacketBuilder::ipv4(src, dst, 64).udp(sport, dport);
        let mut out = Vec::new();
        b.write(&mut out, b"hello").expect("build");
        out
    }

    fn ends(p: &[u8]) -> (Ipv4Addr, u16, Ipv4Addr, u16) {
        let src = Ipv4Addr::new(p[12], p[13], p[14], p[15]);
        let dst = Ipv4Addr::new(p[16], p[17], p[18], p[19]);
        let sport = u16::from_be_bytes([p[20], p[21]]);
        let dport = u16::from_be_bytes([p[22], p[23]]);
        (src, sport, dst, dport)
    }

    fn engines(text: &str) -> GatewayNat {
        let c: NatConfig = toml::from_str(text).expect("config");
        GatewayNat::new(&c, 1, Instant::now(), 2048)
            .expect("valid")
            .expect("rules")
    }

    fn load(nat: &mut GatewayNat, p: &[u8]) -> usize {
        nat.buf[..p.len()].copy_from_slice(p);
        p.len()
    }

    #[test]
    fn no_rules_no_engines() {
        let c = NatConfig::default();
        assert!(GatewayNat::new(&c, 1, Instant::now(), 2048)
            .expect("valid")
            .is_none());
    }

    #[test]
    fn netmap_maps_the_lan_towards_the_tunnels() {
        let mut nat = engines("[[netmap]]\nreal = \"192.168.1.0/24\"\nmapped = \"10.10.1.0/24\"\n");
        let now = Instant::now();
        let n = load(&mut nat, &udp([192, 168, 1, 10], 5000, [10, 10, 2, 20], 80));
        assert!(matches!(nat.translate_from_tun(n, now), FromTun::Route(_)));
        assert_eq!(
            ends(&nat.buf[..n]),
            (
                Ipv4Addr::new(10, 10, 1, 10),
                5000,
                Ipv4Addr::new(10, 10, 2, 20),
                80
            )
        );
        let n = load(&mut nat, &udp([10, 10, 2, 20], 80, [10, 10, 1, 10], 5000));
        assert!(matches!(
            nat.translate_to_tun(n, false, now),
            ToTun::Write(_)
        ));
        assert_eq!(
            ends(&nat.buf[..n]),
            (
                Ipv4Addr::new(10, 10, 2, 20),
                80,
                Ipv4Addr::new(192, 168, 1, 10),
                5000
            )
        );
    }

    #[test]
    fn masquerade_of_tunnel_sources_and_the_reply() {
        let mut nat =
            engines("[[masquerade]]\nsource = [\"10.77.100.0/24\"]\npool = [\"192.168.10.1\"]\n");
        let now = Instant::now();
        let n = load(
            &mut nat,
            &udp([10, 77, 100, 50], 5000, [192, 168, 10, 10], 53),
        );
        assert!(matches!(
            nat.translate_to_tun(n, false, now),
            ToTun::Write(_)
        ));
        let (src, sport, _, _) = ends(&nat.buf[..n]);
        assert_eq!(src, Ipv4Addr::new(192, 168, 10, 1));
        assert!((61000..=65535).contains(&sport), "{sport}");
        let n = load(
            &mut nat,
            &udp([192, 168, 10, 10], 53, [192, 168, 10, 1], sport),
        );
        assert!(matches!(nat.translate_from_tun(n, now), FromTun::Route(_)));
        assert_eq!(
            ends(&nat.buf[..n]),
            (
                Ipv4Addr::new(192, 168, 10, 10),
                53,
                Ipv4Addr::new(10, 77, 100, 50),
                5000
            )
        );
        // Transit between peers is not masqueraded.
        let n = load(
            &mut nat,
            &udp([10, 77, 100, 50], 5000, [10, 77, 100, 51], 53),
        );
        assert!(matches!(
            nat.translate_to_tun(n, true, now),
            ToTun::Write(_)
        ));
        assert_eq!(ends(&nat.buf[..n]).0, Ipv4Addr::new(10, 77, 100, 50));
        let r = nat.report(now);
        assert!(r.lan_side.is_none());
        assert_eq!(r.tunnel_side.expect("tunnel side").sessions_total, 1);
    }

    #[test]
    fn forward_with_source_reaches_a_host_in_another_office() {
        let mut nat = engines(
            "[[forward]]\nproto = \"udp\"\nexternal_addr = \"198.51.100.1\"\nexternal_port = 8080\n\
             to = \"10.10.2.10:5201\"\nsource = \"10.77.0.1\"\n",
        );
        let now = Instant::now();
        let n = load(
            &mut nat,
            &udp([198, 51, 100, 254], 4000, [198, 51, 100, 1], 8080),
        );
        assert!(matches!(nat.translate_from_tun(n, now), FromTun::Route(_)));
        let (src, sport, dst, dport) = ends(&nat.buf[..n]);
        assert_eq!(
            (src, dst, dport),
            (
                Ipv4Addr::new(10, 77, 0, 1),
                Ipv4Addr::new(10, 10, 2, 10),
                5201
            )
        );
        let n = load(&mut nat, &udp([10, 10, 2, 10], 5201, [10, 77, 0, 1], sport));
        assert!(matches!(
            nat.translate_to_tun(n, false, now),
            ToTun::Write(_)
        ));
        assert_eq!(
            ends(&nat.buf[..n]),
            (
                Ipv4Addr::new(198, 51, 100, 1),
                8080,
                Ipv4Addr::new(198, 51, 100, 254),
                4000
            )
        );
        // Other traffic to the gateway's tunnel address is not the NAT's business.
        let n = load(&mut nat, &udp([10, 10, 2, 10], 7000, [10, 77, 0, 1], 7000));
        assert!(matches!(
            nat.translate_to_tun(n, false, now),
            ToTun::Write(_)
        ));
    }

    /// Only the forwarded flows get the forward's `source`: the gateway's own packets to the
    /// target (a ping reply, say), a LAN host's, and the replies to the target's own flows keep
    /// theirs, so the target's other traffic through the gateway is unaffected.
    #[test]
    fn forward_source_applies_to_forwarded_flows_only() {
        let mut nat = engines(
            "[[forward]]\nproto = \"tcp\"\nexternal_addr = \"198.51.100.1\"\nexternal_port = 5201\n\
             to = \"10.77.100.50\"\nsource = \"192.168.10.1\"\n",
        );
        let now = Instant::now();
        for (src, sport, dport) in [
            // The gateway answering the worker on its LAN address.
            ([192, 168, 10, 1], 53, 40000),
            // A LAN host answering the worker's own connection.
            ([192, 168, 10, 10], 80, 40001),
            // A LAN host opening a flow to the worker's forwarded port.
            ([192, 168, 10, 10], 40002, 5201),
        ] {
            let n = load(&mut nat, &udp(src, sport, [10, 77, 100, 50], dport));
            assert!(matches!(nat.translate_from_tun(n, now), FromTun::Route(_)));
            assert_eq!(
                ends(&nat.buf[..n]),
                (
                    Ipv4Addr::from(src),
                    sport,
                    Ipv4Addr::new(10, 77, 100, 50),
                    dport
                ),
                "from {src:?}:{sport}"
            );
        }
        let r = nat.report(now);
        assert_eq!(r.lan_side.expect("lan side").sessions_total, 0);
        assert_eq!(r.tunnel_side.expect("tunnel side").sessions_total, 0);
    }
}
