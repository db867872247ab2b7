//! Steering packets into a TUN device for the userspace NAT: nftables marks, a policy route,
//! and the sysctls that let translated packets back out.
//!
//! The NAT engine runs in userspace behind a TUN device, so two kinds of packets must reach that
//! device although the kernel would handle them otherwise:
//!
//! - packets **to an address the host owns** on a NAT port (replies to masqueraded flows,
//!   forwarded ports): the kernel would deliver them to its own stack;
//! - for the standalone NAT router, everything arriving on its inside interface.
//!
//! What [`install`] sets up, and [`Installed::remove`] takes down again:
//!
//! 1. an nftables table `ip sitelink_nat_<tun>` whose `prerouting` chain (priority mangle) sets
//!    fwmark `0x51a70000 | ifindex` on those packets: TCP and UDP to a pool address with a
//!    destination port in the NAT's port range, forwarded ports, ICMP echo replies with an id in
//!    the range and ICMP errors to a pool address (errors the engine does not know about are
//!    handed back to the local stack through the TUN). Packets coming out of the TUN itself are
//!    never marked. For the router, a `forward` chain also drops packets from the outside
//!    interface to the inside one that did not go through the NAT;
//! 2. a routing table `51000 + ifindex` with one route, `default dev <tun>`, and a rule
//!    `fwmark <mark> lookup <table>` at priority 90;
//! 3. because the kernel consults the `local` table first (rule priority 0), and a local
//!    destination would never reach rule 90, the `local` rule is moved to priority 100 (rule 0
//!    removed, rule 100 added; restored on removal). ARP is unaffected: ARP lookups carry no
//!    fwmark, so they still find the local addresses;
//! 4. on the TUN device, `accept_local = 1` (translated packets carry a source address the host
//!    owns, which is otherwise a martian) and `rp_filter = 0` (the kernel uses the larger of this
//!    and `all.rp_filter`, so that must be 0 too; a warning says so). These go away with the
//!    device.
//!
//! nftables rules are loaded with the `nft` command (no pure-Rust nftables crate fits, see
//! DEPENDENCIES.md); routes and rules go through rtnetlink.

use std::io::Write;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

use anyhow::{anyhow, bail, Context, Result};
use futures::TryStreamExt;
use rtnetlink::packet_route::route::RouteScope;
use rtnetlink::packet_route::rule::{RuleAction, RuleAttribute, RuleMessage};
use rtnetlink::{Handle, IpVersion, RouteMessageBuilder};
use sitelink_core::nat::{ForwardProto, NatConfig};
use tracing::{debug, info, warn};

/// Priority of the fwmark rule.
pub const MARK_RULE_PRIORITY: u32 = 90;
/// Priority the `local` table's rule moves to, after the fwmark rules.
pub const LOCAL_RULE_PRIORITY: u32 = 100;
/// Routing tables used are this plus the TUN's ifindex.
pub const TABLE_BASE: u32 = 51000;
/// Marks used are this ORed with the TUN's ifindex.
pub const MARK_BASE: u32 = 0x51a7_0000;
/// The kernel's `local` routing table.
const LOCAL_TABLE: u32 = 255;

/// A forwarded port to steer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SteeredPort {
    /// `"tcp"` or `"udp"`.
    pub proto: &'static str,
    /// Only this address; `None`: every external address.
    pub addr: Option<Ipv4Addr>,
    /// The port.
    pub port: u16,
}

/// What to steer into one TUN device.
#[derive(Debug, Clone, Default)]
pub struct Steering {
    /// The TUN device.
    pub tun: String,
    /// The NAT's external addresses (masquerade pools, forward addresses).
    pub externals: Vec<Ipv4Addr>,
    /// The NAT's port range (masquerade ports and ICMP ids), inclusive.
    pub port_range: Option<(u16, u16)>,
    /// Forwarded ports.
    pub forwards: Vec<SteeredPort>,
    /// Interfaces whose every packet not addressed to the host itself goes into the TUN: the
    /// standalone router's inside interface.
    pub capture_from: Vec<String>,
    /// With `capture_from`: host addresses whose packets are captured all the same (the
    /// router's external addresses, so inside hosts can hairpin through them).
    pub capture_also: Vec<Ipv4Addr>,
    /// `(outside, inside)`: drop packets forwarded straight from `outside` to `inside`
    /// (the standalone router: only translated packets may enter).
    pub isolate: Option<(String, String)>,
}

/// What [`install`] set up, for [`Installed::remove`].
#[derive(Debug)]
pub struct Installed {
    handle: Handle,
    nft_table: Option<String>,
    mark: u32,
    table: u32,
    ifindex: u32,
    route: bool,
    rule: bool,
    moved_local: bool,
}

fn nft_name(tun: &str) -> String {
    let clean: String = tun
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    format!("sitelink_nat_{clean}")
}

fn set(items: &[String]) -> String {
    if items.len() == 1 {
        items[0].clone()
    } else {
        format!("{{ {} }}", items.join(", "))
    }
}

/// The nftables script for `s` with fwmark `mark`.
pub fn nft_script(s: &Steering, mark: u32) -> String {
    let table = nft_name(&s.tun);
    let tun = &s.tun;
    let mut rules = vec![format!("iifname \"{tun}\" return")];
    let ext: Vec<String> = s.externals.iter().map(Ipv4Addr::to_string).collect();
    let also: Vec<String> = s.capture_also.iter().map(Ipv4Addr::to_string).collect();
    for inside in &s.capture_from {
        if !also.is_empty() {
            rules.push(format!(
                "iifname \"{inside}\" ip daddr {} meta mark set {mark:#x} return",
                set(&also)
            ));
        }
        rules.push(format!("iifname \"{inside}\" fib daddr type local return"));
        rules.push(format!(
            "iifname \"{inside}\" meta mark set {mark:#x} return"
        ));
    }
    if !ext.is_empty() {
        let e = set(&ext);
        if let Some((lo, hi)) = s.port_range {
            rules.push(format!(
                "ip daddr {e} meta l4proto {{ tcp, udp }} th dport {lo}-{hi} meta mark set {mark:#x}"
            ));
            rules.push(format!(
                "ip daddr {e} icmp type echo-reply icmp id {lo}-{hi} meta mark set {mark:#x}"
            ));
        }
        rules.push(format!(
            "ip daddr {e} icmp type {{ destination-unreachable, time-exceeded, parameter-problem }} meta mark set {mark:#x}"
        ));
    }
    for f in &s.forwards {
        let addr = match f.addr {
            Some(a) => a.to_string(),
            None if ext.is_empty() => continue,
            None => set(&ext),
        };
        rules.push(format!(
            "ip daddr {addr} {} dport {} meta mark set {mark:#x}",
            f.proto, f.port
        ));
    }
    let mut script = format!(
        "table ip {table} {{\n  chain prerouting {{\n    type filter hook prerouting priority mangle; policy accept;\n"
    );
    for r in rules {
        script.push_str("    ");
        script.push_str(&r);
        script.push('\n');
    }
    script.push_str("  }\n");
    if let Some((outside, inside)) = &s.isolate {
        script.push_str(&format!(
            "  chain forward {{\n    type filter hook forward priority filter; policy accept;\n    iifname \"{outside}\" oifname \"{inside}\" drop\n  }}\n"
        ));
    }
    script.push_str("}\n");
    script
}

fn nft(script: &str) -> Result<()> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run `nft` (install the nftables package)")?;
    child
        .stdin
        .take()
        .context("nft stdin")?
        .write_all(script.as_bytes())
        .context("writing to nft")?;
    let out = child.wait_with_output().context("waiting for nft")?;
    if !out.status.success() {
        bail!(
            "nft failed: {}\nscript:\n{script}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn sysctl(path: &str, value: &str) -> Result<()> {
    std::fs::write(path, value).with_context(|| format!("cannot write {value} to {path}"))
}

/// What the gateway steers into its TUN device `tun` for `config` (see
/// [`sitelink_core::gateway::nat`]); `None` when nothing needs steering (netmaps only).
pub fn gateway_steering(
    tun: &str,
    config: &NatConfig,
    listen_port: u16,
) -> Result<Option<Steering>> {
    if config.masquerade.is_empty() && config.forward.is_empty() {
        return Ok(None);
    }
    let config = sitelink_core::gateway::nat::effective_config(config);
    let port_range = config.port_range.map(|r| (r.lo, r.hi));
    if let Some((lo, hi)) = port_range {
        if (lo..=hi).contains(&listen_port) {
            bail!(
                "[nat] port_range {lo}-{hi} contains the tunnel's listen_port {listen_port}\n  fix: move port_range (the default is 61000-65535) or listen_port so they do not overlap"
            );
        }
    }
    let forwards = config
        .forward
        .iter()
        .map(|f| SteeredPort {
            proto: match f.proto {
                ForwardProto::Tcp => "tcp",
                ForwardProto::Udp => "udp",
            },
            addr: f.external_addr,
            port: f.external_port,
        })
        .collect();
    Ok(Some(Steering {
        tun: tun.to_owned(),
        externals: config.external_addresses(),
        port_range,
        forwards,
        ..Steering::default()
    }))
}

/// Sets up the gateway's steering (see [`gateway_steering`]) on its own netlink connection.
pub async fn install_for_gateway(
    tun: &str,
    ifindex: u32,
    config: Option<&NatConfig>,
    listen_port: u16,
) -> Result<Option<Installed>> {
    let Some(config) = config else {
        return Ok(None);
    };
    let Some(steering) = gateway_steering(tun, config, listen_port)? else {
        return Ok(None);
    };
    let (connection, handle, _) =
        rtnetlink::new_connection().context("cannot open a netlink socket")?;
    tokio::spawn(connection);
    install(&handle, ifindex, &steering).await.map(Some)
}

/// Installs the steering for `s` into the TUN device with index `ifindex`.
pub async fn install(handle: &Handle, ifindex: u32, s: &Steering) -> Result<Installed> {
    let mark = MARK_BASE | (ifindex & 0xffff);
    let table = TABLE_BASE + ifindex;
    let mut installed = Installed {
        handle: handle.clone(),
        nft_table: None,
        mark,
        table,
        ifindex,
        route: false,
        rule: false,
        moved_local: false,
    };
    match install_steps(&mut installed, s).await {
        Ok(()) => Ok(installed),
        Err(e) => {
            installed.remove().await;
            Err(e)
        }
    }
}

async fn install_steps(i: &mut Installed, s: &Steering) -> Result<()> {
    let conf = format!("/proc/sys/net/ipv4/conf/{}", s.tun);
    sysctl(&format!("{conf}/accept_local"), "1")?;
    // Not even loose mode: a TUN without an address fails the loose check too.
    sysctl(&format!("{conf}/rp_filter"), "0")?;
    if std::fs::read_to_string("/proc/sys/net/ipv4/conf/all/rp_filter")
        .is_ok_and(|v| v.trim() != "0")
    {
        warn!("net.ipv4.conf.all.rp_filter is not 0: translated packets from the TUN may be dropped as martians; set it to 0");
    }

    let name = nft_name(&s.tun);
    // A table left by a process killed with SIGKILL: replace it.
    let _ = nft(&format!("delete table ip {name}\n"));
    nft(&nft_script(s, i.mark)).context("installing the NAT's nftables rules")?;
    i.nft_table = Some(name);

    let route = RouteMessageBuilder::<Ipv4Addr>::new()
        .output_interface(i.ifindex)
        .table_id(i.table)
        .scope(RouteScope::Link)
        .build();
    i.handle
        .route()
        .add(route)
        .replace()
        .execute()
        .await
        .map_err(|e| anyhow!("cannot add the default route of table {}: {e}", i.table))?;
    i.route = true;

    let rule = i
        .handle
        .rule()
        .add()
        .v4()
        .fw_mark(i.mark)
        .table_id(i.table)
        .priority(MARK_RULE_PRIORITY)
        .action(RuleAction::ToTable);
    rule.execute()
        .await
        .map_err(|e| anyhow!("cannot add the fwmark rule for table {}: {e}", i.table))?;
    i.rule = true;

    i.moved_local = move_local_rule(&i.handle).await?;
    info!(
        tun = %s.tun,
        mark = format_args!("{:#x}", i.mark),
        table = i.table,
        "NAT steering installed"
    );
    Ok(())
}

async fn rules(handle: &Handle) -> Result<Vec<RuleMessage>> {
    handle
        .rule()
        .get(IpVersion::V4)
        .execute()
        .try_collect()
        .await
        .map_err(|e| anyhow!("cannot list routing rules: {e}"))
}

fn priority(r: &RuleMessage) -> u32 {
    r.attributes
        .iter()
        .find_map(|a| match a {
            RuleAttribute::Priority(p) => Some(*p),
            _ => None,
        })
        .unwrap_or(0)
}

fn table_of(r: &RuleMessage) -> u32 {
    r.attributes
        .iter()
        .find_map(|a| match a {
            RuleAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(r.header.table))
}

fn is_plain_local(r: &RuleMessage) -> bool {
    table_of(r) == LOCAL_TABLE
        && r.header.action == RuleAction::ToTable
        && r.attributes.iter().all(|a| {
            matches!(
                a,
                RuleAttribute::Priority(_) | RuleAttribute::Table(_) | RuleAttribute::Protocol(_)
            ) || *a == RuleAttribute::SuppressPrefixLen(u32::MAX)
        })
}

/// Moves the `local` rule from priority 0 to [`LOCAL_RULE_PRIORITY`]. Returns whether it moved
/// it (false: already done, by an earlier run or another NAT in this namespace).
async fn move_local_rule(handle: &Handle) -> Result<bool> {
    let all = rules(handle).await?;
    let at_zero = all.iter().find(|r| priority(r) == 0 && is_plain_local(r));
    let Some(at_zero) = at_zero.cloned() else {
        debug!("local rule already moved");
        return Ok(false);
    };
    let has_later = all
        .iter()
        .any(|r| priority(r) == LOCAL_RULE_PRIORITY && is_plain_local(r));
    if !has_later {
        handle
            .rule()
            .add()
            .v4()
            .table_id(LOCAL_TABLE)
            .priority(LOCAL_RULE_PRIORITY)
            .action(RuleAction::ToTable)
            .execute()
            .await
            .map_err(|e| anyhow!("cannot add the local rule at {LOCAL_RULE_PRIORITY}: {e}"))?;
    }
    handle
        .rule()
        .del(at_zero)
        .execute()
        .await
        .map_err(|e| anyhow!("cannot remove the local rule at priority 0: {e}"))?;
    debug!(priority = LOCAL_RULE_PRIORITY, "local rule moved");
    Ok(true)
}

/// Puts the `local` rule back at priority 0.
async fn restore_local_rule(handle: &Handle) -> Result<()> {
    let all = rules(handle).await?;
    if !all.iter().any(|r| priority(r) == 0 && is_plain_local(r)) {
        handle
            .rule()
            .add()
            .v4()
            .table_id(LOCAL_TABLE)
            .priority(0)
            .action(RuleAction::ToTable)
            .execute()
            .await
            .map_err(|e| anyhow!("cannot restore the local rule at priority 0: {e}"))?;
    }
    for r in all
        .into_iter()
        .filter(|r| priority(r) == LOCAL_RULE_PRIORITY && is_plain_local(r))
    {
        handle
            .rule()
            .del(r)
            .execute()
            .await
            .map_err(|e| anyhow!("cannot remove the local rule at {LOCAL_RULE_PRIORITY}: {e}"))?;
    }
    Ok(())
}

impl Installed {
    /// The fwmark used.
    pub fn mark(&self) -> u32 {
        self.mark
    }

    /// Takes everything down again. Errors are logged: shutdown goes on.
    pub async fn remove(&mut self) {
        if self.moved_local {
            // Another NAT in this namespace still needs the local rule out of the way.
            let others = rules(&self.handle).await.map(|all| {
                all.iter().any(|r| {
                    priority(r) == MARK_RULE_PRIORITY
                        && r.attributes.iter().any(|a| {
                            matches!(a, RuleAttribute::FwMark(m) if *m & 0xffff_0000 == MARK_BASE && *m != self.mark)
                        })
                })
            });
            match others {
                Ok(true) => debug!("local rule stays moved: another NAT uses it"),
                _ => {
                    if let Err(e) = restore_local_rule(&self.handle).await {
                        warn!(error = %e, "could not restore the local rule");
                    }
                }
            }
            self.moved_local = false;
        }
        if self.rule {
            let mut msg = RuleMessage::default();
            msg.header.family = rtnetlink::packet_route::AddressFamily::Inet;
            msg.header.action = RuleAction::ToTable;
            msg.attributes
                .push(RuleAttribute::Priority(MARK_RULE_PRIORITY));
            msg.attributes.push(RuleAttribute::FwMark(self.mark));
            msg.attributes.push(RuleAttribute::Table(self.table));
            if let Err(e) = self.handle.rule().del(msg).execute().await {
                debug!(error = %e, "fwmark rule already gone");
            }
            self.rule = false;
        }
        if self.route {
            let route = RouteMessageBuilder::<Ipv4Addr>::new()
                .output_interface(self.ifindex)
                .table_id(self.table)
                .scope(RouteScope::Link)
                .build();
            if let Err(e) = self.handle.route().del(route).execute().await {
                debug!(error = %e, "NAT route already gone (with its device)");
            }
            self.route = false;
        }
        if let Some(table) = self.nft_table.take() {
            if let Err(e) = nft(&format!("delete table ip {table}\n")) {
                warn!(error = %e, "could not remove the NAT's nftables table");
            }
        }
        debug!("NAT steering removed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_marks_pool_ports_forwards_and_icmp() {
        let s = Steering {
            tun: "sl0".into(),
            externals: vec![Ipv4Addr::new(198, 51, 100, 1)],
            port_range: Some((61000, 65535)),
            forwards: vec![SteeredPort {
                proto: "tcp",
                addr: None,
                port: 8080,
            }],
            ..Steering::default()
        };
        let text = nft_script(&s, 0x51a7_0005);
        assert!(text.contains("table ip sitelink_nat_sl0 {"), "{text}");
        assert!(text.contains("iifname \"sl0\" return"), "{text}");
        assert!(
            text.contains("ip daddr 198.51.100.1 meta l4proto { tcp, udp } th dport 61000-65535 meta mark set 0x51a70005"),
            "{text}"
        );
        assert!(
            text.contains("ip daddr 198.51.100.1 tcp dport 8080 meta mark set 0x51a70005"),
            "{text}"
        );
        assert!(!text.contains("chain forward"), "{text}");
    }
}
