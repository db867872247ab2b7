//! The client's leased address and pushed routes, through rtnetlink.
//!
//! [`plan_routes`] decides what goes on the TUN device (pure, unit-tested); [`ClientNet::apply`]
//! installs it and remembers what it installed, and [`ClientNet::remove`] removes exactly that.
//!
//! Full tunnel: a pushed default route becomes the two halves `0.0.0.0/1` and `128.0.0.0/1`
//! (`::/1` and `8000::/1` for IPv6). They are more specific than the host's default route, so
//! they win without replacing it, and removing them restores the host's routing as it was.
//! Whenever a tunnel route would cover the gateway's own endpoint, a host route to the endpoint
//! through the route the host used before ("bypass") keeps the tunnel's UDP packets off the
//! tunnel.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use anyhow::{anyhow, Context, Result};
use futures::TryStreamExt;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteMessage, RouteScope, RouteVia,
};
use rtnetlink::{Handle, RouteMessageBuilder};
use tracing::{debug, info, warn};

/// The routes to put on the TUN device for a lease of `address` with `pushed` routes: each
/// pushed prefix once, truncated to its network, default routes split in halves, and without
/// the lease's own subnet (the kernel adds that connected route with the address).
pub fn plan_routes(address: Ipv4Net, pushed: &[IpNet]) -> Vec<IpNet> {
    let connected = IpNet::V4(address.trunc());
    let mut routes = Vec::new();
    for route in pushed.iter().map(IpNet::trunc) {
        match route {
            IpNet::V4(n) if n.prefix_len() == 0 => routes.extend(default_halves_v4()),
            IpNet::V6(n) if n.prefix_len() == 0 => routes.extend(default_halves_v6()),
            r if r == connected => {}
            r => routes.push(r),
        }
    }
    routes.sort();
    routes.dedup();
    routes
}

/// The prefixes the data plane accepts from the gateway and routes to it: the pushed routes
/// (a default route kept whole) and the lease's subnet (the gateway and other clients).
pub fn dataplane_allowed_ips(address: Ipv4Net, pushed: &[IpNet]) -> Vec<IpNet> {
    let mut allowed: Vec<IpNet> = pushed.iter().map(IpNet::trunc).collect();
    allowed.push(IpNet::V4(address.trunc()));
    allowed.sort();
    allowed.dedup();
    allowed
}

/// Whether a pushed default route makes this a full tunnel.
pub fn is_full_tunnel(pushed: &[IpNet]) -> bool {
    pushed.iter().any(|r| r.prefix_len() == 0)
}

fn default_halves_v4() -> [IpNet; 2] {
    [
        IpNet::V4(Ipv4Net::new_assert(Ipv4Addr::UNSPECIFIED, 1)),
        IpNet::V4(Ipv4Net::new_assert(Ipv4Addr::new(128, 0, 0, 0), 1)),
    ]
}

fn default_halves_v6() -> [IpNet; 2] {
    [
        IpNet::V6(Ipv6Net::new_assert(Ipv6Addr::UNSPECIFIED, 1)),
        IpNet::V6(Ipv6Net::new_assert(
            Ipv6Addr::new(0x8000, 0, 0, 0, 0, 0, 0, 0),
            1,
        )),
    ]
}

/// Whether any of `routes` contains `ip`.
pub fn covers(routes: &[IpNet], ip: IpAddr) -> bool {
    routes.iter().any(|r| r.contains(&ip))
}

/// A netlink connection for the client's address and routes.
pub struct ClientNet {
    handle: Handle,
}

/// What [`ClientNet::apply`] installed, for [`ClientNet::remove`].
#[derive(Debug, Default)]
pub struct Applied {
    ifindex: u32,
    /// Routes on the TUN device.
    routes: Vec<IpNet>,
    /// The host route to the gateway's endpoint outside the tunnel, if one was needed.
    bypass: Option<(IpAddr, RouteMessage)>,
}

impl Applied {
    /// The routes installed on the TUN device.
    pub fn routes(&self) -> &[IpNet] {
        &self.routes
    }

    /// The gateway endpoint address that got a host route outside the tunnel, if any.
    pub fn bypass(&self) -> Option<IpAddr> {
        self.bypass.as_ref().map(|(ip, _)| *ip)
    }
}

impl ClientNet {
    /// Opens a netlink socket (its task runs on the current tokio runtime).
    pub fn connect() -> Result<Self> {
        let (connection, handle, _) =
            rtnetlink::new_connection().context("cannot open a netlink socket")?;
        tokio::spawn(connection);
        Ok(Self { handle })
    }

    /// Adds `address` to interface `ifindex` and routes the `pushed` prefixes through it (see
    /// [`plan_routes`]), with a bypass for `gateway_ip` when a route would cover it.
    ///
    /// Only failing to add the address is an error. A route that cannot be added (another
    /// interface has it, say) is skipped with a warning; if the bypass cannot be made, the
    /// routes that cover the gateway are skipped instead, so the tunnel never carries itself.
    pub async fn apply(
        &self,
        ifname: &str,
        ifindex: u32,
        address: Ipv4Net,
        pushed: &[IpNet],
        gateway_ip: IpAddr,
    ) -> Result<Applied> {
        self.handle
            .address()
            .add(ifindex, IpAddr::V4(address.addr()), address.prefix_len())
            .execute()
            .await
            .map_err(|e| anyhow!("cannot add address {address} to {ifname}: {e}"))?;
        debug!(%address, ifname, "address added");

        let mut applied = Applied {
            ifindex,
            ..Applied::default()
        };
        let mut routes = plan_routes(address, pushed);
        if covers(&routes, gateway_ip) {
            // Look the path up before any tunnel route exists.
            match self.add_bypass(gateway_ip, ifindex).await {
                Ok(Some(msg)) => applied.bypass = Some((gateway_ip, msg)),
                Ok(None) => {}
                Err(e) => {
                    warn!(gateway = %gateway_ip, error = %e, "no host route to the gateway outside the tunnel; not installing the routes that cover it");
                    routes.retain(|r| !r.contains(&gateway_ip));
                }
            }
        }
        for route in routes {
            match self
                .handle
                .route()
                .add(route_message(route, ifindex))
                .execute()
                .await
            {
                Ok(()) => {
                    debug!(%route, ifname, "route added");
                    applied.routes.push(route);
                }
                Err(e) => {
                    warn!(%route, ifname, error = %e, "cannot add pushed route; skipping it (does another interface route it?)")
                }
            }
        }
        Ok(applied)
    }

    /// Adds a host route to `ip` along the path the host uses now. `None` when that path is
    /// already a host route we did not make (left in place, not ours to remove).
    async fn add_bypass(&self, ip: IpAddr, tun_ifindex: u32) -> Result<Option<RouteMessage>> {
        let current = self
            .handle
            .route()
            .get(host_route_builder(ip))
            .execute()
            .try_next()
            .await
            .map_err(|e| anyhow!("route lookup for {ip} failed: {e}"))?
            .ok_or_else(|| anyhow!("no route to {ip}"))?;
        let mut oif = None;
        let mut via = None;
        for attr in &current.attributes {
            match attr {
                RouteAttribute::Oif(i) => oif = Some(*i),
                RouteAttribute::Gateway(RouteAddress::Inet(a)) => via = Some(IpAddr::V4(*a)),
                RouteAttribute::Gateway(RouteAddress::Inet6(a)) => via = Some(IpAddr::V6(*a)),
                RouteAttribute::Via(RouteVia::Inet6(a)) => via = Some(IpAddr::V6(*a)),
                _ => {}
            }
        }
        let oif = oif.ok_or_else(|| anyhow!("the route to {ip} has no output interface"))?;
        if oif == tun_ifindex {
            return Err(anyhow!("the route to {ip} already goes through the tunnel"));
        }
        let mut msg = host_route_builder(ip);
        msg.attributes.push(RouteAttribute::Oif(oif));
        match via {
            Some(gw) => msg.attributes.push(RouteAttribute::Gateway(gw.into())),
            None => msg.header.scope = RouteScope::Link,
        }
        match self.handle.route().add(msg.clone()).execute().await {
            Ok(()) => {
                info!(gateway = %ip, via = ?via, oif, "host route to the gateway outside the tunnel added");
                Ok(Some(msg))
            }
            Err(rtnetlink::Error::NetlinkError(m)) if m.raw_code() == -libc::EEXIST => {
                debug!(gateway = %ip, "a host route to the gateway already exists");
                Ok(None)
            }
            Err(e) => Err(anyhow!("cannot add a host route to {ip}: {e}")),
        }
    }

    /// Removes what `applied` holds. Errors are logged, not returned: teardown goes on.
    pub async fn remove(&self, applied: &Applied) {
        for route in &applied.routes {
            match self
                .handle
                .route()
                .del(route_message(*route, applied.ifindex))
                .execute()
                .await
            {
                Ok(()) => debug!(%route, "route removed"),
                Err(e) => debug!(%route, error = %e, "route already gone"),
            }
        }
        if let Some((ip, msg)) = &applied.bypass {
            match self.handle.route().del(msg.clone()).execute().await {
                Ok(()) => info!(gateway = %ip, "host route to the gateway removed"),
                Err(e) => {
                    warn!(gateway = %ip, error = %e, "cannot remove the host route to the gateway")
                }
            }
        }
    }
}

/// A route message for the host route to `ip` (a /32 or /128), nothing else set.
fn host_route_builder(ip: IpAddr) -> RouteMessage {
    match ip {
        IpAddr::V4(a) => RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(a, 32)
            .build(),
        IpAddr::V6(a) => RouteMessageBuilder::<Ipv6Addr>::new()
            .destination_prefix(a, 128)
            .build(),
    }
}

fn route_message(route: IpNet, ifindex: u32) -> RouteMessage {
    match route {
        IpNet::V4(n) => RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(n.network(), n.prefix_len())
            .output_interface(ifindex)
            .scope(RouteScope::Link)
            .build(),
        IpNet::V6(n) => RouteMessageBuilder::<Ipv6Addr>::new()
            .destination_prefix(n.network(), n.prefix_len())
            .output_interface(ifindex)
            .build(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().expect("prefix")
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|s| net(s)).collect()
    }

    fn lease() -> Ipv4Net {
        "10.77.100.50/24".parse().expect("lease")
    }

    #[test]
    fn split_tunnel_routes_are_deduplicated_and_skip_the_connected_subnet() {
        let pushed = nets(&[
            "192.168.20.0/24",
            "192.168.10.7/24",
            "10.77.100.0/24",
            "192.168.10.0/24",
        ]);
        assert_eq!(
            plan_routes(lease(), &pushed),
            nets(&["192.168.10.0/24", "192.168.20.0/24"])
        );
        assert!(!is_full_tunnel(&pushed));
    }

    #[test]
    fn default_routes_become_halves() {
        let pushed = nets(&["0.0.0.0/0", "192.168.10.0/24", "::/0"]);
        assert!(is_full_tunnel(&pushed));
        assert_eq!(
            plan_routes(lease(), &pushed),
            nets(&[
                "0.0.0.0/1",
                "128.0.0.0/1",
                "192.168.10.0/24",
                "::/1",
                "8000::/1"
            ])
        );
        let routes = plan_routes(lease(), &pushed);
        for ip in ["198.51.100.1", "1.2.3.4", "255.255.255.254", "2001:db8::1"] {
            let ip: IpAddr = ip.parse().expect("ip");
            assert!(covers(&routes, ip), "{ip}");
        }
    }

    #[test]
    fn bypass_only_when_a_route_covers_the_gateway() {
        let split = plan_routes(lease(), &nets(&["192.168.10.0/24"]));
        assert!(!covers(&split, "198.51.100.1".parse().expect("ip")));
        let odd = plan_routes(lease(), &nets(&["198.51.100.0/24"]));
        assert!(covers(&odd, "198.51.100.1".parse().expect("ip")));
    }

    #[test]
    fn dataplane_accepts_the_pushed_routes_and_the_lease_subnet() {
        assert_eq!(
            dataplane_allowed_ips(lease(), &nets(&["0.0.0.0/0", "192.168.10.1/24"])),
            nets(&["0.0.0.0/0", "10.77.100.0/24", "192.168.10.0/24"])
        );
        assert_eq!(
            dataplane_allowed_ips(lease(), &nets(&["10.77.100.0/24"])),
            nets(&["10.77.100.0/24"])
        );
    }
}
