//! Network namespaces and veth links, driven through `ip`.

use std::process::{Command, Output, Stdio};

use anyhow::{bail, Context, Result};

/// A named network namespace (`ip netns add`), deleted on drop.
///
/// Drop first kills, by PID, whatever processes are still running inside (they can only be ones
/// the test started, since the name is unique to it), then deletes the namespace, which takes its
/// interfaces with it.
pub(crate) struct Netns {
    name: String,
}

impl Netns {
    /// Creates namespace `name` with `lo` up. Names come from [`super::unique_id`].
    pub(crate) fn new(name: impl Into<String>) -> Result<Self> {
        let name = name.into();
        run_host(&["ip", "netns", "add", &name])?;
        let ns = Self { name };
        ns.run(&["ip", "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// A `Command` that runs `program` inside this namespace (`ip netns exec`). Because
    /// `ip netns exec` execs the program, a spawned child's PID is the program's own.
    pub(crate) fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
    }

    /// Runs `argv` in the namespace; fails with its stderr unless it exits 0. Returns stdout.
    pub(crate) fn run(&self, argv: &[&str]) -> Result<String> {
        let (program, args) = argv.split_first().context("empty command")?;
        let mut cmd = self.command(program);
        cmd.args(args);
        let out = output(&mut cmd).with_context(|| format!("in netns {}", self.name))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs `argv` in the namespace and reports only whether it exited 0 (output discarded).
    pub(crate) fn succeeds(&self, argv: &[&str]) -> bool {
        let Some((program, args)) = argv.split_first() else {
            return false;
        };
        self.command(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }

    /// Runs a shell snippet in the namespace (`sh -c`).
    pub(crate) fn sh(&self, script: &str) -> Result<String> {
        self.run(&["sh", "-c", script])
    }

    /// `ip addr add CIDR dev IFACE` and `ip link set IFACE up`.
    pub(crate) fn addr(&self, iface: &str, cidr: &str) -> Result<()> {
        self.run(&["ip", "addr", "add", cidr, "dev", iface])?;
        self.up(iface)
    }

    pub(crate) fn up(&self, iface: &str) -> Result<()> {
        self.run(&["ip", "link", "set", iface, "up"]).map(drop)
    }

    /// `ip route add DEST via GATEWAY` (`DEST` may be `default`).
    pub(crate) fn route_via(&self, dest: &str, gateway: &str) -> Result<()> {
        self.run(&["ip", "route", "add", dest, "via", gateway])
            .map(drop)
    }

    /// Turns on IPv4 forwarding in this namespace.
    pub(crate) fn enable_forwarding(&self) -> Result<()> {
        self.sh("echo 1 > /proc/sys/net/ipv4/ip_forward").map(drop)
    }

    /// Whether interface `iface` exists in this namespace.
    pub(crate) fn has_link(&self, iface: &str) -> bool {
        self.succeeds(&["ip", "link", "show", "dev", iface])
    }

    /// `ip -4 route show` for this namespace, one route a line.
    pub(crate) fn routes(&self) -> Result<String> {
        self.run(&["ip", "-4", "route", "show"])
    }

    /// PIDs of the processes running in this namespace.
    pub(crate) fn pids(&self) -> Vec<i32> {
        Command::new("ip")
            .args(["netns", "pids", &self.name])
            .stderr(Stdio::null())
            .output()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .split_whitespace()
                    .filter_map(|p| p.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for pid in self.pids() {
            super::daemon::send_signal(pid, libc::SIGKILL);
        }
        if let Err(e) = run_host(&["ip", "netns", "del", &self.name]) {
            eprintln!("warning: could not delete netns {}: {e:#}", self.name);
        }
    }
}

/// Creates a veth pair with one end `a_if` in `a` and the other `b_if` in `b`, both up.
///
/// The ends are created directly inside their namespaces, so interface names only need to be
/// unique within a namespace (`wan`, `lan`, …), never on the host.
pub(crate) fn veth(a: &Netns, a_if: &str, b: &Netns, b_if: &str) -> Result<()> {
    run_host(&[
        "ip",
        "link",
        "add",
        a_if,
        "netns",
        a.name(),
        "type",
        "veth",
        "peer",
        "name",
        b_if,
        "netns",
        b.name(),
    ])?;
    a.up(a_if)?;
    b.up(b_if)
}

/// Runs `argv` on the host (not in a namespace); fails with its stderr unless it exits 0.
pub(crate) fn run_host(argv: &[&str]) -> Result<String> {
    let (program, args) = argv.split_first().context("empty command")?;
    let out = output(Command::new(program).args(args))?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn output(cmd: &mut Command) -> Result<Output> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("spawning {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out)
}
