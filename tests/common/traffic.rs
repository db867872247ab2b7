//! Traffic between namespaces: ping, and TCP transfers checked with SHA-256.
//!
//! Transfers use `socat` on both ends (`-u`, one direction, with an inactivity timeout so a
//! stalled stream ends by itself).

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use sha2::{Digest, Sha256};

use super::{wait_until, Daemon, Netns};

/// One ICMP echo from `ns` to `addr` with a 1 s reply timeout.
pub(crate) fn ping(ns: &Netns, addr: &str) -> bool {
    ns.succeeds(&["ping", "-n", "-q", "-c", "1", "-W", "1", addr])
}

/// Pings from `ns` until `addr` answers, for up to `timeout`.
pub(crate) fn wait_ping(ns: &Netns, addr: &str, timeout: Duration) -> Result<()> {
    let what = format!("ping {addr} from netns {}", ns.name());
    wait_until(timeout, &what, || ping(ns, addr))
}

/// Writes `len` pseudo-random bytes to `path`; returns their SHA-256 (hex).
///
/// The generator (splitmix64) is seeded from the path, the PID and the clock: the data only has
/// to be incompressible and different between runs, not secret.
pub(crate) fn random_file(path: &Path, len: usize) -> Result<String> {
    let mut seed = u64::from(std::process::id())
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
        ^ path.as_os_str().len() as u64;
    let mut next = move || {
        seed = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = seed;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let mut hasher = Sha256::new();
    let mut chunk = vec![0u8; 1 << 16];
    let mut left = len;
    while left > 0 {
        for word in chunk.chunks_exact_mut(8) {
            word.copy_from_slice(&next().to_le_bytes());
        }
        let n = left.min(chunk.len());
        out.write_all(&chunk[..n])?;
        hasher.update(&chunk[..n]);
        left -= n;
    }
    out.flush()?;
    Ok(hex(&hasher.finalize()))
}

/// SHA-256 (hex) of a file's contents.
pub(crate) fn sha256_file(path: &Path) -> Result<String> {
    let mut file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A TCP transfer of one file from a sender namespace to a receiver namespace, in flight.
///
/// Both `socat`s are [`Daemon`]s, so they die with the test whatever happens.
pub(crate) struct Transfer {
    label: String,
    receiver: Daemon,
    sender: Daemon,
    source: PathBuf,
    received: PathBuf,
    expected_sha256: String,
    len: u64,
}

/// Where a transfer goes and what it carries.
pub(crate) struct TransferSpec<'a> {
    /// Names the transfer's files in the test dir and its messages.
    pub(crate) label: &'a str,
    pub(crate) from: &'a Netns,
    pub(crate) to: &'a Netns,
    /// The receiver's address as the sender sees it.
    pub(crate) to_addr: &'a str,
    pub(crate) port: u16,
    pub(crate) bytes: usize,
    /// Directory for the source file, the received file and the socat logs.
    pub(crate) dir: &'a Path,
}

impl Transfer {
    /// Generates the source file, starts the receiver, waits until it listens, starts the sender.
    pub(crate) fn start(spec: &TransferSpec<'_>) -> Result<Self> {
        let TransferSpec {
            label,
            from,
            to,
            to_addr,
            port,
            bytes,
            dir,
        } = *spec;
        let source = dir.join(format!("{label}.src"));
        let received = dir.join(format!("{label}.recv"));
        let expected_sha256 = random_file(&source, bytes)?;
        let receiver = start_receiver(to, label, port, &received, dir)?;
        let src = format!("OPEN:{}", source.display());
        let connect = format!("TCP:{to_addr}:{port},connect-timeout=10");
        let sender = Daemon::spawn(
            from,
            &format!("{label} sender"),
            &dir.join(format!("{label}.sender.log")),
            &["socat", "-T", "30", "-u", &src, &connect],
        )?;
        Ok(Self {
            label: label.to_owned(),
            receiver,
            sender,
            source,
            received,
            expected_sha256,
            len: bytes as u64,
        })
    }

    /// Bytes written by the receiver so far.
    pub(crate) fn received_bytes(&self) -> u64 {
        std::fs::metadata(&self.received)
            .map(|m| m.len())
            .unwrap_or(0)
    }

    /// Waits up to `timeout` for both ends to finish, then checks length and SHA-256.
    pub(crate) fn finish(mut self, timeout: Duration) -> Result<()> {
        let label = self.label.clone();
        let sender = self
            .sender
            .wait_exit(timeout)
            .with_context(|| format!("{label}: sender still running"))?;
        let receiver = self
            .receiver
            .wait_exit(Duration::from_secs(35))
            .with_context(|| format!("{label}: receiver still running after the sender exited"))?;
        if !sender.success() || !receiver.success() {
            bail!(
                "{label}: sender {sender}, receiver {receiver}; sender log: {}; receiver log: {}",
                self.sender.log_tail(5),
                self.receiver.log_tail(5)
            );
        }
        let got = self.received_bytes();
        ensure!(
            got == self.len,
            "{label}: received {got} of {} bytes",
            self.len
        );
        let sha = sha256_file(&self.received)?;
        ensure!(
            sha == self.expected_sha256,
            "{label}: SHA-256 mismatch: sent {}, received {sha}",
            self.expected_sha256
        );
        let _ = std::fs::remove_file(&self.received);
        let _ = std::fs::remove_file(&self.source);
        Ok(())
    }
}

/// An endless TCP stream (zeros) from one namespace to another, for tests that break the path
/// while data is in flight. Both ends are killed on drop; the received file is removed.
pub(crate) struct Stream {
    receiver: Daemon,
    sender: Daemon,
    received: PathBuf,
}

impl Stream {
    /// Starts the receiver, waits until it listens, starts the sender. `spec.bytes` is ignored.
    pub(crate) fn start(spec: &TransferSpec<'_>) -> Result<Self> {
        let TransferSpec {
            label,
            from,
            to,
            to_addr,
            port,
            dir,
            ..
        } = *spec;
        let received = dir.join(format!("{label}.recv"));
        let receiver = start_receiver(to, label, port, &received, dir)?;
        let connect = format!("TCP:{to_addr}:{port},connect-timeout=10");
        let sender = Daemon::spawn(
            from,
            &format!("{label} sender"),
            &dir.join(format!("{label}.sender.log")),
            &["socat", "-T", "30", "-u", "OPEN:/dev/zero", &connect],
        )?;
        Ok(Self {
            receiver,
            sender,
            received,
        })
    }

    /// Bytes received so far.
    pub(crate) fn received_bytes(&self) -> u64 {
        std::fs::metadata(&self.received)
            .map(|m| m.len())
            .unwrap_or(0)
    }

    /// Whether both ends are still running (the stream has not broken yet).
    pub(crate) fn is_flowing(&mut self) -> bool {
        self.sender.is_running() && self.receiver.is_running()
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        let _ = self.sender.kill9();
        let _ = self.receiver.kill9();
        let _ = std::fs::remove_file(&self.received);
    }
}

/// Starts `socat` listening on `port` in `ns`, writing what it receives to `sink`, and waits
/// until it listens.
fn start_receiver(ns: &Netns, label: &str, port: u16, sink: &Path, dir: &Path) -> Result<Daemon> {
    let listen = format!("TCP-LISTEN:{port},reuseaddr");
    let sink = format!("OPEN:{},creat,trunc", sink.display());
    let receiver = Daemon::spawn(
        ns,
        &format!("{label} receiver"),
        &dir.join(format!("{label}.receiver.log")),
        &["socat", "-T", "30", "-u", &listen, &sink],
    )?;
    let port = format!(":{port}");
    wait_until(
        Duration::from_secs(5),
        &format!("{label} receiver to listen on port {port}"),
        || {
            ns.run(&["ss", "-Hltn", "sport", "=", &port])
                .map(|out| !out.trim().is_empty())
                .unwrap_or(false)
        },
    )?;
    Ok(receiver)
}

/// Sends `bytes` random bytes over TCP and checks they arrive intact, within `timeout`.
pub(crate) fn tcp_transfer(spec: &TransferSpec<'_>, timeout: Duration) -> Result<()> {
    Transfer::start(spec)?.finish(timeout)
}
