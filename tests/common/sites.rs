//! Two offices with sitelink gateways: topology, keys, configs and the running daemons.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};

use super::bins::{self, KeyPair};
use super::config::{GatewayConfig, InterfaceConfig, PeerConfig};
use super::status::{self, Status};
use super::topology::{self, Topology};
use super::{wait_until, Daemon, Netns, TestDir};

/// The tunnel interface name on both gateways (they are in different namespaces).
pub(crate) const TUN_NAME: &str = "sl0";
pub(crate) const LISTEN_PORT: u16 = 51820;
pub(crate) const TUN_A: &str = "10.77.0.1";
pub(crate) const TUN_B: &str = "10.77.0.2";
/// How long a freshly started gateway gets to create its TUN and answer `status`.
pub(crate) const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Knobs for [`TwoOffices::new`].
#[derive(Debug, Clone, Default)]
pub(crate) struct Options {
    /// Give both peers a pre-shared key (`ab.psk`).
    pub(crate) psk: bool,
    /// `persistent_keepalive` on both sides.
    pub(crate) keepalive: Option<u16>,
}

/// One office's gateway: its keys and config.
#[derive(Debug, Clone)]
pub(crate) struct Site {
    /// `"office-a"` or `"office-b"`; also the peer name the other side uses.
    pub(crate) name: &'static str,
    pub(crate) keys: KeyPair,
    pub(crate) config: GatewayConfig,
    pub(crate) config_path: PathBuf,
}

/// The two-office layout with a sitelink config for each gateway, ready to start.
///
/// Fields drop in order: daemons first, then the namespaces, then the test dir (kept if the test
/// panicked).
pub(crate) struct TwoOffices {
    pub(crate) gw_a: Option<Daemon>,
    pub(crate) gw_b: Option<Daemon>,
    pub(crate) a: Site,
    pub(crate) b: Site,
    /// The pre-shared key (base64), when [`Options::psk`] was set.
    pub(crate) psk: Option<String>,
    pub(crate) net: Topology,
    pub(crate) dir: TestDir,
}

impl TwoOffices {
    /// Builds the topology, generates keys with `sitelink-keys` and writes `office-a.toml` and
    /// `office-b.toml` (key paths relative to the configs) into a fresh test dir.
    pub(crate) fn new(test: &str, opts: &Options) -> Result<Self> {
        let dir = TestDir::new(test)?;
        let net = Topology::two_offices()?;
        let key_a = KeyPair::generate(&dir.join("office-a.key"))?;
        let key_b = KeyPair::generate(&dir.join("office-b.key"))?;
        let psk = if opts.psk {
            Some(bins::generate_psk(&dir.join("ab.psk"))?)
        } else {
            None
        };
        let psk_file = opts.psk.then(|| PathBuf::from("ab.psk"));

        let site = |name: &'static str,
                    keys: KeyPair,
                    tun: &str,
                    peer_name: &str,
                    peer_key: &KeyPair,
                    peer_wan: &str,
                    peer_allowed: [&str; 2]| {
            let config = GatewayConfig {
                interface: InterfaceConfig {
                    name: TUN_NAME.to_owned(),
                    private_key_file: PathBuf::from(format!("{name}.key")),
                    listen_port: LISTEN_PORT,
                    address: vec![format!("{tun}/24")],
                    mtu: Some(1420),
                },
                peers: vec![PeerConfig {
                    name: peer_name.to_owned(),
                    public_key: peer_key.public_key.clone(),
                    preshared_key_file: psk_file.clone(),
                    endpoint: Some(format!("{peer_wan}:{LISTEN_PORT}")),
                    allowed_ips: peer_allowed.iter().map(|s| (*s).to_owned()).collect(),
                    persistent_keepalive: opts.keepalive,
                }],
            };
            Site {
                name,
                config_path: dir.join(&format!("{name}.toml")),
                keys,
                config,
            }
        };
        let a = site(
            "office-a",
            key_a.clone(),
            TUN_A,
            "office-b",
            &key_b,
            topology::WAN_B,
            ["10.77.0.2/32", topology::LAN_B_NET],
        );
        let b = site(
            "office-b",
            key_b,
            TUN_B,
            "office-a",
            &key_a,
            topology::WAN_A,
            ["10.77.0.1/32", topology::LAN_A_NET],
        );
        a.config.write(&a.config_path)?;
        b.config.write(&b.config_path)?;
        Ok(Self {
            gw_a: None,
            gw_b: None,
            a,
            b,
            psk,
            net,
            dir,
        })
    }

    /// Starts gateway A and waits until it is up (see [`start_gateway`]).
    pub(crate) fn start_a(&mut self) -> Result<()> {
        let log = self.dir.join("gw-a.log");
        self.gw_a = Some(start_gateway(
            &self.net.gw_a,
            "gateway A",
            &self.a.config_path,
            &log,
        )?);
        Ok(())
    }

    /// Starts gateway B and waits until it is up (see [`start_gateway`]).
    pub(crate) fn start_b(&mut self) -> Result<()> {
        let log = self.dir.join("gw-b.log");
        self.gw_b = Some(start_gateway(
            &self.net.gw_b,
            "gateway B",
            &self.b.config_path,
            &log,
        )?);
        Ok(())
    }

    /// Starts both gateways.
    pub(crate) fn start(&mut self) -> Result<()> {
        self.start_a()?;
        self.start_b()
    }

    /// Status of gateway A.
    pub(crate) fn status_a(&self) -> Result<Status> {
        status::fetch(&self.net.gw_a, &self.a.config_path)
    }

    /// Status of gateway B.
    pub(crate) fn status_b(&self) -> Result<Status> {
        status::fetch(&self.net.gw_b, &self.b.config_path)
    }

    /// Fails if either started gateway has exited.
    pub(crate) fn ensure_running(&mut self) -> Result<()> {
        for d in [&mut self.gw_a, &mut self.gw_b].into_iter().flatten() {
            d.ensure_running()?;
        }
        Ok(())
    }
}

/// Spawns `sitelink-gateway up --config CONFIG` in `ns` and waits (up to [`START_TIMEOUT`])
/// until its TUN exists and `status` answers; fails early, with the log, if it exits.
pub(crate) fn start_gateway(ns: &Netns, label: &str, config: &Path, log: &Path) -> Result<Daemon> {
    let gateway = bins::bin(bins::GATEWAY);
    let config_s = config.to_string_lossy();
    let mut daemon = Daemon::spawn(
        ns,
        label,
        log,
        &[&gateway.to_string_lossy(), "up", "--config", &config_s],
    )?;
    let mut last_error = String::new();
    let ready = wait_until(START_TIMEOUT, &format!("{label} to come up"), || {
        if !daemon.is_running() {
            return true; // reported below
        }
        if !ns.has_link(TUN_NAME) {
            last_error = format!("no {TUN_NAME} link yet");
            return false;
        }
        match status::fetch(ns, config) {
            Ok(_) => true,
            Err(e) => {
                last_error = format!("{e:#}");
                false
            }
        }
    });
    daemon.ensure_running()?;
    ready.with_context(|| format!("last problem: {last_error}; log:\n{}", daemon.log_tail(30)))?;
    Ok(daemon)
}
