//! Long-running processes inside a namespace (gateways, wireguard-go, listeners).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::Netns;

/// How many log lines [`Daemon`]'s drop prints when the test is panicking.
const LOG_TAIL_LINES: usize = 60;
/// How long [`Daemon`]'s drop waits after SIGTERM before SIGKILL.
const DROP_GRACE: Duration = Duration::from_secs(3);

/// A child process running in a namespace, with stdout and stderr in a log file.
///
/// On drop, if still running, it gets SIGTERM and then SIGKILL (by PID), and, when the test is panicking, the
/// last lines of its log are printed (the test harness shows them with the failure).
pub(crate) struct Daemon {
    label: String,
    child: Child,
    log: PathBuf,
    exit: Option<ExitStatus>,
}

impl Daemon {
    /// Spawns `argv` inside `ns`; output goes to `log`. `label` names it in messages.
    ///
    /// `RUST_LOG` is passed through when set, else defaults to debug for sitelink's crates.
    pub(crate) fn spawn(ns: &Netns, label: &str, log: &Path, argv: &[&str]) -> Result<Self> {
        let (program, args) = argv.split_first().context("empty command")?;
        let mut cmd = ns.command(program);
        cmd.args(args);
        Self::spawn_command(label, log, cmd)
    }

    /// Spawns a prepared command (e.g. from [`Netns::command`] with extra env).
    pub(crate) fn spawn_command(label: &str, log: &Path, mut cmd: Command) -> Result<Self> {
        let out = File::options()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("opening log {}", log.display()))?;
        let err = out.try_clone()?;
        // Plain logs: they go to a file and into test failure output.
        cmd.env("NO_COLOR", "1");
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env(
                "RUST_LOG",
                "info,sitelink_core=debug,sitelink_io=debug,sitelink_gateway=debug",
            );
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("spawning {label}: {cmd:?}"))?;
        Ok(Self {
            label: label.to_owned(),
            child,
            log: log.to_owned(),
            exit: None,
        })
    }

    pub(crate) fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).unwrap_or(i32::MAX)
    }

    pub(crate) fn log_path(&self) -> &Path {
        &self.log
    }

    /// The whole log so far.
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last `lines` lines of the log.
    pub(crate) fn log_tail(&self, lines: usize) -> String {
        let log = self.log();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Whether the process is still running (reaps it if it has exited).
    pub(crate) fn is_running(&mut self) -> bool {
        self.try_exit().is_none()
    }

    /// The exit status, if the process has exited.
    pub(crate) fn try_exit(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            self.exit = self.child.try_wait().ok().flatten();
        }
        self.exit
    }

    /// Fails (with the log tail) if the process has already exited.
    pub(crate) fn ensure_running(&mut self) -> Result<()> {
        match self.try_exit() {
            None => Ok(()),
            Some(status) => bail!(
                "{} exited early ({status}); log {}:\n{}",
                self.label,
                self.log.display(),
                self.log_tail(LOG_TAIL_LINES)
            ),
        }
    }

    /// Sends `signal` (e.g. `libc::SIGTERM`) to the process.
    pub(crate) fn signal(&self, signal: i32) {
        // Once reaped, the PID may belong to someone else: never signal it again.
        if self.exit.is_none() {
            send_signal(self.pid(), signal);
        }
    }

    /// Waits up to `timeout` for the process to exit.
    pub(crate) fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.try_exit() {
                return Ok(status);
            }
            if start.elapsed() >= timeout {
                bail!("{} did not exit within {timeout:?}", self.label);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, then waits up to `timeout` for a clean exit.
    pub(crate) fn terminate(&mut self, timeout: Duration) -> Result<ExitStatus> {
        self.signal(libc::SIGTERM);
        self.wait_exit(timeout)
    }

    /// SIGKILL (like `kill -9`) and reap.
    pub(crate) fn kill9(&mut self) -> Result<ExitStatus> {
        if self.try_exit().is_none() {
            self.signal(libc::SIGKILL);
        }
        self.wait_exit(Duration::from_secs(10))
    }

    /// Waits until the log contains `needle`.
    pub(crate) fn wait_for_log(&mut self, needle: &str, timeout: Duration) -> Result<()> {
        let what = format!("{} to log {needle:?}", self.label);
        super::wait_until(timeout, &what, || self.log().contains(needle))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // Ask nicely first (wireguard-go, for one, removes its socket file on SIGTERM), then
        // make sure.
        if self.try_exit().is_none() {
            self.signal(libc::SIGTERM);
            if self.wait_exit(DROP_GRACE).is_err() {
                self.signal(libc::SIGKILL);
                let _ = self.child.wait();
            }
        }
        if std::thread::panicking() {
            eprintln!(
                "----- {} (pid {}) log tail, {} -----\n{}\n----- end of {} log -----",
                self.label,
                self.child.id(),
                self.log.display(),
                self.log_tail(LOG_TAIL_LINES),
                self.label
            );
        }
    }
}

/// Sends `signal` to `pid`; errors (e.g. the process is already gone) are ignored.
pub(crate) fn send_signal(pid: i32, signal: i32) {
    if pid <= 0 {
        return;
    }
    // SAFETY: kill(2) takes plain integers and touches no memory of ours; a stale PID at worst
    // yields ESRCH, which we ignore.
    unsafe {
        libc::kill(pid, signal);
    }
}
