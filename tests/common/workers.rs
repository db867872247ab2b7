//! Remote workers at home: a NAT router on the simulated internet with worker namespaces behind
//! it, each running `sitelink-client` against office A's gateway, which leases them addresses
//! from its `[pool]`.
//!
//! ```text
//!  lan-a ── gw-a (pool 10.77.100.0/24) ── inet ── gw-b ── lan-b          (the two offices, as in
//!                                          │                               topology.rs)
//!                                     to-home 203.0.113.254
//!                                          │
//!                            wan 203.0.113.2  home  (nftables masquerade out of wan)
//!                                  br-lan 192.168.77.1
//!                     ┌────────────────┼────────────────┐
//!              w1 192.168.77.11   w2 192.168.77.12   w3 192.168.77.13   …
//! ```
//!
//! [`RemoteWorkers::new`] builds the two offices ([`TwoOffices`]), hangs the home network off
//! their internet router, makes a key pair per worker, writes gateway A's config with the `[pool]`
//! and a `[[client]]` per known worker (the fixed key names of issue #3's config contract), adds
//! the pool's range to gateway B's `allowed_ips` for office A, and writes each worker's client
//! config. Nothing is started; tests start the gateways and the workers they need.

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use serde_json::Value;

use super::bins::{self, KeyPair};
use super::sites::{Options, LISTEN_PORT};
use super::topology::{LAN_A_NET, LAN_B_NET, WAN_A};
use super::{unique_id, veth, wait_until, Daemon, Netns, TwoOffices};

/// The home router's address on the simulated internet.
pub(crate) const HOME_WAN: &str = "203.0.113.2";
/// The internet router's address on the home router's link.
pub(crate) const HOME_UPLINK: &str = "203.0.113.254";
/// The home router's LAN address; the workers' default gateway.
pub(crate) const HOME_LAN_GW: &str = "192.168.77.1";
/// The pool's range in the default [`PoolSpec`].
pub(crate) const POOL_RANGE: &str = "10.77.100.0/24";
/// The client's TUN device (each worker has its own namespace).
pub(crate) const CLIENT_TUN: &str = "slc0";
/// How long a started client gets to hold a lease.
pub(crate) const BIND_TIMEOUT: Duration = Duration::from_secs(45);

/// The `[pool]` table of gateway A.
#[derive(Debug, Clone)]
pub(crate) struct PoolSpec {
    pub(crate) ranges: Vec<String>,
    pub(crate) exclude: Vec<String>,
    pub(crate) lease_time: u32,
    pub(crate) routes: Vec<String>,
    pub(crate) dns: Vec<String>,
    pub(crate) store: String,
    pub(crate) renew_after_percent: Option<u8>,
    pub(crate) rebind_after_percent: Option<u8>,
}

impl Default for PoolSpec {
    /// The contract's example: `10.77.100.0/24` less `.1`–`.9`, an hour's lease, both offices'
    /// LANs pushed as routes.
    fn default() -> Self {
        Self {
            ranges: vec![POOL_RANGE.to_owned()],
            exclude: vec![
                "10.77.100.1".to_owned(),
                "10.77.100.2-10.77.100.9".to_owned(),
            ],
            lease_time: 3600,
            routes: vec![LAN_A_NET.to_owned(), LAN_B_NET.to_owned()],
            dns: Vec::new(),
            store: "leases.db".to_owned(),
            renew_after_percent: None,
            rebind_after_percent: None,
        }
    }
}

impl PoolSpec {
    fn to_toml(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "\n[pool]");
        let _ = writeln!(s, "ranges = {}", list(&self.ranges));
        if !self.exclude.is_empty() {
            let _ = writeln!(s, "exclude = {}", list(&self.exclude));
        }
        let _ = writeln!(s, "lease_time = {}", self.lease_time);
        let _ = writeln!(s, "routes = {}", list(&self.routes));
        if !self.dns.is_empty() {
            let _ = writeln!(s, "dns = {}", list(&self.dns));
        }
        let _ = writeln!(s, "store = \"{}\"", self.store);
        if let Some(p) = self.renew_after_percent {
            let _ = writeln!(s, "renew_after_percent = {p}");
        }
        if let Some(p) = self.rebind_after_percent {
            let _ = writeln!(s, "rebind_after_percent = {p}");
        }
        s
    }
}

/// One worker of a [`Setup`].
#[derive(Debug, Clone)]
pub(crate) struct WorkerSpec {
    /// Its name: `[[client]] name`, the namespace suffix and file names. Short, e.g. `"w1"`.
    pub(crate) name: String,
    /// `fixed_address` in its `[[client]]` table.
    pub(crate) fixed_address: Option<String>,
    /// Whether gateway A has a `[[client]]` for its key (`false`: an unknown client).
    pub(crate) known: bool,
}

impl WorkerSpec {
    /// A known client with an automatic address.
    pub(crate) fn auto(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            fixed_address: None,
            known: true,
        }
    }

    /// A known client with `fixed_address`.
    pub(crate) fn fixed(name: &str, address: &str) -> Self {
        Self {
            fixed_address: Some(address.to_owned()),
            ..Self::auto(name)
        }
    }

    /// A client whose key gateway A does not know.
    pub(crate) fn unknown(name: &str) -> Self {
        Self {
            known: false,
            ..Self::auto(name)
        }
    }
}

/// What [`RemoteWorkers::new`] builds.
#[derive(Debug, Clone)]
pub(crate) struct Setup {
    pub(crate) pool: PoolSpec,
    pub(crate) workers: Vec<WorkerSpec>,
    /// `persistent_keepalive` of the workers' `[[gateway]]`; `None`: the client's default.
    pub(crate) client_keepalive: Option<u16>,
}

/// The home router namespace: WAN on the internet router, masquerading its LAN bridge.
pub(crate) struct HomeRouter {
    pub(crate) ns: Netns,
}

impl HomeRouter {
    /// Creates `home`, links it to `inet` (which gets [`HOME_UPLINK`]) and sets up masquerade.
    fn new(id: &str, inet: &Netns) -> Result<Self> {
        let ns = Netns::new(format!("sl-{id}-home"))?;
        veth(inet, "to-home", &ns, "wan")?;
        inet.addr("to-home", &format!("{HOME_UPLINK}/24"))?;
        ns.addr("wan", &format!("{HOME_WAN}/24"))?;
        ns.route_via("default", HOME_UPLINK)?;
        ns.run(&["ip", "link", "add", "br-lan", "type", "bridge"])?;
        ns.addr("br-lan", &format!("{HOME_LAN_GW}/24"))?;
        ns.enable_forwarding()?;
        ns.run(&["nft", "add", "table", "ip", "homenat"])?;
        ns.run(&[
            "nft",
            "add chain ip homenat postrouting { type nat hook postrouting priority srcnat; policy accept; }",
        ])?;
        ns.run(&[
            "nft",
            "add",
            "rule",
            "ip",
            "homenat",
            "postrouting",
            "oifname",
            "wan",
            "masquerade",
        ])
        .context("nftables masquerade")?;
        Ok(Self { ns })
    }

    /// Adds a worker namespace on the home LAN with address `lan_addr`.
    fn attach(&self, worker: &Netns, port: &str, lan_addr: &str) -> Result<()> {
        veth(&self.ns, port, worker, "eth0")?;
        self.ns
            .run(&["ip", "link", "set", port, "master", "br-lan"])?;
        worker.addr("eth0", &format!("{lan_addr}/24"))?;
        worker.route_via("default", HOME_LAN_GW)
    }

    /// The NAT table's conntrack-independent view: the ruleset, for failure messages.
    pub(crate) fn ruleset(&self) -> String {
        self.ns
            .run(&["nft", "list", "ruleset"])
            .unwrap_or_else(|e| format!("{e:#}"))
    }
}

/// One remote worker: a namespace behind the home router with a client key and config.
///
/// Fields drop in order: the client first, then the namespace.
pub(crate) struct Worker {
    pub(crate) daemon: Option<Daemon>,
    pub(crate) name: String,
    pub(crate) keys: KeyPair,
    pub(crate) config_path: PathBuf,
    pub(crate) lan_addr: String,
    pub(crate) fixed_address: Option<String>,
    dir: PathBuf,
    starts: usize,
    pub(crate) ns: Netns,
}

impl Worker {
    /// Starts `sitelink-client up --config CONFIG` in the worker's namespace; each start logs to
    /// its own file (`<name>.<n>.log`).
    pub(crate) fn start(&mut self) -> Result<()> {
        if let Some(d) = &mut self.daemon {
            ensure!(!d.is_running(), "{}: client already running", self.name);
        }
        let client = bins::bin(bins::CLIENT);
        let log = self.dir.join(format!("{}.{}.log", self.name, self.starts));
        self.starts += 1;
        let config = self.config_path.to_string_lossy().into_owned();
        let socket = self.socket_path();
        let mut cmd = self.ns.command(&client);
        cmd.args(["up", "--config", &config, "--socket"])
            .arg(&socket);
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env(
                "RUST_LOG",
                "info,sitelink_core=debug,sitelink_io=debug,sitelink_client=debug",
            );
        }
        let label = format!("client {}", self.name);
        self.daemon = Some(Daemon::spawn_command(&label, &log, cmd)?);
        Ok(())
    }

    /// The client's control socket: in the test dir, so that one left by `kill -9` goes with it.
    pub(crate) fn socket_path(&self) -> PathBuf {
        self.dir.join(format!("{}.sock", self.name))
    }

    /// The running (or last) client process.
    pub(crate) fn daemon(&mut self) -> Result<&mut Daemon> {
        self.daemon
            .as_mut()
            .with_context(|| format!("{}: client was never started", self.name))
    }

    /// The log of the current (or last) run.
    pub(crate) fn log(&self) -> String {
        self.daemon.as_ref().map(Daemon::log).unwrap_or_default()
    }

    /// `sitelink-client status --json --config CONFIG`, parsed.
    pub(crate) fn status(&self) -> Result<Value> {
        let client = bins::bin(bins::CLIENT);
        let config = self.config_path.to_string_lossy();
        let socket = self.socket_path();
        let out = self
            .ns
            .run(&[
                &client.to_string_lossy(),
                "status",
                "--json",
                "--config",
                &config,
                "--socket",
                &socket.to_string_lossy(),
            ])
            .with_context(|| format!("sitelink-client status for {}", self.name))?;
        serde_json::from_str(&out)
            .with_context(|| format!("{}: status output is not JSON: {out:?}", self.name))
    }

    /// The leased address `status --json` reports, if any.
    pub(crate) fn status_address(&self) -> Result<Option<Ipv4Addr>> {
        Ok(find_address(&self.status()?))
    }

    /// Waits until the client logs `lease bound` and `status --json` shows an address, which
    /// is also on its TUN device; returns it. Fails early if the client exits.
    pub(crate) fn wait_bound(&mut self, timeout: Duration) -> Result<Ipv4Addr> {
        let name = self.name.clone();
        let mut last = String::new();
        let mut found = None;
        let res = wait_until(timeout, &format!("client {name} to hold a lease"), || {
            let Some(d) = self.daemon.as_mut() else {
                return true;
            };
            if !d.is_running() {
                return true;
            }
            if !d.log().contains("lease bound") {
                last = "no `lease bound` in the log yet".to_owned();
                return false;
            }
            match self.status().map(|s| (find_address(&s), s)) {
                Ok((Some(a), _)) => {
                    found = Some(a);
                    true
                }
                Ok((None, s)) => {
                    last = format!("status shows no address: {s}");
                    false
                }
                Err(e) => {
                    last = format!("{e:#}");
                    false
                }
            }
        });
        self.daemon()?.ensure_running()?;
        let log_tail = self.daemon()?.log_tail(20);
        res.with_context(|| format!("last problem: {last}; log:\n{log_tail}"))?;
        let addr = found.context("no address")?;
        let on_tun = self.tun_addresses()?;
        ensure!(
            on_tun.contains(&addr),
            "{name}: status says {addr} but {CLIENT_TUN} has {on_tun:?}"
        );
        Ok(addr)
    }

    /// IPv4 addresses on the client's TUN device (empty when it does not exist).
    pub(crate) fn tun_addresses(&self) -> Result<Vec<Ipv4Addr>> {
        if !self.ns.has_link(CLIENT_TUN) {
            return Ok(Vec::new());
        }
        let out = self
            .ns
            .run(&["ip", "-4", "-o", "addr", "show", "dev", CLIENT_TUN])?;
        Ok(out
            .lines()
            .filter_map(|l| {
                let mut w = l.split_whitespace();
                w.find(|x| *x == "inet")?;
                w.next()?.split('/').next()?.parse().ok()
            })
            .collect())
    }

    /// The address in the last `lease bound` line of the current run's log, if any.
    pub(crate) fn logged_address(&self) -> Option<Ipv4Addr> {
        let log = self.log();
        let line = log.lines().rev().find(|l| l.contains("lease bound"))?;
        address_after(line, "address=")
    }

    /// SIGTERM, waits for a clean exit (status 0), and checks the TUN device is gone.
    pub(crate) fn stop(&mut self) -> Result<()> {
        let name = self.name.clone();
        let status = self.daemon()?.terminate(Duration::from_secs(20))?;
        let tail = self.daemon()?.log_tail(15);
        ensure!(
            status.success(),
            "client {name} exited with {status} on SIGTERM; log:\n{tail}"
        );
        wait_until(
            Duration::from_secs(5),
            &format!("{name}'s {CLIENT_TUN} to go away"),
            || !self.ns.has_link(CLIENT_TUN),
        )
    }

    /// `kill -9` the client; waits until the kernel has removed its TUN device.
    pub(crate) fn kill9(&mut self) -> Result<()> {
        self.daemon()?.kill9()?;
        let name = self.name.clone();
        wait_until(
            Duration::from_secs(10),
            &format!("{name}'s {CLIENT_TUN} to go away after kill -9"),
            || !self.ns.has_link(CLIENT_TUN),
        )
    }

    /// Whether the client is running.
    pub(crate) fn is_running(&mut self) -> bool {
        self.daemon.as_mut().is_some_and(Daemon::is_running)
    }

    /// `ip -4 route` in the worker's namespace.
    pub(crate) fn routes(&self) -> Result<String> {
        self.ns.routes()
    }
}

/// Two offices, a home router and the workers behind it.
///
/// Fields drop in order: clients and their namespaces, the home router, then the offices (whose
/// test dir, kept when the test panicked, holds every log).
pub(crate) struct RemoteWorkers {
    pub(crate) workers: Vec<Worker>,
    pub(crate) home: HomeRouter,
    pub(crate) t: TwoOffices,
    pub(crate) pool: PoolSpec,
}

impl RemoteWorkers {
    /// Builds everything and writes every config; starts nothing.
    pub(crate) fn new(test: &str, setup: &Setup) -> Result<Self> {
        let mut t = TwoOffices::new(
            test,
            &Options {
                psk: false,
                keepalive: Some(25),
            },
        )?;
        let id = unique_id();
        let home = HomeRouter::new(&id, &t.net.inet).context("home router")?;

        // Gateway B routes the pool's addresses to office A.
        for range in &setup.pool.ranges {
            t.b.config.peers[0].allowed_ips.push(range.clone());
        }
        t.b.config.write(&t.b.config_path)?;

        let mut workers = Vec::with_capacity(setup.workers.len());
        let mut clients = String::new();
        for (i, spec) in setup.workers.iter().enumerate() {
            ensure!(i < 100, "too many workers");
            let ns = Netns::new(format!("sl-{id}-{}", spec.name))?;
            let lan_addr = format!("192.168.77.{}", 11 + i);
            home.attach(&ns, &format!("lan{i}"), &lan_addr)
                .with_context(|| format!("attaching worker {}", spec.name))?;
            let keys = KeyPair::generate(&t.dir.join(&format!("{}.key", spec.name)))?;
            if spec.known {
                let _ = writeln!(clients, "\n[[client]]");
                let _ = writeln!(clients, "name = \"{}\"", spec.name);
                let _ = writeln!(clients, "public_key = \"{}\"", keys.public_key);
                if let Some(fixed) = &spec.fixed_address {
                    let _ = writeln!(clients, "fixed_address = \"{fixed}\"");
                }
            }
            let config_path = t.dir.join(&format!("{}.toml", spec.name));
            let mut c = String::new();
            let _ = writeln!(c, "[interface]");
            let _ = writeln!(c, "name = \"{CLIENT_TUN}\"");
            let _ = writeln!(c, "private_key_file = \"{}.key\"", spec.name);
            let _ = writeln!(c, "state_dir = \"state-{}\"", spec.name);
            let _ = writeln!(c, "\n[[gateway]]");
            let _ = writeln!(c, "name = \"office-a\"");
            let _ = writeln!(c, "public_key = \"{}\"", t.a.keys.public_key);
            let _ = writeln!(c, "endpoint = \"{WAN_A}:{LISTEN_PORT}\"");
            if let Some(k) = setup.client_keepalive {
                let _ = writeln!(c, "persistent_keepalive = {k}");
            }
            std::fs::write(&config_path, c)
                .with_context(|| format!("writing {}", config_path.display()))?;
            workers.push(Worker {
                daemon: None,
                name: spec.name.clone(),
                keys,
                config_path,
                lan_addr,
                fixed_address: spec.fixed_address.clone(),
                dir: t.dir.path().to_owned(),
                starts: 0,
                ns,
            });
        }

        let mut text = t.a.config.to_toml();
        text.push_str(&setup.pool.to_toml());
        text.push_str(&clients);
        std::fs::write(&t.a.config_path, text)
            .with_context(|| format!("writing {}", t.a.config_path.display()))?;
        Ok(Self {
            workers,
            home,
            t,
            pool: setup.pool.clone(),
        })
    }

    /// The worker named `name`.
    pub(crate) fn worker(&mut self, name: &str) -> Result<&mut Worker> {
        self.workers
            .iter_mut()
            .find(|w| w.name == name)
            .with_context(|| format!("no worker {name}"))
    }

    /// The worker named `name`, shared.
    pub(crate) fn get(&self, name: &str) -> Result<&Worker> {
        self.workers
            .iter()
            .find(|w| w.name == name)
            .with_context(|| format!("no worker {name}"))
    }

    /// `sitelink-gateway leases --json --config A` in gw-a, parsed.
    pub(crate) fn leases(&self) -> Result<Leases> {
        leases(&self.t.net.gw_a, &self.t.a.config_path)
    }

    /// The `peers[]` entry of gateway A's `status --json` with public key `key`, if any.
    pub(crate) fn gateway_peer(&self, key: &str) -> Result<Option<Value>> {
        let status = self.t.status_a()?;
        Ok(status.0["peers"].as_array().and_then(|peers| {
            peers
                .iter()
                .find(|p| p["public_key"].as_str() == Some(key))
                .cloned()
        }))
    }

    /// Fails unless gateway A has worker `name` as a WireGuard peer with exactly `addr/32` as its
    /// allowed IPs.
    pub(crate) fn ensure_peer(&self, name: &str, addr: Ipv4Addr) -> Result<()> {
        let key = &self.get(name)?.keys.public_key;
        let peer = self
            .gateway_peer(key)?
            .with_context(|| format!("gateway A has no peer for {name} ({key})"))?;
        let allowed: Vec<&str> = peer["allowed_ips"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        ensure!(
            allowed == [format!("{addr}/32")],
            "{name}'s peer on gateway A allows {allowed:?}, not just {addr}/32: {peer}"
        );
        Ok(())
    }

    /// Fails if gateway A still has worker `name` as a WireGuard peer.
    pub(crate) fn ensure_no_peer(&self, name: &str) -> Result<()> {
        let key = &self.get(name)?.keys.public_key;
        if let Some(peer) = self.gateway_peer(key)? {
            bail!("gateway A still has {name} as a peer after its lease ended: {peer}");
        }
        Ok(())
    }

    /// Gateway A's log so far.
    pub(crate) fn gw_a_log(&self) -> String {
        self.t.gw_a.as_ref().map(Daemon::log).unwrap_or_default()
    }

    /// Where gateway A's `up` writes its log (each start appends).
    pub(crate) fn gw_a_log_path(&self) -> PathBuf {
        self.t.dir.join("gw-a.log")
    }
}

/// `sitelink-gateway leases --json --config CONFIG` in `ns`, parsed.
pub(crate) fn leases(ns: &Netns, config: &Path) -> Result<Leases> {
    let gateway = bins::bin(bins::GATEWAY);
    let config = config.to_string_lossy();
    let out = ns
        .run(&[
            &gateway.to_string_lossy(),
            "leases",
            "--json",
            "--config",
            &config,
        ])
        .context("sitelink-gateway leases --json")?;
    let json: Value = serde_json::from_str(&out)
        .with_context(|| format!("leases output is not JSON: {out:?}"))?;
    Leases::from_json(json)
}

/// One row of `leases --json`.
#[derive(Debug, Clone)]
pub(crate) struct Lease {
    pub(crate) name: Option<String>,
    pub(crate) public_key: Option<String>,
    pub(crate) address: Ipv4Addr,
    /// `offered`, `active` or `expired` (ended: expired or released).
    pub(crate) state: Option<String>,
    pub(crate) raw: Value,
}

impl Lease {
    /// Whether the address is held (not an ended lease kept for a returning client).
    pub(crate) fn is_held(&self) -> bool {
        self.state.as_deref() != Some("expired")
    }
}

/// `leases --json`: the rows, and the whole document for messages.
#[derive(Debug, Clone)]
pub(crate) struct Leases {
    pub(crate) rows: Vec<Lease>,
    pub(crate) raw: Value,
}

impl Leases {
    /// Accepts a top-level array of lease objects, or an object with a `leases` array.
    fn from_json(raw: Value) -> Result<Self> {
        let items = match &raw {
            Value::Array(items) => items.clone(),
            Value::Object(map) => match map.get("leases") {
                Some(Value::Array(items)) => items.clone(),
                _ => bail!("leases JSON has no `leases` array: {raw}"),
            },
            _ => bail!("leases JSON is neither an array nor an object: {raw}"),
        };
        let mut rows = Vec::with_capacity(items.len());
        for item in items {
            let address = item
                .get("address")
                .and_then(Value::as_str)
                .and_then(parse_addr)
                .with_context(|| format!("lease without an IPv4 `address`: {item}"))?;
            rows.push(Lease {
                name: item.get("name").and_then(Value::as_str).map(str::to_owned),
                public_key: item
                    .get("public_key")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
                address,
                state: item.get("state").and_then(Value::as_str).map(str::to_owned),
                raw: item,
            });
        }
        Ok(Self { rows, raw })
    }

    /// The held lease of the client with public key `key`.
    pub(crate) fn by_key(&self, key: &str) -> Option<&Lease> {
        self.held().find(|l| l.public_key.as_deref() == Some(key))
    }

    /// The rows whose address is held (offered or active).
    pub(crate) fn held(&self) -> impl Iterator<Item = &Lease> {
        self.rows.iter().filter(|l| l.is_held())
    }

    /// Fails if an address appears twice, or a key has two leases.
    pub(crate) fn ensure_no_duplicates(&self) -> Result<()> {
        let mut seen = std::collections::HashMap::new();
        for l in &self.rows {
            if let Some(other) = seen.insert(l.address, l) {
                bail!(
                    "address {} leased twice: {} and {}; all leases: {}",
                    l.address,
                    other.raw,
                    l.raw,
                    self.raw
                );
            }
        }
        let mut keys = std::collections::HashSet::new();
        for l in self.held() {
            if let Some(k) = &l.public_key {
                ensure!(
                    keys.insert(k.clone()),
                    "key {k} has two leases: {}",
                    self.raw
                );
            }
        }
        Ok(())
    }
}

impl std::fmt::Display for Leases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.raw)
    }
}

/// `"10.77.100.10"` or `"10.77.100.10/24"`.
fn parse_addr(s: &str) -> Option<Ipv4Addr> {
    s.split('/').next()?.trim().parse().ok()
}

/// The first IPv4 address after `key` in a log line (`address=10.77.100.10/24`, quoted or not).
fn address_after(line: &str, key: &str) -> Option<Ipv4Addr> {
    let rest = &line[line.find(key)? + key.len()..];
    let rest = rest.trim_start_matches('"');
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// The leased address in a client's `status --json`: the first string under a key named
/// `address` (at any depth) that is an IPv4 address, with or without a prefix length.
pub(crate) fn find_address(v: &Value) -> Option<Ipv4Addr> {
    match v {
        Value::Object(map) => match map.get("address") {
            // `"address": null` while the client has no lease.
            Some(a) => a.as_str().and_then(parse_addr),
            None => map.values().find_map(find_address),
        },
        Value::Array(items) => items.iter().find_map(find_address),
        _ => None,
    }
}

/// A TCP server in `ns` that answers every connection with the peer's address
/// (`socat … SYSTEM:'echo $SOCAT_PEERADDR'`), to see which source address arrives.
pub(crate) struct PeerReporter {
    daemon: Daemon,
    port: u16,
}

impl PeerReporter {
    pub(crate) fn start(ns: &Netns, port: u16, log: &Path) -> Result<Self> {
        let listen = format!("TCP-LISTEN:{port},reuseaddr,fork");
        let daemon = Daemon::spawn(
            ns,
            "peer-address reporter",
            log,
            &["socat", &listen, "SYSTEM:echo $SOCAT_PEERADDR"],
        )?;
        let sport = format!(":{port}");
        wait_until(
            Duration::from_secs(5),
            "peer-address reporter to listen",
            || {
                ns.run(&["ss", "-Hltn", "sport", "=", &sport])
                    .map(|o| !o.trim().is_empty())
                    .unwrap_or(false)
            },
        )?;
        Ok(Self { daemon, port })
    }

    /// Connects from `from` to `addr` and returns the address the server saw.
    pub(crate) fn ask(&mut self, from: &Netns, addr: &str) -> Result<Ipv4Addr> {
        self.daemon.ensure_running()?;
        let connect = format!("TCP:{addr}:{},connect-timeout=5", self.port);
        let out = from.run(&["socat", "-T", "5", "-u", &connect, "STDOUT"])?;
        parse_addr(out.trim()).with_context(|| format!("reporter answered {out:?}"))
    }
}

/// `tcpdump` on `eth0` of a namespace, writing what matches `filter` to a pcap file.
pub(crate) struct Capture {
    daemon: Daemon,
    file: PathBuf,
}

impl Capture {
    pub(crate) fn start(ns: &Netns, filter: &str, file: &Path) -> Result<Self> {
        let file_s = file.to_string_lossy();
        let mut daemon = Daemon::spawn(
            ns,
            "tcpdump",
            &file.with_extension("log"),
            &[
                "tcpdump", "-i", "eth0", "-n", "-U", "-Z", "root", "-w", &file_s, filter,
            ],
        )?;
        daemon.wait_for_log("listening on", Duration::from_secs(10))?;
        Ok(Self {
            daemon,
            file: file.to_owned(),
        })
    }

    /// The packets captured so far, one `tcpdump -n -q` line each.
    pub(crate) fn lines(&self) -> Result<Vec<String>> {
        let out = std::process::Command::new("tcpdump")
            .arg("-r")
            .arg(&self.file)
            .args(["-n", "-q"])
            .output()
            .context("tcpdump -r")?;
        // A capture being written may end in a partial record; every whole one is printed.
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.contains(" > "))
            .map(str::to_owned)
            .collect())
    }
}

impl Capture {
    /// The UDP payloads captured so far (IPv4), in order.
    pub(crate) fn udp_payloads(&self) -> Result<Vec<Vec<u8>>> {
        let out = std::process::Command::new("tcpdump")
            .arg("-r")
            .arg(&self.file)
            .args(["-n", "-x"])
            .output()
            .context("tcpdump -r -x")?;
        let mut packets: Vec<Vec<u8>> = Vec::new();
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let trimmed = line.trim_start();
            if trimmed.starts_with("0x") && line.starts_with(char::is_whitespace) {
                let Some(current) = packets.last_mut() else {
                    continue;
                };
                for group in trimmed.split_whitespace().skip(1) {
                    let bytes = (0..group.len())
                        .step_by(2)
                        .map(|i| u8::from_str_radix(group.get(i..i + 2).unwrap_or("zz"), 16));
                    for b in bytes {
                        current.push(b.context("tcpdump -x printed a non-hex byte")?);
                    }
                }
            } else if !line.starts_with(char::is_whitespace) && line.contains(" > ") {
                packets.push(Vec::new());
            }
        }
        Ok(packets
            .into_iter()
            .filter_map(|ip| {
                let ihl = usize::from(*ip.first()? & 0x0f) * 4;
                ip.get(ihl + 8..).map(<[u8]>::to_vec)
            })
            .collect())
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.daemon.signal(libc::SIGINT);
        let _ = self.daemon.wait_exit(Duration::from_secs(5));
    }
}

/// A stock `wireguard-go` + `wg` client in a namespace, configured from a `wg-quick` text (as
/// `sitelink-gateway export-client` prints it): the `wg setconf` subset goes to `wg`, `Address`
/// and `MTU` to `ip`, and every `AllowedIPs` prefix becomes a route. On drop it gets SIGTERM
/// (it then removes its TUN and UAPI socket); a socket left behind is removed.
pub(crate) struct StockClient {
    daemon: Daemon,
    pub(crate) iface: String,
}

impl StockClient {
    pub(crate) fn start(ns: &Netns, wg_quick: &str, dir: &Path) -> Result<Self> {
        // The UAPI socket is /var/run/wireguard/<iface>.sock on the shared filesystem: the name
        // must be unique on the host.
        let iface = format!("wg{}", unique_id());
        ensure!(iface.len() <= 15, "interface name {iface} too long");
        let mut cmd = ns.command("wireguard-go");
        cmd.env("WG_PROCESS_FOREGROUND", "1").args(["-f", &iface]);
        let mut daemon = Daemon::spawn_command(
            "wireguard-go client",
            &dir.join("wireguard-go-client.log"),
            cmd,
        )?;
        let socket = stock_socket(&iface);
        wait_until(
            Duration::from_secs(10),
            "wireguard-go to create its TUN",
            || !daemon.is_running() || (ns.has_link(&iface) && socket.exists()),
        )?;
        daemon.ensure_running()?;
        let this = Self { daemon, iface };

        let mut setconf = String::new();
        let mut addresses = Vec::new();
        let mut mtu = "1420".to_owned();
        let mut allowed = Vec::new();
        for line in wg_quick.lines() {
            let trimmed = line.trim();
            let key_value = trimmed
                .split_once('=')
                .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()));
            match key_value {
                Some((k, v)) if k == "address" => {
                    addresses.extend(v.split(',').map(|a| a.trim().to_owned()));
                }
                Some((k, v)) if k == "mtu" => mtu = v,
                Some((k, _)) if k == "dns" => {}
                Some((k, v)) if k == "allowedips" => {
                    allowed.extend(v.split(',').map(|a| a.trim().to_owned()));
                    setconf.push_str(line);
                    setconf.push('\n');
                }
                _ => {
                    setconf.push_str(line);
                    setconf.push('\n');
                }
            }
        }
        ensure!(!addresses.is_empty(), "no Address in:\n{wg_quick}");
        let conf = dir.join("stock-client.conf");
        bins::write_secret(&conf, &setconf)?;
        ns.run(&["wg", "setconf", &this.iface, &conf.to_string_lossy()])
            .with_context(|| format!("wg setconf with:\n{setconf}"))?;
        for a in &addresses {
            ns.run(&["ip", "addr", "add", a, "dev", &this.iface])?;
        }
        ns.run(&["ip", "link", "set", &this.iface, "mtu", &mtu, "up"])?;
        for prefix in &allowed {
            ns.run(&["ip", "route", "replace", prefix, "dev", &this.iface])?;
        }
        Ok(this)
    }

    /// `wg show IFACE latest-handshakes`: seconds since the epoch of the last handshake, or 0.
    pub(crate) fn latest_handshake(&self, ns: &Netns) -> Result<u64> {
        let out = ns.run(&["wg", "show", &self.iface, "latest-handshakes"])?;
        Ok(out
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0))
    }
}

impl Drop for StockClient {
    fn drop(&mut self) {
        if self.daemon.is_running() {
            self.daemon.signal(libc::SIGTERM);
            let _ = self.daemon.wait_exit(Duration::from_secs(5));
        }
        let _ = std::fs::remove_file(stock_socket(&self.iface));
    }
}

fn stock_socket(iface: &str) -> PathBuf {
    PathBuf::from(format!("/var/run/wireguard/{iface}.sock"))
}

fn list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| format!("\"{s}\"")).collect();
    format!("[{}]", quoted.join(", "))
}

#[test]
fn finds_addresses() {
    let v: Value = serde_json::from_str(
        r#"{"gateways":[{"name":"office-a","lease":{"address":"10.77.100.12/24"}}]}"#,
    )
    .expect("json");
    assert_eq!(find_address(&v), Some(Ipv4Addr::new(10, 77, 100, 12)));
    assert_eq!(
        address_after(
            "INFO lease bound gateway=office-a address=10.77.100.10/24 lease=3600s",
            "address="
        ),
        Some(Ipv4Addr::new(10, 77, 100, 10))
    );
    let l = Leases::from_json(
        serde_json::from_str(
            r#"{"leases":[{"name":"w1","public_key":"k","address":"10.77.100.10","state":"active"},
                          {"name":"w1","public_key":"k","address":"10.77.100.11","state":"expired"}]}"#,
        )
        .expect("json"),
    )
    .expect("leases");
    assert_eq!(l.rows[0].address, Ipv4Addr::new(10, 77, 100, 10));
    assert_eq!(
        l.by_key("k").map(|l| l.address),
        Some(Ipv4Addr::new(10, 77, 100, 10))
    );
    l.ensure_no_duplicates().expect("no duplicates");
    let bound: Value = serde_json::from_str(
        r#"{"state":"bound","address":"10.77.100.50","gateway":{"name":"office-a"}}"#,
    )
    .expect("json");
    assert_eq!(find_address(&bound), Some(Ipv4Addr::new(10, 77, 100, 50)));
    let asking: Value =
        serde_json::from_str(r#"{"state":"discovering","address":null,"peer":{"address":"x"}}"#)
            .expect("json");
    assert_eq!(find_address(&asking), None);
}
