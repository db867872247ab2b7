//! The gateway's event loop, in two parts:
//! - the **data path thread** owns the sans-IO [`Gateway`] (with the lease pool, hole punching
//!   and STUN beside it, the [`Engine`]) and the devices: it waits in its own epoll set
//!   ([`crate::poller`]) for the TUN device, the UDP socket, the next timer and a waker, and
//!   answers control requests;
//! - the **tokio side** does set-up and tear-down (netlink, nftables), listens on the control
//!   socket, follows the UPnP mapping and waits for the shutdown signal, handing each to the
//!   thread as a [`Command`].
//!
//! A packet therefore costs one `epoll_wait` return and its reads, not a trip through tokio's
//! reactor and scheduler (see [`crate::poller`] for the measurement).
//!
//! How packets reach the devices (batched with offloads, or one per system call) is the
//! [`datapath`]'s business; `SITELINK_DATAPATH=plain` picks the latter.

mod datapath;
mod stun;
mod traversal;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::mpsc::TryRecvError;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{anyhow, Context, Result};
use ipnet::IpNet;
use rand_core::{OsRng, RngCore};
use serde_json::json;
use sitelink_core::access::Access;
use sitelink_core::config::GatewayConfig;
use sitelink_core::control::is_control_packet;
use sitelink_core::gateway::{Gateway, Sink};
use sitelink_core::peer::PeerSpec;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{info, trace, warn};

use crate::control::{ControlServer, Request};
use crate::lease_store::RedbStore;
use crate::netlink::Netlink;
use crate::poller::{BusyPoll, Poller};
use datapath::{Devices, Input, Side};
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

    let access = match &config.pool {
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
    let poller = Poller::new().context("cannot create the data path's epoll set")?;
    devices
        .register(&poller)
        .context("cannot add the TUN device and the UDP socket to the epoll set")?;
    let waker = poller
        .waker()
        .context("cannot create the data path's waker")?;
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

    let traversal = TraversalDriver::new(&config, listen_port, Instant::now());
    let tunnel_stun = stun::TunnelStun::new(&config, Instant::now());
    if traversal.is_none() {
        // Nobody to offer the mapping to.
        mapped = None;
    }
    let (req_tx, mut req_rx) = mpsc::channel::<Request>(16);
    let started = ControlServer::start(&socket_path, req_tx).and_then(|control| {
        info!(
            interface = %iface.name,
            listen_port,
            public_key = %gateway.public_key(),
            peers = gateway.peer_count(),
            socket = %socket_path.display(),
            "gateway up"
        );
        let engine = Engine {
            gateway,
            access,
            traversal,
            tunnel_stun,
            ifname: iface.name.clone(),
            listen_port,
        };
        let data_path =
            DataPathThread::spawn(engine, devices, iface.mtu, iface.busy_poll, poller, waker)?;
        Ok((control, data_path))
    });

    let (result, devices, control) = match started {
        Ok((control, mut data_path)) => {
            tokio::pin!(shutdown);
            let ended = loop {
                tokio::select! {
                    () = &mut shutdown => break None,
                    // The thread ended by itself: a TUN read error, or a panic.
                    done = data_path.done() => break Some(done),
                    Some(req) = req_rx.recv() => data_path.command(Command::Request(req)),
                    changed = mapping_changed(mapped.as_mut()) => match changed {
                        Some(external) => data_path.command(Command::Mapped(external)),
                        // The UPnP task ended: no more changes.
                        None => mapped = None,
                    },
                }
            };
            let (result, devices) = match ended {
                Some(done) => done,
                None => data_path.stop().await,
            };
            (result, devices, Some(control))
        }
        Err(e) => (Err(e), None, None),
    };

    info!(interface = %iface.name, "shutting down");
    if let Some(mut steering) = nat_steering {
        steering.remove().await;
    }
    netlink.remove(&installed).await;
    drop(control);
    drop(devices);
    if let Err(e) = &result {
        warn!(error = %format!("{e:#}"), "gateway stopped on error");
    }
    result
}

/// What the tokio side asks of the data path thread.
enum Command {
    /// A control socket request (`status`, `nat`, `leases`), answered on its reply channel.
    Request(Request),
    /// The UPnP mapping's external endpoint changed (or went away).
    Mapped(Option<SocketAddr>),
    /// Shut down.
    Stop,
}

/// The data path thread, seen from the tokio side: commands go in through a channel and a ring
/// of the thread's waker; the thread's result and the devices come back when it ends.
struct DataPathThread {
    commands: std::sync::mpsc::Sender<Command>,
    waker: Arc<mio::Waker>,
    done: Option<oneshot::Receiver<(Result<()>, Devices)>>,
}

impl DataPathThread {
    /// Starts the thread that owns `engine` and moves packets through `devices` (already
    /// registered with `poller`, whose waker is `waker`).
    fn spawn(
        engine: Engine,
        devices: Devices,
        mtu: u16,
        busy_poll: Duration,
        poller: Poller,
        waker: Arc<mio::Waker>,
    ) -> Result<Self> {
        let (commands, command_rx) = std::sync::mpsc::channel();
        let (done_tx, done) = oneshot::channel();
        std::thread::Builder::new()
            .name("sitelink-data".into())
            .spawn(move || {
                let result = run_data_path(engine, &devices, mtu, busy_poll, poller, &command_rx);
                let _ = done_tx.send((result, devices));
            })
            .context("cannot start the data path thread")?;
        Ok(Self {
            commands,
            waker,
            done: Some(done),
        })
    }

    /// Hands the thread `command` and wakes it.
    fn command(&self, command: Command) {
        if self.commands.send(command).is_ok() {
            if let Err(e) = self.waker.wake() {
                warn!(error = %e, "cannot wake the data path thread");
            }
        }
    }

    /// Waits for the thread to end by itself: its result and the devices (`None` after a
    /// panic). Resolves once; pending forever after.
    async fn done(&mut self) -> (Result<()>, Option<Devices>) {
        let Some(done) = self.done.as_mut() else {
            return std::future::pending().await;
        };
        let ended = done.await;
        self.done = None;
        match ended {
            Ok((result, devices)) => (result, Some(devices)),
            Err(_) => (Err(anyhow!("the data path thread panicked")), None),
        }
    }

    /// Asks the thread to stop and waits for it.
    async fn stop(mut self) -> (Result<()>, Option<Devices>) {
        self.command(Command::Stop);
        self.done().await
    }
}

/// The data path thread: waits in its epoll set for the TUN device, the UDP socket, the next
/// timer and the tokio side's commands, and feeds them to the engine until told to stop.
fn run_data_path(
    mut engine: Engine,
    devices: &Devices,
    mtu: u16,
    busy_poll: Duration,
    mut poller: Poller,
    commands: &std::sync::mpsc::Receiver<Command>,
) -> Result<()> {
    let mut io = devices.data_path(mtu);
    // Whether a device may still hold packets after a turn (edge-triggered epoll: come back
    // without waiting).
    let (mut tun_more, mut udp_more) = (false, false);
    let mut busy = BusyPoll::new(busy_poll);
    loop {
        // Once per turn: what this turn's input moves earlier is due on the next turn, which
        // then waits no longer than that.
        let deadline = engine.poll_timeout();
        let before = Instant::now();
        let timeout = if tun_more || udp_more {
            Duration::ZERO
        } else if busy.polling(before) {
            std::thread::yield_now();
            Duration::ZERO
        } else {
            deadline.saturating_duration_since(before)
        };
        let ready = poller
            .wait(Some(timeout))
            .context("waiting for the TUN device and the UDP socket")?;
        if !timeout.is_zero() {
            busy.slept(before.elapsed());
        }
        if ready.tun || ready.udp {
            busy.input(Instant::now(), ready.tun);
        }
        let delivered = io.tun_packets();
        if ready.tun || tun_more {
            tun_more = io.drain(Side::Tun, |input, now, sink| {
                engine.handle_input(input, now, sink);
            })?;
        }
        if ready.udp || udp_more {
            udp_more = io.drain(Side::Udp, |input, now, sink| {
                engine.handle_input(input, now, sink);
            })?;
        }
        if io.tun_packets() != delivered {
            busy.delivered();
        }
        let now = Instant::now();
        if deadline <= now {
            io.emit(|sink| engine.handle_timeout(now, sink));
        }
        if ready.woken {
            loop {
                match commands.try_recv() {
                    Ok(Command::Request(req)) => {
                        let body = engine.answer(&req.command, &io);
                        let _ = req.reply.send(body);
                    }
                    Ok(Command::Mapped(external)) => engine.set_mapped(external, Instant::now()),
                    Ok(Command::Stop) | Err(TryRecvError::Disconnected) => return Ok(()),
                    Err(TryRecvError::Empty) => break,
                }
            }
        }
    }
}

/// The core and what drives it beside the devices: the data plane, the lease pool and control
/// protocol, hole punching and STUN. Owned by the data path thread.
struct Engine {
    gateway: Gateway,
    access: Option<Access<RedbStore>>,
    traversal: Option<TraversalDriver>,
    tunnel_stun: Option<stun::TunnelStun>,
    ifname: String,
    listen_port: u16,
}

impl Engine {
    /// When [`Engine::handle_timeout`] is next due.
    fn poll_timeout(&self) -> Instant {
        let mut next = self.gateway.poll_timeout();
        if let Some(access) = &self.access {
            next = next.min(access.poll_timeout(Instant::now(), SystemTime::now()));
        }
        if let Some(t) = self
            .traversal
            .as_ref()
            .and_then(TraversalDriver::poll_timeout)
        {
            next = next.min(t);
        }
        if let Some(s) = &self.tunnel_stun {
            next = next.min(s.poll_timeout());
        }
        next
    }

    /// One packet from the TUN device or one datagram.
    fn handle_input(&mut self, input: Input<'_>, now: Instant, sink: &mut impl Sink) {
        match input {
            Input::Tun(packet) => {
                let mut sink = TraversalDriver::sink(self.traversal.as_mut(), sink);
                self.gateway.handle_tun_packet(packet, now, &mut sink);
            }
            Input::Datagram(src, bytes) => {
                let taken = self
                    .tunnel_stun
                    .as_mut()
                    .is_some_and(|s| s.handle_datagram(src, bytes, now))
                    || self.traversal.as_mut().is_some_and(|t| {
                        t.handle_datagram(&mut self.gateway, src, bytes, now, sink)
                    });
                if !taken {
                    let mut sink = TraversalDriver::sink(self.traversal.as_mut(), sink);
                    handle_datagram(
                        &mut self.gateway,
                        self.access.as_mut(),
                        src,
                        bytes,
                        now,
                        &mut sink,
                    );
                }
            }
        }
    }

    /// Everything timed: STUN, hole punching, the data plane's timers, lease expiry.
    fn handle_timeout(&mut self, now: Instant, sink: &mut impl Sink) {
        if let Some(s) = self.tunnel_stun.as_mut() {
            s.handle_timeout(now, sink);
        }
        if let Some(t) = self.traversal.as_mut() {
            t.handle_timeout(&mut self.gateway, now, sink);
        }
        let mut sink = TraversalDriver::sink(self.traversal.as_mut(), sink);
        self.gateway.handle_timeout(now, &mut sink);
        if let Some(access) = self.access.as_mut() {
            access.handle_timeout(now, SystemTime::now(), &mut self.gateway, &mut sink);
        }
    }

    /// A new external endpoint of the UPnP mapping, for the traversal agent to offer.
    fn set_mapped(&mut self, external: Option<SocketAddr>, now: Instant) {
        if let Some(t) = self.traversal.as_mut() {
            t.set_mapped(external, now);
        }
    }

    /// The answer to a control socket command.
    fn answer(&self, command: &str, io: &datapath::DataPath<'_>) -> String {
        let mut body = answer(
            command,
            &self.gateway,
            self.access.as_ref(),
            &self.ifname,
            self.listen_port,
            &io.counters(),
            &io.report(),
        );
        if let (Some(t), "status") = (self.traversal.as_ref(), command) {
            body = t.annotate_status(body);
        }
        if let (Some(s), "status") = (self.tunnel_stun.as_ref(), command) {
            body = stun::annotate_status(body, s.public_endpoint());
        }
        body
    }
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
