//! The gateway's event loop: one task that moves packets between the TUN device, the UDP socket
//! and the sans-IO [`Gateway`], services its timers, and answers the control socket.
//!
//! How packets reach the devices (batched with offloads, or one per system call) is the
//! [`datapath`]'s business; `SITELINK_DATAPATH=plain` picks the latter.

mod datapath;
mod stun;
mod traversal;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Instant, SystemTime};

use anyhow::{Context, Result};
use ipnet::IpNet;
use rand_core::{OsRng, RngCore};
use serde_json::json;
use sitelink_core::access::Access;
use sitelink_core::config::GatewayConfig;
use sitelink_core::control::is_control_packet;
use sitelink_core::gateway::{Gateway, Sink};
use sitelink_core::peer::PeerSpec;
use tokio::sync::{mpsc, watch};
use tracing::{info, trace, warn};

use crate::control::{ControlServer, Request};
use crate::lease_store::RedbStore;
use crate::netlink::Netlink;
use datapath::{Devices, Input};
pub use datapath::{Mode as DataPathMode, Report as DataPathReport, DATAPATH_ENV};
use traversal::TraversalDriver;

/// Packets dropped by the I/O layer because a kernel queue was full.
#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct IoCounters {
    /// Datagrams not sent because the UDP socket's send buffer was full.
    pub udp_send_dropped: u64,
    /// Packets not written because the TUN device's queue was full.
    pub tun_write_dropped: u64,
    /// TUN reads dropped because they could not be split into packets (bad virtio header).
    pub tun_read_dropped: u64,
}

/// Builds the core's peer list from the config.
pub fn peer_specs(config: &GatewayConfig) -> Vec<PeerSpec> {
    config.peers.iter().map(PeerSpec::from).collect()
}

/// Runs the gateway described by `config` until `shutdown` resolves, then removes what it
/// installed.
pub async fn run(
    config: GatewayConfig,
    socket_path: PathBuf,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<()> {
    run_with_mapping(config, socket_path, shutdown, None).await
}

/// [`run`], with the external endpoint of a port mapping this host holds on its NAT (UPnP,
/// [`crate::upnp::UpnpTask::mapped`]): the traversal agent offers it to the rendezvous as a
/// `mapped` candidate whenever it appears or changes.
pub async fn run_with_mapping(
    config: GatewayConfig,
    socket_path: PathBuf,
    shutdown: impl std::future::Future<Output = ()>,
    mut mapped: Option<watch::Receiver<Option<SocketAddr>>>,
) -> Result<()> {
    let iface = &config.interface;
    let mut gateway = Gateway::new(iface.private_key.clone(), Instant::now());
    for spec in peer_specs(&config) {
        gateway
            .add_peer(spec)
            .with_context(|| format!("{}", config.path.display()))?;
    }

    if let Some(nat) = &config.nat {
        gateway
            .set_nat(nat, OsRng.next_u64(), Instant::now())
            .with_context(|| format!("{}: [nat]", config.path.display()))?;
    }

    let mut access = match &config.pool {
        Some(pool) => {
            let store = RedbStore::open(&pool.store)?;
            let access = Access::new(
                &config,
                store,
                &mut gateway,
                Instant::now(),
                SystemTime::now(),
            )
            .with_context(|| format!("{}", config.path.display()))?;
            Some(access)
        }
        None => None,
    };

    let mode = DataPathMode::from_env()?;
    let devices = Devices::open(&iface.name, iface.mtu, iface.listen_port, mode).await?;
    let listen_port = devices.local_port()?;
    let ifindex = devices.ifindex(&iface.name)?;
    let netlink = Netlink::connect()?;
    let mut routes: Vec<IpNet> = config
        .peers
        .iter()
        .flat_map(|p| p.allowed_ips.iter().copied())
        .collect();
    // Leased addresses live in the pool's ranges: route them all into the tunnel.
    if let Some(pool) = &config.pool {
        routes.extend(pool.ranges.iter().map(|&r| IpNet::V4(r)));
    }
    let installed = netlink
        .configure(&iface.name, ifindex, &iface.address, &routes)
        .await?;
    let nat_steering = match crate::nat_routing::install_for_gateway(
        &iface.name,
        ifindex,
        config.nat.as_ref(),
        listen_port,
    )
    .await
    {
        Ok(s) => s,
        Err(e) => {
            netlink.remove(&installed).await;
            return Err(e);
        }
    };

    let mut traversal = TraversalDriver::new(&config, listen_port, Instant::now());
    let mut tunnel_stun = stun::TunnelStun::new(&config, Instant::now());
    if traversal.is_none() {
        // Nobody to offer the mapping to.
        mapped = None;
    }
    let (req_tx, mut req_rx) = mpsc::channel::<Request>(16);
    let control = ControlServer::start(&socket_path, req_tx)?;
    info!(
        interface = %iface.name,
        listen_port,
        public_key = %gateway.public_key(),
        peers = gateway.peer_count(),
        socket = %socket_path.display(),
        "gateway up"
    );

    let mut io = devices.data_path(iface.mtu);
    tokio::pin!(shutdown);
    // One timer for the whole loop, moved only when the next deadline changes: a new `Sleep`
    // per wake-up would enter and leave tokio's timer wheel on every packet.
    let timer = tokio::time::sleep_until(tokio::time::Instant::from_std(gateway.poll_timeout()));
    tokio::pin!(timer);
    let result: Result<()> = loop {
        let mut next = gateway.poll_timeout();
        if let Some(access) = &access {
            next = next.min(access.poll_timeout(Instant::now(), SystemTime::now()));
        }
        if let Some(t) = traversal.as_ref().and_then(TraversalDriver::poll_timeout) {
            next = next.min(t);
        }
        if let Some(s) = &tunnel_stun {
            next = next.min(s.poll_timeout());
        }
        let deadline = tokio::time::Instant::from_std(next);
        if timer.deadline() != deadline {
            timer.as_mut().reset(deadline);
        }
        tokio::select! {
            () = &mut shutdown => break Ok(()),
            // A TUN read error ends the loop; UDP errors (ICMP errors from earlier sends surface
            // as ECONNREFUSED) are logged inside and yield nothing.
            r = io.wait() => {
                let fed = r.and_then(|ready| io.feed(ready, |input, now, sink| match input {
                    Input::Tun(packet) => {
                        let mut sink = TraversalDriver::sink(traversal.as_mut(), sink);
                        gateway.handle_tun_packet(packet, now, &mut sink);
                    }
                    Input::Datagram(src, bytes) => {
                        let taken = tunnel_stun.as_mut().is_some_and(|s| s.handle_datagram(src, bytes, now))
                            || traversal.as_mut().is_some_and(|t| t.handle_datagram(&mut gateway, src, bytes, now, sink));
                        if !taken {
                            let mut sink = TraversalDriver::sink(traversal.as_mut(), sink);
                            handle_datagram(&mut gateway, access.as_mut(), src, bytes, now, &mut sink);
                        }
                    }
                }));
                if let Err(e) = fed {
                    break Err(e);
                }
            }
            () = &mut timer => {
                let now = Instant::now();
                io.emit(|sink| {
                    if let Some(s) = tunnel_stun.as_mut() {
                        s.handle_timeout(now, sink);
                    }
                    if let Some(t) = traversal.as_mut() {
                        t.handle_timeout(&mut gateway, now, sink);
                    }
                    let mut sink = TraversalDriver::sink(traversal.as_mut(), sink);
                    gateway.handle_timeout(now, &mut sink);
                    if let Some(access) = access.as_mut() {
                        access.handle_timeout(now, SystemTime::now(), &mut gateway, &mut sink);
                    }
                });
            }
            changed = mapping_changed(mapped.as_mut()) => {
                match (changed, traversal.as_mut()) {
                    (Some(external), Some(t)) => t.set_mapped(external, Instant::now()),
                    // The UPnP task ended: no more changes.
                    _ => mapped = None,
                }
            }
            Some(req) = req_rx.recv() => {
                let mut body = answer(&req.command, &gateway, access.as_ref(), &iface.name, listen_port, &io.counters(), &io.report());
                if let (Some(t), "status") = (traversal.as_ref(), req.command.as_str()) {
                    body = t.annotate_status(body);
                }
                if let (Some(s), "status") = (tunnel_stun.as_ref(), req.command.as_str()) {
                    body = stun::annotate_status(body, s.public_endpoint());
                }
                let _ = req.reply.send(body);
            }
        }
    };

    info!(interface = %iface.name, "shutting down");
    if let Some(mut steering) = nat_steering {
        steering.remove().await;
    }
    netlink.remove(&installed).await;
    drop(control);
    drop(io);
    drop(devices);
    if let Err(e) = &result {
        warn!(error = %e, "gateway stopped on error");
    }
    result
}

/// The next value of the port-mapping watch (`None` when its sender is gone); never resolves
/// without a watch.
async fn mapping_changed(
    mapped: Option<&mut watch::Receiver<Option<SocketAddr>>>,
) -> Option<Option<SocketAddr>> {
    match mapped {
        Some(rx) => match rx.changed().await {
            Ok(()) => Some(*rx.borrow_and_update()),
            Err(_) => None,
        },
        None => std::future::pending().await,
    }
}

/// Hands one received datagram to the control protocol (when the gateway has a `[pool]` and the
/// datagram is a control message) or to the WireGuard data plane.
fn handle_datagram(
    gateway: &mut Gateway,
    access: Option<&mut Access<RedbStore>>,
    src: SocketAddr,
    bytes: &[u8],
    now: Instant,
    sink: &mut impl Sink,
) {
    match access {
        Some(access) if is_control_packet(bytes) => {
            if let Err(e) = access.handle_datagram(
                src,
                bytes,
                now,
                SystemTime::now(),
                &mut OsRng,
                gateway,
                sink,
            ) {
                trace!(%src, error = %e, "control datagram dropped");
            }
        }
        _ => gateway.handle_datagram(src, bytes, now, sink),
    }
}

fn answer(
    command: &str,
    gateway: &Gateway,
    access: Option<&Access<RedbStore>>,
    ifname: &str,
    listen_port: u16,
    io_counters: &IoCounters,
    datapath: &DataPathReport,
) -> String {
    match command {
        "status" => {
            let status = gateway.status();
            json!({
                "interface": {
                    "name": ifname,
                    "public_key": status.public_key,
                    "listen_port": listen_port,
                },
                "peers": status.peers,
                "counters": status.counters,
                "io_counters": io_counters,
                "datapath": datapath,
                "control": access.map(|a| json!({
                    "counters": a.control_counters(),
                    "access": a.counters(),
                })),
            })
            .to_string()
        }
        "nat" => match gateway.nat_report(Instant::now()) {
            Some(report) => json!(report).to_string(),
            None => json!({ "error": "this gateway has no [nat] rules" }).to_string(),
        },
        "leases" => match access {
            Some(access) => leases_json(access).to_string(),
            None => {
                json!({ "error": "this gateway has no [pool]: it leases no addresses" }).to_string()
            }
        },
        other => json!({ "error": format!("unknown command {other:?}") }).to_string(),
    }
}

/// The `leases` answer: every lease the pool knows, with the pool's size.
fn leases_json(access: &Access<RedbStore>) -> serde_json::Value {
    let pool = access.pool();
    json!({
        "pool": {
            "ranges": pool.settings().ranges,
            "size": pool.size(),
            "lease_time": pool.settings().lease_time.as_secs(),
        },
        "leases": access.leases(SystemTime::now()),
    })
}
