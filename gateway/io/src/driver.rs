//! The gateway's event loop: one task that moves packets between the TUN device, the UDP socket
//! and the sans-IO [`Gateway`], services its timers, and answers the control socket.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Instant, SystemTime};

use anyhow::{Context, Result};
use ipnet::IpNet;
use rand_core::OsRng;
use serde_json::json;
use sitelink_core::access::Access;
use sitelink_core::config::GatewayConfig;
use sitelink_core::control::is_control_packet;
use sitelink_core::gateway::{Gateway, Sink};
use sitelink_core::peer::PeerSpec;
use tokio::sync::mpsc;
use tokio_tun::Tun;
use tracing::{info, trace, warn};

use crate::control::{ControlServer, Request};
use crate::lease_store::RedbStore;
use crate::netlink::Netlink;
use crate::udp::UdpTransport;

/// Packets dropped by the I/O layer because a kernel queue was full.
#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct IoCounters {
    /// Datagrams not sent because the UDP socket's send buffer was full.
    pub udp_send_dropped: u64,
    /// Packets not written because the TUN device's queue was full.
    pub tun_write_dropped: u64,
}

/// Writes the core's output straight to the socket and the TUN device, without waiting.
struct DirectSink<'a> {
    udp: &'a UdpTransport,
    tun: &'a Tun,
    counters: &'a mut IoCounters,
}

impl Sink for DirectSink<'_> {
    fn send_to(&mut self, dst: SocketAddr, datagram: &[u8]) {
        if let Err(e) = self.udp.try_send_to(datagram, dst) {
            self.counters.udp_send_dropped += 1;
            if e.kind() != io::ErrorKind::WouldBlock {
                trace!(%dst, error = %e, "send failed");
            }
        }
    }

    fn write_tun(&mut self, packet: &[u8]) {
        if let Err(e) = self.tun.try_send(packet) {
            self.counters.tun_write_dropped += 1;
            if e.kind() != io::ErrorKind::WouldBlock {
                trace!(error = %e, "TUN write failed");
            }
        }
    }
}

/// Builds the core's peer list from the config.
pub fn peer_specs(config: &GatewayConfig) -> Vec<PeerSpec> {
    config
        .peers
        .iter()
        .map(|p| PeerSpec {
            name: p.name.clone(),
            public_key: p.public_key,
            preshared_key: p.preshared_key.clone(),
            endpoint: p.endpoint,
            allowed_ips: p.allowed_ips.clone(),
            persistent_keepalive: p.persistent_keepalive,
        })
        .collect()
}

/// Runs the gateway described by `config` until `shutdown` resolves, then removes what it
/// installed.
pub async fn run(
    config: GatewayConfig,
    socket_path: PathBuf,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<()> {
    let iface = &config.interface;
    let mut gateway = Gateway::new(iface.private_key.clone(), Instant::now());
    for spec in peer_specs(&config) {
        gateway
            .add_peer(spec)
            .with_context(|| format!("{}", config.path.display()))?;
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

    let udp = UdpTransport::bind(iface.listen_port)?;
    let listen_port = udp.local_port()?;
    let tun = crate::tun::create(&iface.name, iface.mtu)?;
    let ifindex = tun
        .index()
        .with_context(|| format!("cannot read the index of {}", iface.name))?;
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

    let mut io_counters = IoCounters::default();
    let mut tun_buf = vec![0u8; 65_535];
    let mut udp_buf = vec![0u8; 65_535];
    tokio::pin!(shutdown);
    let result: Result<()> = loop {
        let mut next = gateway.poll_timeout();
        if let Some(access) = &access {
            next = next.min(access.poll_timeout(Instant::now(), SystemTime::now()));
        }
        let deadline = tokio::time::Instant::from_std(next);
        let mut sink = DirectSink {
            udp: &udp,
            tun: &tun,
            counters: &mut io_counters,
        };
        tokio::select! {
            () = &mut shutdown => break Ok(()),
            r = tun.recv(&mut tun_buf) => match r {
                Ok(n) => gateway.handle_tun_packet(&tun_buf[..n], Instant::now(), &mut sink),
                Err(e) => break Err(e).context("reading the TUN device"),
            },
            r = udp.recv_from(&mut udp_buf) => match r {
                Ok((n, src)) => {
                    let bytes = &udp_buf[..n];
                    match access.as_mut() {
                        Some(access) if is_control_packet(bytes) => {
                            if let Err(e) = access.handle_datagram(
                                src,
                                bytes,
                                Instant::now(),
                                SystemTime::now(),
                                &mut OsRng,
                                &mut gateway,
                                &mut sink,
                            ) {
                                trace!(%src, error = %e, "control datagram dropped");
                            }
                        }
                        _ => gateway.handle_datagram(src, bytes, Instant::now(), &mut sink),
                    }
                }
                // ICMP errors from earlier sends surface here (e.g. ECONNREFUSED); keep going.
                Err(e) => trace!(error = %e, "UDP receive error"),
            },
            () = tokio::time::sleep_until(deadline) => {
                let now = Instant::now();
                gateway.handle_timeout(now, &mut sink);
                if let Some(access) = access.as_mut() {
                    access.handle_timeout(now, SystemTime::now(), &mut gateway, &mut sink);
                }
            }
            Some(req) = req_rx.recv() => {
                let body = answer(&req.command, &gateway, access.as_ref(), &iface.name, listen_port, &io_counters);
                let _ = req.reply.send(body);
            }
        }
    };

    info!(interface = %iface.name, "shutting down");
    netlink.remove(&installed).await;
    drop(control);
    drop(tun);
    if let Err(e) = &result {
        warn!(error = %e, "gateway stopped on error");
    }
    result
}

fn answer(
    command: &str,
    gateway: &Gateway,
    access: Option<&Access<RedbStore>>,
    ifname: &str,
    listen_port: u16,
    io_counters: &IoCounters,
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
                "control": access.map(|a| json!({
                    "counters": a.control_counters(),
                    "access": a.counters(),
                })),
            })
            .to_string()
        }
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
