//! `netcheck`: the public endpoint, the NAT's type, hairpinning and UPnP, for a person or a
//! script. The driver around [`sitelink_core::stun::NatCheck`].
//!
//! It binds its own UDP socket on an ephemeral port, so it can run while the daemon holds the
//! listen port; the mapping it reports is that socket's. Behind an endpoint-independent-mapping
//! NAT the daemon's own mapping behaves the same (only the port number differs).
//!
//! Both binaries call [`run`] with [`Options::from_traversal`] of their `[traversal]` table and
//! print [`Report`] with [`Report::to_text`] or as JSON.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use rand_core::OsRng;
use serde::Serialize;
use sitelink_core::config::{GatewayEndpoint, TraversalConfig};
use sitelink_core::stun::{
    FilteringBehavior, MappingBehavior, NatCheck, NatReport, NatType, RetransmitPolicy,
};
use tokio::net::UdpSocket;
use tokio::time::Instant;

use crate::upnp;

/// What to check.
#[derive(Debug, Clone)]
pub struct Options {
    /// STUN servers, in order of preference.
    pub stun_servers: Vec<GatewayEndpoint>,
    /// Whether to look for a UPnP IGD.
    pub upnp: bool,
    /// Retransmission of the STUN requests.
    pub policy: RetransmitPolicy,
    /// How long SSDP discovery waits.
    pub upnp_timeout: Duration,
    /// The local port to check from; 0 (the default) picks an ephemeral one, leaving the daemon's
    /// listen port alone.
    pub local_port: u16,
}

impl Options {
    /// The checks a `[traversal]` table asks for, with netcheck's quick retransmission.
    pub fn from_traversal(traversal: &TraversalConfig) -> Self {
        Self {
            stun_servers: traversal.stun_servers.clone(),
            upnp: traversal.upnp,
            policy: RetransmitPolicy::NETCHECK,
            upnp_timeout: upnp::DISCOVERY_TIMEOUT,
            local_port: 0,
        }
    }
}

/// What netcheck found (`netcheck --json`).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Our public `ip:port` as the STUN server saw it; `null` when no server answered.
    pub public_endpoint: Option<SocketAddr>,
    /// `open`, `full-cone`, `restricted-cone`, `port-restricted-cone`, `symmetric` or `unknown`.
    pub nat_type: NatType,
    /// RFC 4787 mapping behaviour.
    pub mapping: MappingBehavior,
    /// RFC 4787 filtering behaviour.
    pub filtering: FilteringBehavior,
    /// Whether the NAT hairpins (a packet to our own public endpoint comes back); `null` when not
    /// tested.
    pub hairpinning: Option<bool>,
    /// Whether a UPnP IGD router answered.
    pub upnp: bool,
    /// The IGD's external address, when it told.
    pub upnp_external_ip: Option<IpAddr>,
    /// The IGD's control address.
    pub upnp_router: Option<SocketAddr>,
    /// The local socket the check ran from (an ephemeral port unless asked otherwise).
    pub local_endpoint: SocketAddr,
    /// The STUN server that answered first.
    pub stun_server: Option<SocketAddr>,
    /// Its RFC 5780 alternate address, if it offers one.
    pub stun_other_address: Option<SocketAddr>,
    /// The round-trip time to it in milliseconds.
    pub stun_rtt_ms: Option<u64>,
    /// Configured STUN servers that did not answer or did not resolve, as written.
    pub unreachable_stun_servers: Vec<String>,
}

/// Runs every check: STUN classification on a fresh UDP socket and, at the same time, UPnP
/// discovery. Takes a few seconds (the filtering tests wait for silence).
pub async fn run(options: &Options) -> Result<Report> {
    if options.stun_servers.is_empty() {
        bail!(
            "no STUN servers configured\n  fix: add a [traversal] table with e.g. \
             stun_servers = [\"198.51.100.10:3478\"]"
        );
    }
    let mut unreachable = Vec::new();
    let mut servers = Vec::new();
    for server in &options.stun_servers {
        match resolve(server).await {
            Some(addr) => servers.push(addr),
            None => unreachable.push(server.to_string()),
        }
    }
    let ipv4 = servers.first().is_none_or(SocketAddr::is_ipv4);
    servers.retain(|s| s.is_ipv4() == ipv4);

    let bind: SocketAddr = if ipv4 {
        (Ipv4Addr::UNSPECIFIED, options.local_port).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, options.local_port).into()
    };
    let socket = UdpSocket::bind(bind)
        .await
        .with_context(|| format!("cannot bind a UDP socket on {bind}"))?;
    let port = socket.local_addr().context("local address")?.port();
    let local_ip = match servers.first() {
        Some(server) => route_source(*server).unwrap_or(bind.ip()),
        None => bind.ip(),
    };
    let local = SocketAddr::new(local_ip, port);
    tracing::debug!(%local, ?servers, "netcheck: starting");

    let upnp_probe = async {
        if options.upnp {
            upnp::probe(options.upnp_timeout).await
        } else {
            None
        }
    };
    let (stun, upnp) = tokio::join!(
        classify(&socket, servers, local, options.policy),
        upnp_probe
    );
    let stun = stun?;
    unreachable.extend(stun.unreachable_servers.iter().map(|s| s.to_string()));
    Ok(Report {
        public_endpoint: stun.public_endpoint,
        nat_type: stun.nat_type,
        mapping: stun.mapping,
        filtering: stun.filtering,
        hairpinning: stun.hairpinning,
        upnp: upnp.is_some(),
        upnp_external_ip: upnp.as_ref().and_then(|p| p.external_ip),
        upnp_router: upnp.as_ref().map(|p| p.router),
        local_endpoint: local,
        stun_server: stun.stun_server,
        stun_other_address: stun.other_address,
        stun_rtt_ms: stun.rtt_ms,
        unreachable_stun_servers: unreachable,
    })
}

async fn resolve(server: &GatewayEndpoint) -> Option<SocketAddr> {
    match server {
        GatewayEndpoint::Addr(addr) => Some(*addr),
        GatewayEndpoint::Host { host, port } => {
            let found: Vec<SocketAddr> = match tokio::net::lookup_host((host.as_str(), *port)).await
            {
                Ok(found) => found.collect(),
                Err(e) => {
                    tracing::warn!(server = %server, error = %e, "netcheck: STUN server does not resolve");
                    return None;
                }
            };
            found
                .iter()
                .find(|a| a.is_ipv4())
                .or(found.first())
                .copied()
        }
    }
}

/// The source address the kernel would use towards `dst` (no packet is sent).
fn route_source(dst: SocketAddr) -> Option<IpAddr> {
    let bind: SocketAddr = if dst.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let probe = std::net::UdpSocket::bind(bind).ok()?;
    probe.connect(dst).ok()?;
    probe.local_addr().ok().map(|a| a.ip())
}

/// Drives a [`NatCheck`] on `socket` until it reports.
async fn classify(
    socket: &UdpSocket,
    servers: Vec<SocketAddr>,
    local: SocketAddr,
    policy: RetransmitPolicy,
) -> Result<NatReport> {
    let mut check = NatCheck::new(servers, local, policy, Instant::now().into_std(), OsRng);
    let mut buf = vec![0u8; 2048];
    loop {
        while let Some(tx) = check.poll_transmit() {
            if let Err(e) = socket.send_to(&tx.payload, tx.dst).await {
                // Unreachable networks and the like: the request is lost; retransmission and
                // the timeout deal with it.
                tracing::debug!(dst = %tx.dst, error = %e, "netcheck: send failed");
            }
        }
        if let Some(report) = check.report() {
            return Ok(report.clone());
        }
        let Some(deadline) = check.poll_timeout() else {
            bail!("netcheck: the STUN check stalled (no timer and no result)");
        };
        tokio::select! {
            received = socket.recv_from(&mut buf) => match received {
                Ok((n, from)) => {
                    let _ = check.handle_input(from, &buf[..n], Instant::now().into_std());
                }
                // ICMP port unreachable from an earlier send shows up here on Linux; ignore it.
                Err(e) => tracing::debug!(error = %e, "netcheck: receive error"),
            },
            () = tokio::time::sleep_until(Instant::from_std(deadline)) => {
                check.handle_timeout(Instant::now().into_std());
            }
        }
    }
}

/// Runs the checks that `traversal` (from the config at `config_path`) sets up, on a runtime of
/// its own, and writes the report to `out`: text for a person, or one line of JSON.
pub fn run_and_report(
    traversal: &TraversalConfig,
    config_path: &std::path::Path,
    json: bool,
    out: &mut impl std::io::Write,
) -> Result<()> {
    let options = Options::from_traversal(traversal);
    let report = crate::cli::runtime()?
        .block_on(run(&options))
        .with_context(|| format!("netcheck with {}", config_path.display()))?;
    if json {
        serde_json::to_writer(&mut *out, &report).context("writing JSON")?;
        writeln!(out).context("writing JSON")?;
    } else {
        write!(out, "{}", report.to_text()).context("writing the report")?;
    }
    Ok(())
}

impl Report {
    /// The report for a person.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let or_none = |v: Option<String>, none: &str| v.unwrap_or_else(|| none.to_owned());
        let _ = writeln!(
            s,
            "netcheck from {} (an ephemeral port; the daemon's port is not touched)",
            self.local_endpoint
        );
        let via = match (self.stun_server, self.stun_rtt_ms) {
            (Some(server), Some(rtt)) => format!(" (STUN server {server}, {rtt} ms)"),
            (Some(server), None) => format!(" (STUN server {server})"),
            _ => String::new(),
        };
        let _ = writeln!(
            s,
            "  public endpoint: {}{via}",
            or_none(
                self.public_endpoint.map(|e| e.to_string()),
                "unknown (no STUN server answered)"
            )
        );
        let _ = writeln!(
            s,
            "  NAT type:        {} — {}",
            self.nat_type.as_str(),
            self.nat_type.describe()
        );
        let _ = writeln!(s, "  mapping:         {}", self.mapping.describe());
        let _ = writeln!(s, "  filtering:       {}", self.filtering.describe());
        let _ = writeln!(
            s,
            "  hairpinning:     {}",
            match self.hairpinning {
                Some(true) => "yes (LAN hosts can reach this gateway at its public endpoint)",
                Some(false) => "no (LAN hosts must use the gateway's LAN address)",
                None => "not tested",
            }
        );
        let upnp = if self.upnp {
            format!(
                "yes, router {}; external IP {}",
                or_none(self.upnp_router.map(|r| r.ip().to_string()), "?"),
                or_none(self.upnp_external_ip.map(|ip| ip.to_string()), "not told")
            )
        } else {
            "no IGD answered (or upnp = false)".to_owned()
        };
        let _ = writeln!(s, "  UPnP IGD:        {upnp}");
        if let Some(other) = self.stun_other_address {
            let _ = writeln!(s, "  RFC 5780:        yes, server's other address {other}");
        }
        for server in &self.unreachable_stun_servers {
            let _ = writeln!(s, "  note: STUN server {server} did not answer");
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_json() {
        let report = Report {
            public_endpoint: Some("203.0.113.1:40000".parse().expect("addr")),
            nat_type: NatType::PortRestrictedCone,
            mapping: MappingBehavior::EndpointIndependent,
            filtering: FilteringBehavior::AddressAndPortDependent,
            hairpinning: Some(false),
            upnp: true,
            upnp_external_ip: Some("100.64.0.1".parse().expect("ip")),
            upnp_router: Some("192.168.1.1:5000".parse().expect("addr")),
            local_endpoint: "192.168.1.10:40000".parse().expect("addr"),
            stun_server: Some("198.51.100.10:3478".parse().expect("addr")),
            stun_other_address: Some("198.51.100.11:3479".parse().expect("addr")),
            stun_rtt_ms: Some(2),
            unreachable_stun_servers: vec![],
        };
        let json = serde_json::to_value(&report).expect("json");
        assert_eq!(json["public_endpoint"], "203.0.113.1:40000");
        assert_eq!(json["nat_type"], "port-restricted-cone");
        assert_eq!(json["upnp"], true);
        assert_eq!(json["upnp_external_ip"], "100.64.0.1");
        let text = report.to_text();
        assert!(
            text.contains("public endpoint: 203.0.113.1:40000"),
            "{text}"
        );
        assert!(text.contains("port-restricted cone NAT"), "{text}");
        assert!(text.contains("external IP 100.64.0.1"), "{text}");
    }

    /// Against a STUN server on loopback there is no NAT: "open", and the endpoint is the
    /// socket's own.
    #[test]
    fn loopback_server_is_open() {
        use sitelink_core::stun::codec::{self, Message};
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let server = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
            let server_addr = server.local_addr().expect("addr");
            tokio::spawn(async move {
                let mut buf = [0u8; 1500];
                while let Ok((n, from)) = server.recv_from(&mut buf).await {
                    if let Ok(Message::Request { id }) = codec::decode(&buf[..n]) {
                        let reply = codec::server::success(id, from, None);
                        let _ = server.send_to(&reply, from).await;
                    }
                }
            });
            let options = Options {
                stun_servers: vec![GatewayEndpoint::Addr(server_addr)],
                upnp: false,
                policy: RetransmitPolicy::NETCHECK,
                upnp_timeout: Duration::from_millis(10),
                local_port: 0,
            };
            let report = run(&options).await.expect("netcheck");
            assert_eq!(report.nat_type, NatType::Open, "{report:?}");
            assert_eq!(report.public_endpoint, Some(report.local_endpoint));
            assert_eq!(report.hairpinning, Some(true));
            assert!(!report.upnp);
        });
    }

    #[test]
    fn no_servers_is_an_error_with_a_fix() {
        let options = Options::from_traversal(&TraversalConfig::default());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let err = rt.block_on(run(&options)).expect_err("no servers");
        assert!(format!("{err:#}").contains("stun_servers"), "{err:#}");
    }
}
