//! Addresses and routes on the TUN device, through rtnetlink.
//!
//! Everything installed is remembered so that shutdown removes exactly that. (The TUN device
//! itself is not persistent, so after `kill -9` the kernel removes the device and with it these
//! addresses and routes.)

use anyhow::{anyhow, Context, Result};
use ipnet::IpNet;
use rtnetlink::packet_route::route::RouteScope;
use rtnetlink::{Handle, RouteMessageBuilder};
use tracing::{debug, warn};

/// A netlink connection, with its background task running on the current tokio runtime.
pub struct Netlink {
    handle: Handle,
}

/// What [`Netlink::configure`] installed, to be undone by [`Netlink::remove`].
#[derive(Debug, Default)]
pub struct Installed {
    ifindex: u32,
    routes: Vec<IpNet>,
}

impl Netlink {
    /// Opens a netlink socket.
    pub fn connect() -> Result<Self> {
        let (connection, handle, _) =
            rtnetlink::new_connection().context("cannot open a netlink socket")?;
        tokio::spawn(connection);
        Ok(Self { handle })
    }

    /// Adds `addresses` to the interface `ifindex` and routes `routes` through it.
    ///
    /// Routes equal to the network of one of the addresses are already there (the kernel adds a
    /// connected route) and default routes would capture the tunnel's own traffic: both are
    /// skipped.
    pub async fn configure(
        &self,
        ifname: &str,
        ifindex: u32,
        addresses: &[IpNet],
        routes: &[IpNet],
    ) -> Result<Installed> {
        let mut installed = Installed {
            ifindex,
            routes: Vec::new(),
        };
        for addr in addresses {
            self.handle
                .address()
                .add(ifindex, addr.addr(), addr.prefix_len())
                .execute()
                .await
                .map_err(|e| anyhow!("cannot add address {addr} to {ifname}: {e}"))?;
            debug!(%addr, ifname, "address added");
        }
        let mut wanted: Vec<IpNet> = routes.iter().map(IpNet::trunc).collect();
        wanted.sort();
        wanted.dedup();
        for route in wanted {
            if addresses.iter().any(|a| a.trunc() == route) {
                continue;
            }
            if route.prefix_len() == 0 {
                warn!(%route, "not installing a default route through the tunnel (it would carry the tunnel's own packets)");
                continue;
            }
            let msg = route_message(route, ifindex);
            if let Err(e) = self.handle.route().add(msg).execute().await {
                // Leave nothing half-done behind.
                self.remove(&installed).await;
                return Err(anyhow!(
                    "cannot add route {route} via {ifname}: {e}\n  fix: if another interface already routes {route}, remove that route or drop the prefix from allowed_ips"
                ));
            }
            debug!(%route, ifname, "route added");
            installed.routes.push(route);
        }
        Ok(installed)
    }

    /// Removes the routes in `installed`. Errors are logged, not returned: shutdown goes on.
    pub async fn remove(&self, installed: &Installed) {
        for route in &installed.routes {
            let msg = route_message(*route, installed.ifindex);
            match self.handle.route().del(msg).execute().await {
                Ok(()) => debug!(%route, "route removed"),
                Err(e) => debug!(%route, error = %e, "route already gone"),
            }
        }
    }
}

fn route_message(route: IpNet, ifindex: u32) -> rtnetlink::packet_route::route::RouteMessage {
    match route {
        IpNet::V4(n) => RouteMessageBuilder::<std::net::Ipv4Addr>::new()
            .destination_prefix(n.network(), n.prefix_len())
            .output_interface(ifindex)
            .scope(RouteScope::Link)
            .build(),
        IpNet::V6(n) => RouteMessageBuilder::<std::net::Ipv6Addr>::new()
            .destination_prefix(n.network(), n.prefix_len())
            .output_interface(ifindex)
            .build(),
    }
}
