//! Shared harness for sitelink's end-to-end tests in real network namespaces.
//!
//! Each test binary pulls this in with `mod common;`. The pieces, from the bottom up:
//! - [`Netns`] and [`veth`]: named namespaces that delete themselves on drop;
//! - [`topology::Topology`]: the standard two-office layout (LAN A — gw-a — inet — gw-b — LAN B);
//! - [`Daemon`]: a process in a namespace, killed by PID on drop, log tail printed on panic;
//! - [`bins`], [`config`], [`status`]: the sitelink binaries, their config files and status JSON;
//! - [`TwoOffices`]: topology + keys + configs + both gateways, what most tests start from;
//! - [`traffic`]: ping and a checksummed TCP transfer between namespaces;
//! - [`workers`]: a home NAT router with remote workers running `sitelink-client` (issue #3);
//! - [`nat_routers`]: a gateway behind a Linux NAT router (masquerade, fully-random, miniupnpd)
//!   with coturn as STUN server (issue #5).
//!
//! Tests that need root, `ip` or `/dev/net/tun` call [`skip_unless_root`] first and pass with a
//! printed reason when those are missing. Everything a test creates carries a name unique to the
//! process and the test, so the suite can run in parallel and twice in a row.

#![allow(
    dead_code,
    reason = "each test binary uses a different subset of the harness"
)]

pub(crate) mod bins;
pub(crate) mod config;
pub(crate) mod daemon;
pub(crate) mod nat_router;
pub(crate) mod nat_routers;
pub(crate) mod netns;
pub(crate) mod sites;
pub(crate) mod status;
pub(crate) mod topology;
pub(crate) mod traffic;
pub(crate) mod workers;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

pub(crate) use daemon::Daemon;
pub(crate) use netns::{veth, Netns};
pub(crate) use sites::TwoOffices;

/// Returns `true` when this process can build namespaces and TUN devices; otherwise prints why
/// not and returns `false`, so the caller can return early (the test then passes as skipped).
pub(crate) fn skip_unless_root() -> bool {
    let reason = if !is_root() {
        Some("not running as root".to_owned())
    } else if !command_exists("ip") {
        Some("`ip` (iproute2) is not installed".to_owned())
    } else if !Path::new("/dev/net/tun").exists() {
        Some("/dev/net/tun is missing".to_owned())
    } else {
        None
    };
    match reason {
        Some(reason) => {
            eprintln!("SKIPPED: end-to-end test needs root, iproute2 and /dev/net/tun: {reason}");
            false
        }
        None => true,
    }
}

/// Like [`skip_unless_root`], and additionally checks that each of `tools` is on `PATH`.
pub(crate) fn skip_unless_root_and(tools: &[&str]) -> bool {
    if !skip_unless_root() {
        return false;
    }
    let missing: Vec<&str> = tools
        .iter()
        .copied()
        .filter(|t| !command_exists(t))
        .collect();
    if missing.is_empty() {
        true
    } else {
        eprintln!("SKIPPED: end-to-end test needs {}", missing.join(", "));
        false
    }
}

fn is_root() -> bool {
    // /proc/self/status has "Uid: real effective saved fs"; avoid unsafe geteuid().
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

/// Whether `name` is an executable on `PATH`.
pub(crate) fn command_exists(name: &str) -> bool {
    let Some(path) = std::env::var_os("PATH") else {
        return false;
    };
    std::env::split_paths(&path).any(|dir| {
        let candidate = dir.join(name);
        candidate
            .metadata()
            .map(|m| {
                use std::os::unix::fs::PermissionsExt;
                m.is_file() && m.permissions().mode() & 0o111 != 0
            })
            .unwrap_or(false)
    })
}

/// A short identifier unique to this process and call: `"<pid>-<n>"`.
///
/// Namespace and interface names are built from it, so two tests (or two runs of the suite)
/// never collide.
pub(crate) fn unique_id() -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Polls `condition` every 100 ms until it returns `true` or `timeout` passes.
///
/// `what` names the condition in the error, e.g. `"ping 192.168.20.10 from lan-a"`.
pub(crate) fn wait_until(
    timeout: Duration,
    what: &str,
    mut condition: impl FnMut() -> bool,
) -> Result<()> {
    let start = Instant::now();
    loop {
        if condition() {
            return Ok(());
        }
        if start.elapsed() >= timeout {
            bail!("timed out after {timeout:?} waiting for: {what}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Unwraps a test body's result, panicking with the whole error chain.
///
/// Call it while the fixtures are still alive, so their `Drop` sees the panic and prints logs.
#[track_caller]
pub(crate) fn must<T>(result: Result<T>) -> T {
    match result {
        Ok(v) => v,
        Err(e) => panic!("{e:#}"),
    }
}

/// A per-test scratch directory under the system temp dir.
///
/// Removed on drop when the test passed; kept (and its path printed) when it panicked, so the
/// logs and configs can be inspected.
pub(crate) struct TestDir {
    path: PathBuf,
}

impl TestDir {
    pub(crate) fn new(test: &str) -> Result<Self> {
        let path = std::env::temp_dir().join(format!("sitelink-e2e-{test}-{}", unique_id()));
        if path.exists() {
            std::fs::remove_dir_all(&path)
                .with_context(|| format!("removing stale {}", path.display()))?;
        }
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Self { path })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("test files kept in {}", self.path.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}
