//! The client's event loop: lease an address from the gateway, bring the tunnel up with it,
//! keep the lease, and put everything back on exit.
//!
//! One task owns one UDP socket, the sans-IO [`ControlClient`] (the lease) and a sans-IO
//! [`Gateway`] data plane with a single peer, the gateway. Datagrams whose first byte marks them
//! as control packets ([`is_control_packet`]) go to the control client, the rest to the data
//! plane, so the gateway sees both from one NAT mapping.
//!
//! While no lease is held there is no TUN device. When the control client reports
//! [`Event::Bound`], the driver creates the TUN device, adds the leased address and the pushed
//! routes ([`super::net`]), adds the gateway as the data plane's peer, applies DNS if asked
//! ([`super::dns`]) and remembers the lease ([`super::lease_memory`]); it logs
//! `lease bound address=… prefix_len=… gateway=…`. On [`Event::Lost`] it undoes all that and the
//! control client starts over. On shutdown it releases the lease (waiting at most
//! [`RELEASE_WAIT`] for the gateway's acknowledgement) and undoes it too.
//!
//! `status` on the control socket answers with JSON: see [`Client::status`].

use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result};
use ipnet::Ipv4Net;
use rand_core::OsRng;
use serde_json::{json, Value};
use sitelink_core::config::{ClientConfig, ClientGatewayConfig, GatewayEndpoint};
use sitelink_core::control::client::{
    Binding, ClientConfig as ControlConfig, ControlClient, Event, State,
};
use sitelink_core::control::is_control_packet;
use sitelink_core::control::message::NakReason;
use sitelink_core::gateway::{Gateway, Sink};
use sitelink_core::peer::PeerSpec;
use tokio::sync::mpsc;
use tokio_tun::Tun;
use tracing::{debug, error, info, trace, warn};

use super::dns::{self, DnsOutcome};
use super::lease_memory::{LeaseMemory, RememberedLease};
use super::net::{dataplane_allowed_ips, is_full_tunnel, Applied, ClientNet};
use crate::control::{ControlServer, Request};
use crate::udp::UdpTransport;

/// How long shutdown waits for the gateway to acknowledge the release.
pub const RELEASE_WAIT: Duration = Duration::from_secs(4);
/// How far past a lease's wall-clock expiry the control client's own (monotonic) expiry may
/// lag before the driver starts over by itself.
const WALL_CLOCK_GRACE: Duration = Duration::from_secs(5);
/// How often to say that there is still no lease.
const WAITING_LOG_EVERY: Duration = Duration::from_secs(30);
/// Delay between attempts to resolve the gateway's host name: first, and at most.
const RESOLVE_RETRY: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(30));

/// Datagrams and packets the I/O layer could not pass on.
#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
struct IoCounters {
    /// Datagrams not sent because the socket's buffer was full (or the send failed).
    udp_send_dropped: u64,
    /// Packets not written to the TUN device (queue full, or no device).
    tun_write_dropped: u64,
}

/// The data plane's output: straight to the socket and the TUN device, without waiting.
struct DirectSink<'a> {
    udp: &'a UdpTransport,
    tun: Option<&'a Tun>,
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
        let Some(tun) = self.tun else {
            self.counters.tun_write_dropped += 1;
            return;
        };
        if let Err(e) = tun.try_send(packet) {
            self.counters.tun_write_dropped += 1;
            if e.kind() != io::ErrorKind::WouldBlock {
                trace!(error = %e, "TUN write failed");
            }
        }
    }
}

/// What is installed while a lease is held.
struct Link {
    tun: Tun,
    binding: Binding,
    applied: Applied,
    dns: DnsOutcome,
    bound_at: SystemTime,
}

/// The client's state: sockets, the two sans-IO machines, and what is installed.
struct Client {
    config: ClientConfig,
    gateway: ClientGatewayConfig,
    udp: UdpTransport,
    listen_port: u16,
    net: ClientNet,
    dataplane: Gateway,
    /// Made once the gateway's endpoint is known.
    control: Option<ControlClient>,
    endpoint: Option<SocketAddr>,
    resolve_at: Instant,
    resolve_failures: u32,
    memory: LeaseMemory,
    requested: Option<Ipv4Addr>,
    link: Option<Link>,
    last_refusal: Option<(NakReason, SystemTime)>,
    /// Since when the client has been without a lease, and when that was last logged.
    waiting: Option<(Instant, Instant)>,
    io_counters: IoCounters,
    rng: OsRng,
}

/// What woke the loop.
enum Wake {
    Shutdown,
    Tun(io::Result<usize>),
    Udp(io::Result<(usize, SocketAddr)>),
    Timer,
    Request(Request),
}

/// Runs the client described by `config` until `shutdown` resolves, then releases the lease
/// and removes what it installed.
///
/// Errors are configuration or permission problems (the socket, the control socket, the TUN
/// device, the address); an unreachable or refusing gateway is retried forever.
pub async fn run(
    config: ClientConfig,
    socket_path: PathBuf,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let Some(gateway) = config.gateways.first().cloned() else {
        anyhow::bail!("{}: no [[gateway]] configured", config.path.display());
    };
    if config.gateways.len() > 1 {
        warn!(
            gateway = %gateway.name,
            "only the first [[gateway]] is used; the others are ignored"
        );
    }
    let iface = &config.interface;
    let udp = UdpTransport::bind(iface.listen_port)?;
    let listen_port = udp.local_port()?;
    let net = ClientNet::connect()?;
    let memory = LeaseMemory::new(
        &iface.state_dir,
        &iface.name,
        &gateway.name,
        iface.private_key.public_key(),
        gateway.public_key,
    );
    let requested = memory.load().map(|l| l.address);
    let (req_tx, mut req_rx) = mpsc::channel::<Request>(16);
    let control = ControlServer::start(&socket_path, req_tx)?;
    let now = Instant::now();
    let mut client = Client {
        dataplane: Gateway::new(iface.private_key.clone(), now),
        gateway,
        udp,
        listen_port,
        net,
        control: None,
        endpoint: None,
        resolve_at: now,
        resolve_failures: 0,
        memory,
        requested,
        link: None,
        last_refusal: None,
        waiting: Some((now, now)),
        io_counters: IoCounters::default(),
        rng: OsRng,
        config,
    };
    info!(
        interface = %client.config.interface.name,
        listen_port,
        public_key = %client.dataplane.public_key(),
        gateway = %client.gateway.name,
        endpoint = %client.gateway.endpoint,
        requested = ?client.requested,
        socket = %socket_path.display(),
        "client up; asking the gateway for a lease"
    );

    let mut tun_buf = vec![0u8; 65_535];
    let mut udp_buf = vec![0u8; 65_535];
    tokio::pin!(shutdown);
    let mut shutting_down = false;
    let mut release_deadline: Option<Instant> = None;
    let mut failure: Option<anyhow::Error> = None;
    loop {
        let deadline = client
            .next_deadline()
            .min(release_deadline.unwrap_or(far_future()));
        let tun = client.link.as_ref().map(|l| &l.tun);
        let wake = tokio::select! {
            () = &mut shutdown, if !shutting_down => Wake::Shutdown,
            r = recv_tun(tun, &mut tun_buf) => Wake::Tun(r),
            r = client.udp.recv_from(&mut udp_buf) => Wake::Udp(r),
            () = tokio::time::sleep_until(tokio::time::Instant::from_std(deadline)) => Wake::Timer,
            Some(req) = req_rx.recv() => Wake::Request(req),
        };
        let now = Instant::now();
        match wake {
            Wake::Shutdown => {
                info!("shutting down");
                shutting_down = true;
            }
            Wake::Tun(Ok(n)) => client.tun_packet(&tun_buf[..n], now),
            Wake::Tun(Err(e)) => {
                error!(error = %e, "reading the TUN device failed; giving up");
                // Without the device there is nothing more to read (and no error loop).
                client.teardown().await;
                failure.get_or_insert(anyhow::Error::new(e).context("reading the TUN device"));
            }
            Wake::Udp(Ok((n, src))) => client.datagram(src, &udp_buf[..n], now),
            // ICMP errors from earlier sends (the gateway not up yet) surface here.
            Wake::Udp(Err(e)) => trace!(error = %e, "UDP receive error"),
            Wake::Timer => client.timers(now).await,
            Wake::Request(req) => {
                let body = client.answer(&req.command);
                let _ = req.reply.send(body);
            }
        }
        if (shutting_down || failure.is_some()) && release_deadline.is_none() {
            if client.control.is_none() {
                // Never reached the gateway: nothing to give back.
                break;
            }
            release_deadline = Some(now + RELEASE_WAIT);
            client.release(now);
        }
        client.flush_control();
        match client.handle_events().await {
            Ok(true) => break,
            Ok(false) => {}
            Err(e) if failure.is_none() => {
                error!(error = %format!("{e:#}"), "cannot bring the tunnel up");
                failure = Some(e);
                release_deadline = Some(now + RELEASE_WAIT);
                client.release(now);
                client.flush_control();
            }
            Err(e) => warn!(error = %format!("{e:#}"), "during shutdown"),
        }
        if release_deadline.is_some_and(|d| Instant::now() >= d) {
            warn!("the gateway did not acknowledge the release in time; exiting anyway");
            break;
        }
    }

    client.teardown().await;
    drop(control);
    info!(interface = %client.config.interface.name, "client down");
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Receives from the TUN device, or waits forever when there is none.
async fn recv_tun(tun: Option<&Tun>, buf: &mut [u8]) -> io::Result<usize> {
    match tun {
        Some(t) => t.recv(buf).await,
        None => std::future::pending().await,
    }
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(24 * 3600)
}

/// The name `status` shows for a control-client state.
pub fn state_name(state: State) -> &'static str {
    match state {
        State::Init => "starting",
        State::Discovering => "discovering",
        State::Requesting => "requesting",
        State::Bound => "bound",
        State::Renewing => "renewing",
        State::Rebinding => "rebinding",
        State::Releasing => "releasing",
        State::Released => "released",
    }
}

impl Client {
    fn next_deadline(&self) -> Instant {
        let control = match &self.control {
            Some(c) => c.poll_timeout(),
            None => Some(self.resolve_at),
        };
        let dataplane = self.dataplane.poll_timeout();
        control.map_or(dataplane, |c| c.min(dataplane))
    }

    fn sink(&mut self) -> (DirectSink<'_>, &mut Gateway) {
        (
            DirectSink {
                udp: &self.udp,
                tun: self.link.as_ref().map(|l| &l.tun),
                counters: &mut self.io_counters,
            },
            &mut self.dataplane,
        )
    }

    fn tun_packet(&mut self, packet: &[u8], now: Instant) {
        let (mut sink, dataplane) = self.sink();
        dataplane.handle_tun_packet(packet, now, &mut sink);
    }

    fn datagram(&mut self, src: SocketAddr, bytes: &[u8], now: Instant) {
        if is_control_packet(bytes) {
            if let Some(control) = &mut self.control {
                if let Err(e) = control.handle_input(bytes, now, SystemTime::now(), &mut self.rng) {
                    trace!(%src, error = %e, "control packet dropped");
                }
            }
            return;
        }
        let (mut sink, dataplane) = self.sink();
        dataplane.handle_datagram(src, bytes, now, &mut sink);
    }

    async fn timers(&mut self, now: Instant) {
        self.check_wall_clock_expiry(now).await;
        if let Some((since, logged)) = self.waiting {
            if now.duration_since(logged) >= WAITING_LOG_EVERY {
                let state = self
                    .control
                    .as_ref()
                    .map_or("resolving", |c| state_name(c.state()));
                info!(
                    gateway = %self.gateway.name,
                    endpoint = %self.gateway.endpoint,
                    state,
                    waited_secs = now.duration_since(since).as_secs(),
                    "no lease yet; still trying the gateway"
                );
                self.waiting = Some((since, now));
            }
        }
        {
            let (mut sink, dataplane) = self.sink();
            if now >= dataplane.poll_timeout() {
                dataplane.handle_timeout(now, &mut sink);
            }
        }
        match &mut self.control {
            Some(control) if control.poll_timeout().is_some_and(|t| now >= t) => {
                control.handle_timeout(now, SystemTime::now(), &mut self.rng);
            }
            None if now >= self.resolve_at => self.resolve(now).await,
            _ => {}
        }
    }

    /// The control client's timers run on the monotonic clock, which stops while the machine
    /// sleeps; after a laptop wakes, the lease may be long gone at the gateway. When the wall
    /// clock says so, drop the tunnel and start over with a new control client that asks for
    /// the same address.
    async fn check_wall_clock_expiry(&mut self, now: Instant) {
        let Some(link) = &self.link else {
            return;
        };
        let expires_at = link.binding.lease.expires_at;
        if SystemTime::now() < expires_at + WALL_CLOCK_GRACE {
            return;
        }
        warn!(
            address = %link.binding.lease.address,
            gateway = %self.gateway.name,
            "the lease expired by the wall clock (was the machine asleep?); tunnel down, asking again"
        );
        self.teardown().await;
        self.control = None;
        self.endpoint = None;
        self.resolve_at = now;
        self.resolve_failures = 0;
    }

    /// Resolves the gateway's endpoint and, once it is known, starts the control client.
    async fn resolve(&mut self, now: Instant) {
        let endpoint = self.gateway.endpoint.clone();
        let resolved = tokio::task::spawn_blocking(move || endpoint.resolve())
            .await
            .unwrap_or_else(|e| Err(io::Error::other(e)));
        match resolved {
            Ok(addr) => {
                debug!(gateway = %self.gateway.name, endpoint = %addr, "gateway endpoint");
                let mut config = ControlConfig::new(
                    self.config.interface.private_key.clone(),
                    self.gateway.public_key,
                    addr,
                );
                config.requested_address = self.requested;
                self.endpoint = Some(addr);
                self.control = Some(ControlClient::new(config, now));
            }
            Err(e) => {
                let delay = RESOLVE_RETRY
                    .0
                    .saturating_mul(1 << self.resolve_failures.min(5))
                    .min(RESOLVE_RETRY.1);
                self.resolve_failures += 1;
                warn!(gateway = %self.gateway.name, endpoint = %self.gateway.endpoint, error = %e, retry_in = ?delay, "cannot resolve the gateway's endpoint");
                self.resolve_at = now + delay;
            }
        }
    }

    fn release(&mut self, now: Instant) {
        if let Some(control) = &mut self.control {
            control.release(now, SystemTime::now(), &mut self.rng);
        }
    }

    fn flush_control(&mut self) {
        let Some(control) = &mut self.control else {
            return;
        };
        while let Some(t) = control.poll_transmit() {
            if let Err(e) = self.udp.try_send_to(&t.contents, t.destination) {
                self.io_counters.udp_send_dropped += 1;
                debug!(dst = %t.destination, error = %e, "control send failed");
            }
        }
    }

    /// Acts on the control client's events. `Ok(true)` once the lease is released (time to
    /// exit); `Err` when the tunnel cannot be brought up.
    async fn handle_events(&mut self) -> Result<bool> {
        loop {
            let Some(event) = self.control.as_mut().and_then(ControlClient::poll_event) else {
                return Ok(false);
            };
            match event {
                Event::Bound(binding) => {
                    self.remember(&binding);
                    if let Err(e) = self.configure(binding).await {
                        self.teardown().await;
                        return Err(e);
                    }
                }
                Event::Renewed(binding) => {
                    self.remember(&binding);
                    let same = self.link.as_ref().is_some_and(|l| {
                        l.binding.lease.prefix_len == binding.lease.prefix_len
                            && l.binding.routes == binding.routes
                            && l.binding.dns == binding.dns
                    });
                    if let (true, Some(link)) = (same, self.link.as_mut()) {
                        info!(
                            address = %binding.lease.address,
                            expires_in = secs_until(binding.lease.expires_at),
                            "lease renewed"
                        );
                        link.binding = binding;
                    } else {
                        info!(address = %binding.lease.address, routes = ?binding.routes, dns = ?binding.dns, "lease renewed with new settings; reconfiguring");
                        self.teardown().await;
                        if let Err(e) = self.configure(binding).await {
                            self.teardown().await;
                            return Err(e);
                        }
                    }
                }
                Event::Lost { address } => {
                    warn!(%address, gateway = %self.gateway.name, "lease lost; tunnel down, asking again");
                    self.teardown().await;
                    if matches!(self.gateway.endpoint, GatewayEndpoint::Host { .. }) {
                        // The gateway may have moved: look its name up again and start over.
                        self.control = None;
                        self.endpoint = None;
                        self.resolve_at = Instant::now();
                        self.resolve_failures = 0;
                        return Ok(false);
                    }
                }
                Event::Released { address } => {
                    info!(address = ?address, gateway = %self.gateway.name, "lease released");
                    self.teardown().await;
                    return Ok(true);
                }
                Event::Refused(reason) => {
                    self.last_refusal = Some((reason, SystemTime::now()));
                    if reason == NakReason::PoolExhausted {
                        error!(gateway = %self.gateway.name, %reason, "the gateway refused a lease: its address pool is exhausted; retrying");
                    } else {
                        warn!(gateway = %self.gateway.name, %reason, "the gateway refused; retrying");
                    }
                }
                Event::PeerEndpoints { peer, candidates } => {
                    debug!(%peer, ?candidates, "peer endpoints (unused)");
                }
            }
        }
    }

    fn remember(&mut self, binding: &Binding) {
        let lease = RememberedLease {
            address: binding.lease.address,
            prefix_len: binding.lease.prefix_len,
            expires_at: binding.lease.expires_at,
        };
        self.requested = Some(lease.address);
        if let Err(e) = self.memory.save(&lease) {
            warn!(file = %self.memory.path().display(), error = %e, "cannot remember the lease (a restart may get another address)");
        }
    }

    /// Brings the tunnel up for `binding`.
    async fn configure(&mut self, binding: Binding) -> Result<()> {
        let iface = &self.config.interface;
        let endpoint = self.endpoint.context("bound without a gateway endpoint")?;
        let address =
            Ipv4Net::new(binding.lease.address, binding.lease.prefix_len).with_context(|| {
                format!(
                    "the gateway leased a bad prefix length {}",
                    binding.lease.prefix_len
                )
            })?;
        let tun = crate::tun::create(&iface.name, iface.mtu)?;
        let ifindex = tun
            .index()
            .with_context(|| format!("cannot read the index of {}", iface.name))?;
        let spec = PeerSpec {
            name: self.gateway.name.clone(),
            public_key: self.gateway.public_key,
            preshared_key: None,
            endpoint: Some(endpoint),
            allowed_ips: dataplane_allowed_ips(address, &binding.routes),
            persistent_keepalive: self.gateway.persistent_keepalive,
        };
        self.dataplane
            .add_peer(spec)
            .with_context(|| format!("cannot add gateway {} as a peer", self.gateway.name))?;
        let applied = match self
            .net
            .apply(
                &iface.name,
                ifindex,
                address,
                &binding.routes,
                endpoint.ip(),
            )
            .await
        {
            Ok(a) => a,
            Err(e) => {
                self.dataplane.remove_peer(&self.gateway.public_key);
                return Err(e);
            }
        };
        let dns = dns::apply(&iface.name, &binding.dns, iface.dns);
        let expires_in = secs_until(binding.lease.expires_at);
        info!(
            address = %binding.lease.address,
            prefix_len = binding.lease.prefix_len,
            gateway = %self.gateway.name,
            endpoint = %endpoint,
            interface = %iface.name,
            expires_in,
            routes = ?applied.routes(),
            full_tunnel = is_full_tunnel(&binding.routes),
            dns = ?binding.dns,
            "lease bound"
        );
        self.waiting = None;
        self.link = Some(Link {
            tun,
            binding,
            applied,
            dns,
            bound_at: SystemTime::now(),
        });
        Ok(())
    }

    /// Removes what [`Self::configure`] installed: DNS, routes, the peer, the TUN device (and
    /// with it the address).
    async fn teardown(&mut self) {
        let Some(link) = self.link.take() else {
            return;
        };
        let now = Instant::now();
        self.waiting = Some((now, now));
        dns::revert(&link.dns);
        self.net.remove(&link.applied).await;
        self.dataplane.remove_peer(&self.gateway.public_key);
        drop(link.tun);
        debug!(interface = %self.config.interface.name, "tunnel down");
    }

    /// Answers a control-socket command.
    fn answer(&self, command: &str) -> String {
        match command {
            "status" => self.status().to_string(),
            other => json!({ "error": format!("unknown command {other:?}") }).to_string(),
        }
    }

    /// The `status` document.
    ///
    /// Keys: `interface` (name, public_key, listen_port, mtu), `state` (`resolving`,
    /// `starting`, `discovering`, `requesting`, `bound`, `renewing`, `rebinding`, `releasing`,
    /// `released`), `address` (the leased address alone, e.g. `"10.77.100.50"`, or null) and
    /// `prefix_len`, `expires_in` (seconds until the lease ends, or null), `lease_time`,
    /// `bound_secs_ago`, `gateway` {name, public_key, endpoint (as configured), resolved},
    /// `routes` (pushed), `installed_routes` (on the TUN device), `full_tunnel`, `bypass_route`
    /// (the gateway address routed outside the tunnel, or null), `dns` (pushed servers),
    /// `dns_status`, `last_refusal`, `peer` (the data plane's status of the gateway peer:
    /// endpoint, latest_handshake_secs_ago, rx_bytes, tx_bytes, path, …; null while unbound),
    /// `counters` (data plane), `control_counters`, `io_counters`, `lease_file`.
    fn status(&self) -> Value {
        let iface = &self.config.interface;
        let state = match &self.control {
            Some(c) => state_name(c.state()),
            None => "resolving",
        };
        let binding = self.link.as_ref().map(|l| &l.binding);
        let dataplane = self.dataplane.status();
        json!({
            "interface": {
                "name": iface.name,
                "public_key": self.dataplane.public_key(),
                "listen_port": self.listen_port,
                "mtu": iface.mtu,
            },
            "state": state,
            "address": binding.map(|b| b.lease.address.to_string()),
            "prefix_len": binding.map(|b| b.lease.prefix_len),
            "expires_in": binding.map(|b| secs_until(b.lease.expires_at)),
            "lease_time": binding.map(|b| b.lease.lease_time.as_secs()),
            "bound_secs_ago": self.link.as_ref().map(|l| secs_since(l.bound_at)),
            "gateway": {
                "name": self.gateway.name,
                "public_key": self.gateway.public_key,
                "endpoint": self.gateway.endpoint.to_string(),
                "resolved": self.endpoint.map(|e| e.to_string()),
            },
            "routes": binding.map(|b| b.routes.iter().map(ToString::to_string).collect::<Vec<_>>()).unwrap_or_default(),
            "installed_routes": self.link.as_ref().map(|l| l.applied.routes().iter().map(ToString::to_string).collect::<Vec<_>>()).unwrap_or_default(),
            "full_tunnel": binding.is_some_and(|b| is_full_tunnel(&b.routes)),
            "bypass_route": self.link.as_ref().and_then(|l| l.applied.bypass()).map(|ip: IpAddr| ip.to_string()),
            "dns": binding.map(|b| b.dns.iter().map(ToString::to_string).collect::<Vec<_>>()).unwrap_or_default(),
            "dns_status": self.link.as_ref().map(|l| l.dns.describe()),
            "last_refusal": self.last_refusal.map(|(r, at)| json!({
                "reason": r.to_string(),
                "secs_ago": secs_since(at),
            })),
            "peer": dataplane.peers.first(),
            "counters": dataplane.counters,
            "control_counters": self.control.as_ref().map(|c| *c.counters()),
            "io_counters": self.io_counters,
            "lease_file": self.memory.path().display().to_string(),
        })
    }
}

fn secs_until(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::now())
        .map_or(0, |d| d.as_secs())
}

fn secs_since(t: SystemTime) -> u64 {
    SystemTime::now()
        .duration_since(t)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_names_are_distinct() {
        let states = [
            State::Init,
            State::Discovering,
            State::Requesting,
            State::Bound,
            State::Renewing,
            State::Rebinding,
            State::Releasing,
            State::Released,
        ];
        let mut names: Vec<&str> = states.iter().map(|s| state_name(*s)).collect();
        names.push("resolving");
        let count = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), count);
    }
}
