//! The `[nat]` section compiled for lookups: netmaps, masquerade rules, forwards, and the set of
//! external addresses.

use std::collections::HashSet;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use super::config::{
    pool_addresses, Dependency, ForwardProto, NatConfig, NatConfigError, Timeouts,
};
use super::packet::Proto;
use super::ports::Reservation;

/// A masquerade rule with its pool as indices into the port spaces.
#[derive(Debug, Clone)]
pub(crate) struct Masquerade {
    pub(crate) sources: Vec<Ipv4Net>,
    pub(crate) destinations: Vec<Ipv4Net>,
    pub(crate) pool: Vec<u32>,
    pub(crate) mapping: Dependency,
    pub(crate) filtering: Dependency,
}

/// A port forward.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Forward {
    pub(crate) proto: Proto,
    /// `None`: every pool address.
    pub(crate) ext_addr: Option<Ipv4Addr>,
    pub(crate) ext_port: u16,
    pub(crate) to: Ipv4Addr,
    pub(crate) to_port: Option<u16>,
}

/// Everything the engine looks up per packet, and its limits.
#[derive(Debug, Clone)]
pub(crate) struct Rules {
    pub(crate) netmaps: Vec<(Ipv4Net, Ipv4Net)>,
    pub(crate) masquerade: Vec<Masquerade>,
    pub(crate) forwards: Vec<Forward>,
    pub(crate) pool: Vec<Ipv4Addr>,
    externals: HashSet<Ipv4Addr>,
    pub(crate) timeouts: Timeouts,
    pub(crate) session_limit: u32,
    pub(crate) host_port_quota: u32,
    pub(crate) port_reuse_delay: u32,
    pub(crate) reply_source: Option<Ipv4Addr>,
    pub(crate) icmp_reply_rate: u32,
}

impl Rules {
    /// Validates and compiles `config`; also returns the ports forwards reserve.
    pub(crate) fn compile(config: &NatConfig) -> Result<(Self, Vec<Reservation>), NatConfigError> {
        config.validate()?;
        let mut pool: Vec<Ipv4Addr> = Vec::new();
        let mut masquerade = Vec::new();
        for m in &config.masquerade {
            let mut indices = Vec::new();
            for addr in pool_addresses(&m.pool) {
                let i = match pool.iter().position(|a| *a == addr) {
                    Some(i) => i,
                    None => {
                        pool.push(addr);
                        pool.len() - 1
                    }
                };
                // Pools are far below 2^32 addresses (a /0 has 2^32 - 2 hosts and would not
                // fit in memory long before).
                indices.push(i as u32);
            }
            let (mapping, filtering) = m.behaviour();
            masquerade.push(Masquerade {
                sources: m.source.iter().map(|p| p.0.trunc()).collect(),
                destinations: m.destination.iter().map(|p| p.0.trunc()).collect(),
                pool: indices,
                mapping,
                filtering,
            });
        }
        let mut forwards = Vec::new();
        let mut reservations = Vec::new();
        for (rule, f) in config.forward.iter().enumerate() {
            if f.external_addr.is_none() && pool.is_empty() {
                return Err(NatConfigError::ForwardNeedsAddress { rule });
            }
            let proto = match f.proto {
                ForwardProto::Tcp => Proto::Tcp,
                ForwardProto::Udp => Proto::Udp,
            };
            forwards.push(Forward {
                proto,
                ext_addr: f.external_addr,
                ext_port: f.external_port,
                to: f.to.addr,
                to_port: f.to.port,
            });
            reservations.push(Reservation {
                proto,
                addr: f.external_addr,
                port: f.external_port,
            });
        }
        let mut externals: HashSet<Ipv4Addr> = pool.iter().copied().collect();
        externals.extend(forwards.iter().filter_map(|f| f.ext_addr));
        Ok((
            Self {
                netmaps: config.netmap.iter().map(|n| (n.real, n.mapped)).collect(),
                masquerade,
                forwards,
                pool,
                externals,
                timeouts: config.timeouts,
                session_limit: config.session_limit,
                host_port_quota: config.host_port_quota,
                port_reuse_delay: config.port_reuse_delay,
                reply_source: config.reply_source,
                icmp_reply_rate: config.icmp_reply_rate,
            },
            reservations,
        ))
    }

    /// The outside address of an inside `src` under a netmap.
    pub(crate) fn netmap_out(&self, src: Ipv4Addr) -> Option<Ipv4Addr> {
        self.netmaps
            .iter()
            .find(|(real, _)| real.contains(&src))
            .map(|(real, mapped)| rehost(src, *real, *mapped))
    }

    /// The inside address of an outside `dst` under a netmap.
    pub(crate) fn netmap_in(&self, dst: Ipv4Addr) -> Option<Ipv4Addr> {
        self.netmaps
            .iter()
            .find(|(_, mapped)| mapped.contains(&dst))
            .map(|(real, mapped)| rehost(dst, *mapped, *real))
    }

    /// The masquerade rule for a flow from inside `src` to `dst`, if any.
    pub(crate) fn masquerade_for(&self, src: Ipv4Addr, dst: Ipv4Addr) -> Option<usize> {
        let within =
            |nets: &[Ipv4Net], a: Ipv4Addr| nets.is_empty() || nets.iter().any(|n| n.contains(&a));
        self.masquerade
            .iter()
            .position(|m| within(&m.sources, src) && within(&m.destinations, dst))
    }

    /// The forward for a packet to `dst:port`.
    pub(crate) fn forward_for(&self, proto: Proto, dst: Ipv4Addr, port: u16) -> Option<Forward> {
        self.forwards
            .iter()
            .find(|f| {
                f.proto == proto
                    && f.ext_port == port
                    && match f.ext_addr {
                        Some(a) => a == dst,
                        None => self.pool.contains(&dst),
                    }
            })
            .copied()
    }

    /// Whether `addr` is one of the NAT's external addresses (pool or forward).
    pub(crate) fn is_external(&self, addr: Ipv4Addr) -> bool {
        self.externals.contains(&addr)
    }
}

/// `addr` moved from prefix `from` to prefix `to` of the same length, host bits kept.
fn rehost(addr: Ipv4Addr, from: Ipv4Net, to: Ipv4Net) -> Ipv4Addr {
    let host = u32::from(addr) & u32::from(from.hostmask());
    Ipv4Addr::from(u32::from(to.network()) | host)
}
