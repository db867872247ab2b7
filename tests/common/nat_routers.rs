//! A gateway behind a Linux NAT router, with a STUN server (coturn) on the simulated internet,
//! for the NAT traversal tests (issue #5).
//!
//! ```text
//!  gw                     router                              stun (coturn, RFC 5780)
//!  lan0 192.168.77.2 ── lan0 192.168.77.1                     198.51.100.10:3478/3479
//!                         wan0 198.51.100.1 (or 11.77.0.1) ── wan0 198.51.100.11:3478/3479
//! ```
//!
//! The router is one of [`RouterKind`]: nftables `masquerade` (Linux keeps the source port when
//! it is free: endpoint-independent mapping, address-and-port-dependent filtering),
//! `masquerade fully-random` (a random port per connection: symmetric), or masquerade plus
//! `miniupnpd` (nftables backend) answering UPnP IGD on the LAN. miniupnpd refuses a private,
//! shared or documentation address on its WAN side, so that router's WAN gets `11.77.0.1`, an
//! ordinary address that exists only inside these namespaces (they have no link to the outside);
//! the STUN host reaches it by an on-link route. [`RouterKind::Sitelink`] runs sitelink's own
//! NAT router (`sitelink-nat-router`) instead of nftables, in any of its four behaviours.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::Value;

use super::{bins, unique_id, veth, wait_until, Daemon, Netns, TestDir};

pub(crate) const GW_LAN: &str = "192.168.77.2";
pub(crate) const ROUTER_LAN: &str = "192.168.77.1";
pub(crate) const STUN_PRIMARY: &str = "198.51.100.10";
pub(crate) const STUN_ALT: &str = "198.51.100.11";
pub(crate) const STUN_PORT: u16 = 3478;
pub(crate) const STUN_ALT_PORT: u16 = 3479;
/// The masquerading routers' WAN address.
pub(crate) const WAN_MASQ: &str = "198.51.100.1";
/// The UPnP router's WAN address (see the module doc).
pub(crate) const WAN_UPNP: &str = "11.77.0.1";

/// What kind of NAT the router does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RouterKind {
    /// nftables `masquerade`: port-preserving, port-restricted cone.
    Masquerade,
    /// nftables `masquerade fully-random`: symmetric.
    MasqueradeRandom,
    /// `masquerade` plus miniupnpd (UPnP IGD, nftables backend).
    Upnp,
    /// sitelink's own NAT router (`sitelink-nat-router`) with this `--behavior` (one of
    /// [`super::nat_router::BEHAVIORS`]), masquerading onto the WAN address.
    Sitelink(&'static str),
}

/// The three namespaces and their daemons; everything goes away on drop.
pub(crate) struct NatLab {
    // Daemons first: they are dropped (killed) before their namespaces.
    upnpd: Option<Daemon>,
    nat_router: Option<Daemon>,
    turn: Daemon,
    pub(crate) gw: Netns,
    pub(crate) router: Netns,
    pub(crate) stun: Netns,
    pub(crate) kind: RouterKind,
    pub(crate) dir: TestDir,
}

impl NatLab {
    pub(crate) fn new(test: &str, kind: RouterKind) -> Result<Self> {
        let dir = TestDir::new(test)?;
        let id = unique_id();
        let gw = Netns::new(format!("sl-{id}-gw"))?;
        let router = Netns::new(format!("sl-{id}-nat"))?;
        let stun = Netns::new(format!("sl-{id}-stun"))?;
        veth(&gw, "lan0", &router, "lan0")?;
        veth(&router, "wan0", &stun, "wan0")?;

        gw.addr("lan0", &format!("{GW_LAN}/24"))?;
        gw.route_via("default", ROUTER_LAN)?;
        router.addr("lan0", &format!("{ROUTER_LAN}/24"))?;
        stun.addr("wan0", &format!("{STUN_PRIMARY}/24"))?;
        stun.addr("wan0", &format!("{STUN_ALT}/24"))?;
        let wan = match kind {
            RouterKind::Upnp => WAN_UPNP,
            _ => WAN_MASQ,
        };
        if kind == RouterKind::Upnp {
            router.addr("wan0", &format!("{wan}/32"))?;
            router.run(&[
                "ip",
                "route",
                "add",
                "198.51.100.0/24",
                "dev",
                "wan0",
                "src",
                wan,
            ])?;
            stun.run(&["ip", "route", "add", &format!("{wan}/32"), "dev", "wan0"])?;
        } else {
            router.addr("wan0", &format!("{wan}/24"))?;
        }
        router.enable_forwarding()?;
        let nat_router = match kind {
            RouterKind::Sitelink(behavior) => Some(super::nat_router::start_nat_router(
                &router,
                "lan0",
                "wan0",
                wan,
                behavior,
                &dir.join("nat-router.log"),
                &[],
            )?),
            _ => {
                router.sh(&format!("nft -f - <<'EOF'\n{}\nEOF", ruleset(kind)))?;
                None
            }
        };

        let turn = start_coturn(&stun, &dir)?;
        let upnpd = match kind {
            RouterKind::Upnp => Some(start_miniupnpd(&router, &dir, "192.168.77.0/24")?),
            _ => None,
        };
        Ok(Self {
            upnpd,
            nat_router,
            turn,
            gw,
            router,
            stun,
            kind,
            dir,
        })
    }

    /// The router's WAN address: the public side of the NAT.
    pub(crate) fn wan(&self) -> &'static str {
        match self.kind {
            RouterKind::Upnp => WAN_UPNP,
            _ => WAN_MASQ,
        }
    }

    /// Writes a gateway key and config (`[traversal]` with the STUN server and `upnp`) and
    /// returns the config's path.
    pub(crate) fn gateway_config(&self, listen_port: u16, upnp: bool) -> Result<PathBuf> {
        bins::KeyPair::generate(&self.dir.join("gw.key"))?;
        let path = self.dir.join("gw.toml");
        let text = format!(
            "[interface]\nname = \"slt0\"\nprivate_key_file = \"gw.key\"\nlisten_port = \
             {listen_port}\naddress = [\"10.77.0.1/24\"]\n\n[traversal]\nstun_servers = \
             [\"{STUN_PRIMARY}:{STUN_PORT}\"]\nupnp = {upnp}\n"
        );
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }

    /// `sitelink-gateway netcheck --config CONFIG [--json]` in the gateway's namespace.
    pub(crate) fn netcheck(&self, config: &Path, json: bool) -> Result<String> {
        let gateway = bins::bin(bins::GATEWAY);
        let gateway = gateway.to_string_lossy();
        let config = config.to_string_lossy();
        let mut argv = vec![gateway.as_ref(), "netcheck", "--config", config.as_ref()];
        if json {
            argv.push("--json");
        }
        self.gw.run(&argv).context("sitelink-gateway netcheck")
    }

    /// `netcheck --json`, parsed.
    pub(crate) fn netcheck_json(&self, config: &Path) -> Result<Value> {
        let out = self.netcheck(config, true)?;
        serde_json::from_str(&out).with_context(|| format!("netcheck output is not JSON: {out:?}"))
    }

    /// The router's UDP conntrack table (`conntrack -L -p udp`).
    pub(crate) fn conntrack(&self) -> Result<String> {
        self.router.run(&["conntrack", "-L", "-p", "udp"])
    }

    /// The router's UPnP mappings as `upnpc -l` on the gateway's LAN lists them.
    pub(crate) fn upnp_list(&self) -> Result<String> {
        self.gw.run(&["upnpc", "-l"])
    }

    /// Fails (with its log) if the sitelink NAT router has exited.
    pub(crate) fn ensure_router_running(&mut self) -> Result<()> {
        match self.nat_router.as_mut() {
            Some(r) => r.ensure_running(),
            None => Ok(()),
        }
    }
}

/// The router's nftables ruleset (its WAN interface is `wan0`). The UPnP one has the table and
/// chains miniupnpd's config names (its nftables backend does not create them).
pub(crate) fn ruleset(kind: RouterKind) -> String {
    match kind {
        RouterKind::Masquerade | RouterKind::MasqueradeRandom => {
            let random = if kind == RouterKind::MasqueradeRandom {
                " fully-random"
            } else {
                ""
            };
            format!(
                "table ip sl_nat {{\n  chain postrouting {{\n    type nat hook postrouting \
                 priority 100; policy accept;\n    oifname \"wan0\" masquerade{random}\n  }}\n}}"
            )
        }
        RouterKind::Upnp => "table inet sl_upnp {
  chain forward { type filter hook forward priority 0; policy accept; jump miniupnpd; }
  chain miniupnpd { }
  chain prerouting { type nat hook prerouting priority -100; policy accept; jump prerouting_miniupnpd; }
  chain postrouting { type nat hook postrouting priority 100; policy accept; jump postrouting_miniupnpd; oifname \"wan0\" masquerade; }
  chain prerouting_miniupnpd { }
  chain postrouting_miniupnpd { }
}"
        .to_owned(),
        // The sitelink router steers packets through its own TUN devices: no nftables NAT.
        RouterKind::Sitelink(_) => String::new(),
    }
}

/// coturn as a STUN-only server on both addresses and both ports (RFC 5780 OTHER-ADDRESS and
/// CHANGE-REQUEST), its pid file and log in the test's directory.
fn start_coturn(stun: &Netns, dir: &TestDir) -> Result<Daemon> {
    let pid = dir.join("turnserver.pid");
    let log = dir.join("turnserver.log");
    let db = dir.join("turndb");
    let (pid, log, db) = (
        pid.to_string_lossy().into_owned(),
        log.to_string_lossy().into_owned(),
        db.to_string_lossy().into_owned(),
    );
    let port = STUN_PORT.to_string();
    let alt_port = STUN_ALT_PORT.to_string();
    let daemon = Daemon::spawn(
        stun,
        "turnserver",
        &dir.join("turnserver.out"),
        &[
            "turnserver",
            "-n",
            "--stun-only",
            "--listening-ip",
            STUN_PRIMARY,
            "--listening-ip",
            STUN_ALT,
            "--listening-port",
            &port,
            "--alt-listening-port",
            &alt_port,
            "--no-cli",
            "--no-tls",
            "--no-dtls",
            "--pidfile",
            &pid,
            "--log-file",
            &log,
            "--simple-log",
            "--userdb",
            &db,
        ],
    )?;
    let want = format!("{STUN_ALT}:{STUN_ALT_PORT}");
    wait_until(
        Duration::from_secs(20),
        "turnserver listening on all four addresses",
        || {
            stun.run(&["ss", "-ulnH"])
                .is_ok_and(|out| out.contains(&want))
        },
    )?;
    Ok(daemon)
}

/// miniupnpd on the router: LAN side lan0, WAN side wan0, nftables chains from [`ruleset`];
/// hosts in `lan` (a prefix) may map ports 1024-65535 to themselves.
pub(crate) fn start_miniupnpd(router: &Netns, dir: &TestDir, lan: &str) -> Result<Daemon> {
    let conf = dir.join("miniupnpd.conf");
    std::fs::write(
        &conf,
        format!(
            "ext_ifname=wan0\nlistening_ip=lan0\nport=0\nenable_natpmp=no\nenable_upnp=yes\nsecure_mode=yes\nsystem_uptime=yes\n\
             uuid=5c2e6c1e-2f1e-4c7e-9d1e-0123456789ab\n\
             upnp_table_name=sl_upnp\nupnp_nat_table_name=sl_upnp\n\
             upnp_forward_chain=miniupnpd\nupnp_nat_chain=prerouting_miniupnpd\n\
             upnp_nat_postrouting_chain=postrouting_miniupnpd\n\
             allow 1024-65535 {lan} 1024-65535\ndeny 0-65535 0.0.0.0/0 0-65535\n"
        ),
    )
    .with_context(|| format!("writing {}", conf.display()))?;
    let pid = dir.join("miniupnpd.pid");
    let log = dir.join("miniupnpd.log");
    let mut daemon = Daemon::spawn(
        router,
        "miniupnpd",
        &log,
        &[
            "miniupnpd",
            "-f",
            &conf.to_string_lossy(),
            "-d",
            "-P",
            &pid.to_string_lossy(),
        ],
    )?;
    daemon.wait_for_log("HTTP listening on port", Duration::from_secs(20))?;
    Ok(daemon)
}
