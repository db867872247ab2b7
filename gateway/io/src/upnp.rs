//! UPnP IGD: ask the LAN's router to forward the tunnel's UDP port (`igd-next`, SSDP + SOAP).
//!
//! - [`probe`]: is there an IGD, and what is its external address (for `netcheck`).
//! - [`map_port`]: AddPortMapping of the listen port with a lease. Error 718
//!   (ConflictInMappingEntry: another host holds that external port) → the next external port;
//!   error 725 (OnlyPermanentLeasesSupported) → the same request with lease 0, which the daemon
//!   then must delete itself on exit (it always does).
//! - [`spawn`]: the daemon's task: discover, map, renew at half the lease, re-map if the router
//!   forgot, and delete the mapping when stopped. [`UpnpTask::mapped`] tells the driver the
//!   external endpoint held, so that the traversal agent offers it as a `mapped` candidate.
//!
//! NAT-PMP/PCP are not spoken: `igd-next` has no client for them.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use igd_next::aio::tokio::Tokio;
use igd_next::aio::Gateway;
use igd_next::{AddPortError, PortMappingProtocol, RemovePortError, SearchOptions};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

/// How long SSDP discovery waits for a router to answer.
pub const DISCOVERY_TIMEOUT: Duration = Duration::from_secs(3);

/// The lease asked for, in seconds; renewed at half of it.
pub const DEFAULT_LEASE_SECS: u32 = 3600;

/// External ports tried after the listen port when the router says 718 (taken).
const CONFLICT_RETRIES: u16 = 8;

/// The description shown in the router's mapping table (`upnpc -l`).
const DESCRIPTION: &str = "sitelink";

/// Why UPnP did not work.
#[derive(Debug, thiserror::Error)]
pub enum UpnpError {
    /// No IGD answered the SSDP search in time (most networks without UPnP).
    #[error("no UPnP IGD router answered SSDP discovery: {0}")]
    NotFound(#[source] igd_next::SearchError),
    /// The router refused the mapping.
    #[error("the router refused the port mapping: {0}")]
    AddPort(#[source] AddPortError),
    /// Every external port tried was taken (error 718).
    #[error("external ports {first}..={last} are all mapped to other hosts (UPnP error 718)")]
    AllPortsTaken {
        /// The first port tried.
        first: u16,
        /// The last port tried.
        last: u16,
    },
    /// The local address towards the router could not be found.
    #[error("cannot find this host's address towards the router {router}: {source}")]
    LocalAddress {
        /// The router.
        router: SocketAddr,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
}

/// What [`probe`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// The router's control address.
    pub router: SocketAddr,
    /// Its external (WAN) address, if it told.
    pub external_ip: Option<IpAddr>,
}

/// Searches for an IGD by SSDP for at most `timeout`; `Ok(None)` when none answers.
pub async fn probe(timeout: Duration) -> Option<Probe> {
    let gateway = match discover(timeout).await {
        Ok(g) => g,
        Err(e) => {
            tracing::debug!(error = %e, "upnp: no IGD");
            return None;
        }
    };
    let external_ip = match gateway.get_external_ip().await {
        Ok(ip) => Some(ip),
        Err(e) => {
            tracing::debug!(router = %gateway.addr, error = %e, "upnp: GetExternalIPAddress failed");
            None
        }
    };
    Some(Probe {
        router: gateway.addr,
        external_ip,
    })
}

/// Finds the LAN's IGD by SSDP.
pub async fn discover(timeout: Duration) -> Result<Gateway<Tokio>, UpnpError> {
    let mut options = SearchOptions::default();
    options.timeout = Some(timeout);
    options.single_search_timeout = Some(timeout);
    let gateway = igd_next::aio::tokio::search_gateway(options)
        .await
        .map_err(UpnpError::NotFound)?;
    tracing::debug!(router = %gateway.addr, service = %gateway.service_type, "upnp: found IGD");
    Ok(gateway)
}

/// A port mapping held on the router.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortMapping {
    /// The router's control address.
    pub router: SocketAddr,
    /// The router's external address, if it told.
    pub external_ip: Option<IpAddr>,
    /// The external port that forwards to us.
    pub external_port: u16,
    /// Where the router forwards to: this host's LAN address and the listen port.
    pub internal: SocketAddr,
    /// The lease in seconds; 0 when the router takes only permanent mappings (725).
    pub lease_secs: u32,
}

impl PortMapping {
    /// When to renew: half the lease; `None` for a permanent mapping.
    pub fn renew_after(&self) -> Option<Duration> {
        (self.lease_secs > 0).then(|| Duration::from_secs(u64::from(self.lease_secs / 2).max(1)))
    }

    /// The public endpoint the mapping gives, when the router told its external address.
    pub fn external(&self) -> Option<SocketAddr> {
        self.external_ip
            .map(|ip| SocketAddr::new(ip, self.external_port))
    }
}

/// The two IGD actions the mapping logic uses; a trait so that the 718/725 handling is testable
/// without a router.
pub(crate) trait Igd {
    async fn add_port(
        &self,
        external_port: u16,
        internal: SocketAddr,
        lease_secs: u32,
    ) -> Result<(), AddPortError>;
    async fn remove_port(&self, external_port: u16) -> Result<(), RemovePortError>;
}

impl Igd for Gateway<Tokio> {
    async fn add_port(
        &self,
        external_port: u16,
        internal: SocketAddr,
        lease_secs: u32,
    ) -> Result<(), AddPortError> {
        Gateway::add_port(
            self,
            PortMappingProtocol::UDP,
            external_port,
            internal,
            lease_secs,
            DESCRIPTION,
        )
        .await
    }

    async fn remove_port(&self, external_port: u16) -> Result<(), RemovePortError> {
        Gateway::remove_port(self, PortMappingProtocol::UDP, external_port).await
    }
}

/// Adds the mapping: external port `preferred` first, then the next ones while the router says
/// 718; lease 0 if it says 725. Returns the external port and the lease granted.
pub(crate) async fn add_mapping<G: Igd>(
    igd: &G,
    preferred: u16,
    internal: SocketAddr,
    lease_secs: u32,
) -> Result<(u16, u32), UpnpError> {
    let mut lease = lease_secs;
    let mut port = preferred;
    let last = preferred.saturating_add(CONFLICT_RETRIES);
    loop {
        match igd.add_port(port, internal, lease).await {
            Ok(()) => return Ok((port, lease)),
            Err(AddPortError::OnlyPermanentLeasesSupported) if lease != 0 => {
                tracing::debug!(
                    port,
                    "upnp: router takes only permanent leases (725); lease 0"
                );
                lease = 0;
            }
            Err(AddPortError::PortInUse) => {
                tracing::debug!(port, "upnp: external port taken by another host (718)");
                if port >= last {
                    return Err(UpnpError::AllPortsTaken {
                        first: preferred,
                        last,
                    });
                }
                port += 1;
            }
            Err(e) => return Err(UpnpError::AddPort(e)),
        }
    }
}

/// This host's address towards `router` (the route's source address).
fn local_ip_towards(router: SocketAddr) -> Result<IpAddr, UpnpError> {
    let unspecified: SocketAddr = if router.is_ipv4() {
        (IpAddr::from([0u8; 4]), 0).into()
    } else {
        (IpAddr::from([0u16; 8]), 0).into()
    };
    let probe = std::net::UdpSocket::bind(unspecified)
        .and_then(|s| s.connect(router).map(|()| s))
        .and_then(|s| s.local_addr())
        .map_err(|source| UpnpError::LocalAddress { router, source })?;
    Ok(probe.ip())
}

/// Discovers the router and maps UDP `listen_port` (external port the same if free).
pub async fn map_port(
    listen_port: u16,
    lease_secs: u32,
    timeout: Duration,
) -> Result<(Gateway<Tokio>, PortMapping), UpnpError> {
    let gateway = discover(timeout).await?;
    let mapping = map_on(&gateway, listen_port, listen_port, lease_secs).await?;
    Ok((gateway, mapping))
}

async fn map_on(
    gateway: &Gateway<Tokio>,
    preferred: u16,
    listen_port: u16,
    lease_secs: u32,
) -> Result<PortMapping, UpnpError> {
    let internal = SocketAddr::new(local_ip_towards(gateway.addr)?, listen_port);
    let (external_port, lease_secs) = add_mapping(gateway, preferred, internal, lease_secs).await?;
    let external_ip = gateway.get_external_ip().await.ok();
    let mapping = PortMapping {
        router: gateway.addr,
        external_ip,
        external_port,
        internal,
        lease_secs,
    };
    tracing::info!(
        router = %mapping.router,
        external = ?mapping.external(),
        external_port,
        %internal,
        lease_secs,
        "upnp: port mapped"
    );
    Ok(mapping)
}

/// The daemon's UPnP task; [`UpnpTask::stop`] removes the mapping.
pub struct UpnpTask {
    stop: Option<oneshot::Sender<()>>,
    handle: JoinHandle<()>,
    mapped: watch::Receiver<Option<SocketAddr>>,
}

/// How often to look for a router again when none answered, or re-map after a failure.
const RETRY_INTERVAL: Duration = Duration::from_secs(60);

/// One step of [`spawn`]'s loop: maps the port (or renews the mapping held) and returns how long
/// to wait before the next step (`None`: forever).
async fn keep_mapped(
    held: &mut Option<(Gateway<Tokio>, PortMapping)>,
    listen_port: u16,
    lease_secs: u32,
) -> Option<Duration> {
    match &*held {
        None => match map_port(listen_port, lease_secs, DISCOVERY_TIMEOUT).await {
            Ok((gateway, mapping)) => {
                let wait = mapping.renew_after();
                *held = Some((gateway, mapping));
                wait
            }
            Err(e) => {
                tracing::info!(error = %e, "upnp: no port mapping; retrying in {}s", RETRY_INTERVAL.as_secs());
                Some(RETRY_INTERVAL)
            }
        },
        Some((gateway, mapping)) => {
            // Renew: the same request again, for the external port we hold.
            match map_on(
                gateway,
                mapping.external_port,
                listen_port,
                mapping.lease_secs,
            )
            .await
            {
                Ok(renewed) => {
                    let wait = renewed.renew_after();
                    if let Some((_, m)) = held.as_mut() {
                        *m = renewed;
                    }
                    wait
                }
                Err(e) => {
                    tracing::warn!(error = %e, "upnp: renewing the mapping failed; discovering again");
                    *held = None;
                    Some(RETRY_INTERVAL)
                }
            }
        }
    }
}

/// Starts keeping UDP `listen_port` mapped on the LAN's IGD (if there is one), renewing it at
/// half the lease. Runs on the current tokio runtime.
pub fn spawn(listen_port: u16, lease_secs: u32) -> UpnpTask {
    let (stop_tx, mut stop_rx) = oneshot::channel::<()>();
    let (mapped_tx, mapped) = watch::channel(None);
    let handle = tokio::spawn(async move {
        let mut held: Option<(Gateway<Tokio>, PortMapping)> = None;
        loop {
            // Discovery and SOAP calls can take seconds: a stop request must not wait for them.
            let wait = tokio::select! {
                w = keep_mapped(&mut held, listen_port, lease_secs) => w,
                _ = &mut stop_rx => break,
            };
            // Tell the driver when the external endpoint appears, changes or goes.
            let external = held.as_ref().and_then(|(_, m)| m.external());
            mapped_tx.send_if_modified(|current| {
                let changed = *current != external;
                *current = external;
                changed
            });
            let sleep = async {
                match wait {
                    Some(d) => tokio::time::sleep(d).await,
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = sleep => {}
                _ = &mut stop_rx => break,
            }
        }
        if let Some((gateway, mapping)) = held {
            match Igd::remove_port(&gateway, mapping.external_port).await {
                Ok(()) => tracing::info!(
                    external_port = mapping.external_port,
                    "upnp: mapping removed"
                ),
                Err(e) => {
                    tracing::warn!(external_port = mapping.external_port, error = %e, "upnp: removing the mapping failed")
                }
            }
        }
    });
    UpnpTask {
        stop: Some(stop_tx),
        handle,
        mapped,
    }
}

impl UpnpTask {
    /// The external endpoint of the mapping held (router's external address and the mapped
    /// port), `None` while there is none; changes as the mapping is made, moved or lost.
    pub fn mapped(&self) -> watch::Receiver<Option<SocketAddr>> {
        self.mapped.clone()
    }

    /// Removes the mapping (waiting at most a few seconds for the router) and ends the task.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let handle = &mut self.handle;
        if tokio::time::timeout(Duration::from_secs(5), handle)
            .await
            .is_err()
        {
            tracing::warn!("upnp: the router did not answer the removal in time");
            self.handle.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::collections::HashSet;

    use super::*;

    /// A router whose ports in `taken` are held by others, and that may take only permanent
    /// leases.
    #[derive(Default)]
    struct FakeIgd {
        taken: HashSet<u16>,
        permanent_only: bool,
        calls: RefCell<Vec<(u16, u32)>>,
    }

    impl Igd for FakeIgd {
        async fn add_port(&self, port: u16, _: SocketAddr, lease: u32) -> Result<(), AddPortError> {
            self.calls.borrow_mut().push((port, lease));
            if self.permanent_only && lease != 0 {
                return Err(AddPortError::OnlyPermanentLeasesSupported);
            }
            if self.taken.contains(&port) {
                return Err(AddPortError::PortInUse);
            }
            Ok(())
        }

        async fn remove_port(&self, _: u16) -> Result<(), RemovePortError> {
            Ok(())
        }
    }

    fn internal() -> SocketAddr {
        "192.168.1.10:51820".parse().expect("addr")
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
            .block_on(f)
    }

    #[test]
    fn free_port_first_time() {
        let igd = FakeIgd::default();
        let got = block_on(add_mapping(&igd, 51820, internal(), 3600)).expect("mapped");
        assert_eq!(got, (51820, 3600));
        assert_eq!(*igd.calls.borrow(), [(51820, 3600)]);
    }

    #[test]
    fn conflict_718_moves_to_the_next_port() {
        let igd = FakeIgd {
            taken: [51820, 51821].into_iter().collect(),
            ..FakeIgd::default()
        };
        let got = block_on(add_mapping(&igd, 51820, internal(), 3600)).expect("mapped");
        assert_eq!(got, (51822, 3600));
    }

    #[test]
    fn permanent_only_725_retries_with_lease_zero() {
        let igd = FakeIgd {
            permanent_only: true,
            taken: [51820].into_iter().collect(),
            ..FakeIgd::default()
        };
        let got = block_on(add_mapping(&igd, 51820, internal(), 3600)).expect("mapped");
        assert_eq!(got, (51821, 0));
        assert_eq!(*igd.calls.borrow(), [(51820, 3600), (51820, 0), (51821, 0)]);
        let mapping = PortMapping {
            router: "192.168.1.1:5000".parse().expect("addr"),
            external_ip: None,
            external_port: 51821,
            internal: internal(),
            lease_secs: 0,
        };
        assert_eq!(mapping.renew_after(), None);
    }

    #[test]
    fn gives_up_when_every_port_is_taken() {
        let igd = FakeIgd {
            taken: (51820..=51828).collect(),
            ..FakeIgd::default()
        };
        let err = block_on(add_mapping(&igd, 51820, internal(), 3600)).expect_err("all taken");
        assert!(matches!(
            err,
            UpnpError::AllPortsTaken {
                first: 51820,
                last: 51828
            }
        ));
    }

    #[test]
    fn renewal_at_half_the_lease() {
        let mapping = PortMapping {
            router: "192.168.1.1:5000".parse().expect("addr"),
            external_ip: Some("100.64.0.1".parse().expect("ip")),
            external_port: 51820,
            internal: internal(),
            lease_secs: 3600,
        };
        assert_eq!(mapping.renew_after(), Some(Duration::from_secs(1800)));
        assert_eq!(
            mapping.external(),
            Some("100.64.0.1:51820".parse().expect("addr"))
        );
    }
}
