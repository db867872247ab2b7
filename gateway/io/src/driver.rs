//! The gateway's event loop: one task that moves packets between the TUN device, the UDP socket
//! and the sans-IO [`Gateway`], services its timers, and answers the control socket.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use serde_json::json;
use sitelink_core::config::GatewayConfig;
use sitelink_core::gateway::{Gateway, Sink};
use sitelink_core::peer::PeerSpec;
use tokio::sync::mpsc;
use tokio_tun::Tun;
use tracing::{info, trace, warn};

use crate::control::{ControlServer, Request};
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

    let udp = UdpTransport::bind(iface.listen_port)?;
    let listen_port = udp.local_port()?;
    let tun = crate::tun::create(&iface.name, iface.mtu)?;
    let ifindex = tun
        .index()
        .with_context(|| format!("cannot read the index of {}", iface.name))?;
    let netlink = Netlink::connect()?;
    let routes: Vec<_> = config
        .peers
        .iter()
        .flat_map(|p| p.allowed_ips.iter().copied())
        .collect();
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
        let deadline = tokio::time::Instant::from_std(gateway.poll_timeout());
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
                Ok((n, src)) => gateway.handle_datagram(src, &udp_buf[..n], Instant::now(), &mut sink),
                // ICMP errors from earlier sends surface here (e.g. ECONNREFUSED); keep going.
                Err(e) => trace!(error = %e, "UDP receive error"),
            },
            () = tokio::time::sleep_until(deadline) => {
                gateway.handle_timeout(Instant::now(), &mut sink);
            }
            Some(req) = req_rx.recv() => {
                let body = answer(&req.command, &gateway, &iface.name, listen_port, &io_counters);
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
            })
            .to_string()
        }
        other => json!({ "error": format!("unknown command {other:?}") }).to_string(),
    }
}
