//! The standard two-office layout in five namespaces.
//!
//! ```text
//!  lan-a host              gw-a                     inet                      gw-b               lan-b host
//!  eth0 192.168.10.10 ── lan 192.168.10.1                                 lan 192.168.20.1 ── eth0 192.168.20.10
//!                         wan 198.51.100.1 ── to-a ┐                ┌ to-b ── wan 198.51.100.2
//!                                                  br0 198.51.100.254
//! ```
//!
//! `inet` is a router namespace: today one bridge on 198.51.100.0/24 joins both gateways' WAN
//! ports, and later layouts can hang NATed sites (203.0.113.0/24, 192.0.2.0/24) off it as routed
//! interfaces. The LAN hosts route everything via their gateway; the gateways route everything
//! else via 198.51.100.254, which knows nothing of the LANs, so LAN-to-LAN traffic only gets
//! through the tunnel.

use anyhow::{Context, Result};

use super::{unique_id, veth, Netns};

pub(crate) const LAN_A_HOST: &str = "192.168.10.10";
pub(crate) const LAN_A_GW: &str = "192.168.10.1";
pub(crate) const LAN_A_NET: &str = "192.168.10.0/24";
pub(crate) const LAN_B_HOST: &str = "192.168.20.10";
pub(crate) const LAN_B_GW: &str = "192.168.20.1";
pub(crate) const LAN_B_NET: &str = "192.168.20.0/24";
pub(crate) const WAN_A: &str = "198.51.100.1";
pub(crate) const WAN_B: &str = "198.51.100.2";
pub(crate) const INET_ROUTER: &str = "198.51.100.254";
pub(crate) const WAN_PREFIX_LEN: u8 = 24;

/// Five namespaces wired as the two-office layout; all deleted on drop.
pub(crate) struct Topology {
    pub(crate) lan_a: Netns,
    pub(crate) gw_a: Netns,
    pub(crate) inet: Netns,
    pub(crate) gw_b: Netns,
    pub(crate) lan_b: Netns,
}

impl Topology {
    /// Builds the layout with namespace names `sl-<pid>-<n>-<role>`.
    pub(crate) fn two_offices() -> Result<Self> {
        let id = unique_id();
        let ns = |role: &str| Netns::new(format!("sl-{id}-{role}"));
        let t = Self {
            lan_a: ns("lana")?,
            gw_a: ns("gwa")?,
            inet: ns("inet")?,
            gw_b: ns("gwb")?,
            lan_b: ns("lanb")?,
        };
        t.wire().context("wiring the two-office topology")?;
        Ok(t)
    }

    fn wire(&self) -> Result<()> {
        let cidr = |addr: &str, len: u8| format!("{addr}/{len}");

        // The internet: one bridge with the router address.
        self.inet
            .run(&["ip", "link", "add", "br0", "type", "bridge"])?;
        self.inet.addr("br0", &cidr(INET_ROUTER, WAN_PREFIX_LEN))?;
        self.inet.enable_forwarding()?;

        for (gw, port, wan, lan_host_ns, lan_gw, lan_host) in [
            (&self.gw_a, "to-a", WAN_A, &self.lan_a, LAN_A_GW, LAN_A_HOST),
            (&self.gw_b, "to-b", WAN_B, &self.lan_b, LAN_B_GW, LAN_B_HOST),
        ] {
            veth(gw, "wan", &self.inet, port)?;
            self.inet
                .run(&["ip", "link", "set", port, "master", "br0"])?;
            gw.addr("wan", &cidr(wan, WAN_PREFIX_LEN))?;
            gw.route_via("default", INET_ROUTER)?;
            gw.enable_forwarding()?;

            veth(lan_host_ns, "eth0", gw, "lan")?;
            gw.addr("lan", &cidr(lan_gw, 24))?;
            lan_host_ns.addr("eth0", &cidr(lan_host, 24))?;
            lan_host_ns.route_via("default", lan_gw)?;
        }
        Ok(())
    }

    /// Moves gw-b's WAN address to `new_addr` (same /24), as a roaming site would.
    ///
    /// Deleting the old address also drops the default route through it, so that is re-added.
    pub(crate) fn move_gw_b_wan(&self, old_addr: &str, new_addr: &str) -> Result<()> {
        let len = WAN_PREFIX_LEN;
        self.gw_b.run(&[
            "ip",
            "addr",
            "del",
            &format!("{old_addr}/{len}"),
            "dev",
            "wan",
        ])?;
        self.gw_b.run(&[
            "ip",
            "addr",
            "add",
            &format!("{new_addr}/{len}"),
            "dev",
            "wan",
        ])?;
        self.gw_b
            .run(&["ip", "route", "replace", "default", "via", INET_ROUTER])?;
        Ok(())
    }
}
