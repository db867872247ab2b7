//! A standalone NAT router: the sans-IO [`Nat`] engine between two interfaces of one network
//! namespace, for experiments (home and carrier NATs of every RFC 4787 type, full cone
//! included, which netfilter cannot express).
//!
//! Two TUN devices carry the packets to the engine, steered by [`crate::nat_routing`]:
//!
//! - `<name>-in` gets every packet arriving on the inside interface that is not addressed to
//!   the router itself (packets to the external addresses are, for hairpinning); the engine
//!   translates them outbound;
//! - `<name>-out` gets the packets arriving from the outside for an external address (TCP and
//!   UDP on any port, ICMP echo replies and errors); the engine translates them inbound.
//!
//! Translated packets are written back to the TUN they came from and the kernel routes them on
//! (so the TTL drops by two: once into the TUN, once out). Packets forwarded straight from the
//! outside interface to the inside one are dropped: only what the NAT lets in enters.

use std::net::Ipv4Addr;
use std::time::Instant;

use anyhow::{Context, Result};
use sitelink_core::nat::{DropReason, Nat, NatConfig, NatEvent, Verdict};
use tokio_tun::Tun;
use tracing::{debug, info, trace, warn};

use crate::nat_routing::{self, Installed, Steering};

/// MTU of the router's TUN devices (above any Ethernet MTU the interfaces are likely to have).
const TUN_MTU: u16 = 9000;

/// What the router runs.
#[derive(Debug, Clone)]
pub struct RouterOptions {
    /// The inside (LAN) interface.
    pub inside: String,
    /// The outside (WAN) interface.
    pub outside: String,
    /// Prefix of the TUN device names (`<name>-in`, `<name>-out`), at most 11 bytes.
    pub name: String,
    /// The NAT rules: masquerade onto the external addresses, forwards.
    pub nat: NatConfig,
    /// The external addresses (masquerade pool, forward addresses).
    pub externals: Vec<Ipv4Addr>,
}

/// Runs the router until `shutdown` resolves, then removes what it installed.
pub async fn run(
    opts: RouterOptions,
    seed: u64,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<()> {
    let mut nat = Nat::new(&opts.nat, seed, Instant::now()).context("invalid NAT rules")?;
    std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")
        .context("cannot turn on IPv4 forwarding")?;
    let in_name = format!("{}-in", opts.name);
    let out_name = format!("{}-out", opts.name);
    let tun_in = crate::tun::create(&in_name, TUN_MTU)?;
    let tun_out = crate::tun::create(&out_name, TUN_MTU)?;
    let (connection, handle, _) =
        rtnetlink::new_connection().context("cannot open a netlink socket")?;
    tokio::spawn(connection);

    let inside = Steering {
        tun: in_name.clone(),
        capture_from: vec![opts.inside.clone()],
        capture_also: opts.externals.clone(),
        isolate: Some((opts.outside.clone(), opts.inside.clone())),
        ..Steering::default()
    };
    let port_range = opts.nat.port_range.map_or((1, u16::MAX), |r| (r.lo, r.hi));
    let forwards = opts
        .nat
        .forward
        .iter()
        .map(|f| nat_routing::SteeredPort {
            proto: match f.proto {
                sitelink_core::nat::ForwardProto::Tcp => "tcp",
                sitelink_core::nat::ForwardProto::Udp => "udp",
            },
            addr: f.external_addr,
            port: f.external_port,
        })
        .collect();
    let outside = Steering {
        tun: out_name.clone(),
        externals: opts.externals.clone(),
        port_range: Some(port_range),
        forwards,
        ..Steering::default()
    };
    let mut installed: Vec<Installed> = Vec::new();
    let setup = async {
        for (tun, steering) in [(&tun_in, &inside), (&tun_out, &outside)] {
            let ifindex = tun
                .index()
                .with_context(|| format!("cannot read the index of {}", steering.tun))?;
            installed.push(nat_routing::install(&handle, ifindex, steering).await?);
        }
        anyhow::Ok(())
    }
    .await;
    if let Err(e) = setup {
        for mut i in installed {
            i.remove().await;
        }
        return Err(e);
    }
    info!(
        inside = %opts.inside,
        outside = %opts.outside,
        externals = ?opts.externals,
        "NAT router up"
    );

    let result = event_loop(&mut nat, &tun_in, &tun_out, shutdown).await;
    info!("NAT router shutting down");
    for mut i in installed {
        i.remove().await;
    }
    let c = nat.counters();
    info!(
        translated_out = c.translated_out,
        translated_in = c.translated_in,
        dropped_filtered = c.dropped.filtered,
        dropped_no_session = c.dropped.no_session,
        sessions_created = c.sessions_created,
        "NAT router counters"
    );
    result
}

async fn event_loop(
    nat: &mut Nat,
    tun_in: &Tun,
    tun_out: &Tun,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<()> {
    let mut buf_in = vec![0u8; 65_535];
    let mut buf_out = vec![0u8; 65_535];
    tokio::pin!(shutdown);
    loop {
        let timer = nat.poll_timeout();
        let sleep = async {
            match timer {
                Some(t) => tokio::time::sleep_until(tokio::time::Instant::from_std(t)).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = &mut shutdown => return Ok(()),
            r = tun_in.recv(&mut buf_in) => {
                let n = r.context("reading the inside TUN")?;
                let p = &mut buf_in[..n];
                match nat.translate_outbound(p, Instant::now()) {
                    Verdict::Forward | Verdict::Pass | Verdict::Hairpin => write(tun_in, p),
                    Verdict::Reply { packet, .. } => write(tun_in, &packet),
                    Verdict::Drop(reason) => trace!(%reason, "outbound packet dropped"),
                }
            }
            r = tun_out.recv(&mut buf_out) => {
                let n = r.context("reading the outside TUN")?;
                let p = &mut buf_out[..n];
                match nat.translate_inbound(p, Instant::now()) {
                    Verdict::Forward | Verdict::Hairpin => write(tun_out, p),
                    // Not the NAT's: the router's own (e.g. an ICMP error about its own
                    // packets); hand it to the local stack.
                    Verdict::Pass | Verdict::Drop(DropReason::IcmpErrorUnmatched) => write(tun_out, p),
                    Verdict::Reply { packet, .. } => write(tun_out, &packet),
                    Verdict::Drop(reason) => trace!(%reason, "inbound packet dropped"),
                }
            }
            () = sleep => {
                nat.handle_timeout(Instant::now());
                while let Some(NatEvent::LimitReached { reason, host }) = nat.poll_event() {
                    warn!(%reason, %host, "NAT refused a new flow");
                }
            }
        }
    }
}

fn write(tun: &Tun, packet: &[u8]) {
    if let Err(e) = tun.try_send(packet) {
        debug!(error = %e, "TUN write failed");
    }
}
