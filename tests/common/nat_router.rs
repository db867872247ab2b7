//! The standalone NAT router (`sitelink-nat-router`) in a namespace, and UDP sockets opened
//! directly inside namespaces for probing it.
//!
//! ```ignore
//! let router = start_nat_router(&ns, "lan", "wan", "203.0.113.1", "full-cone", &log)?;
//! let inside = udp_socket_in(&lan_host, "192.168.1.10:40000".parse()?)?;
//! ```

use std::fs::File;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::{bins, Daemon, Netns};

/// The NAT router binary's name.
pub(crate) const NAT_ROUTER: &str = "sitelink-nat-router";

/// The four NAT types the router can be told to be.
pub(crate) const BEHAVIORS: [&str; 4] = [
    "full-cone",
    "restricted-cone",
    "port-restricted-cone",
    "symmetric",
];

/// Starts `sitelink-nat-router` in `ns` between `inside_if` and `outside_if`, masquerading onto
/// `address` (an address of `ns`, normally on `outside_if`) with `behavior` (one of
/// [`BEHAVIORS`]), and waits until it is up. Extra arguments (e.g. `--port-range`) go in `extra`.
pub(crate) fn start_nat_router(
    ns: &Netns,
    inside_if: &str,
    outside_if: &str,
    address: &str,
    behavior: &str,
    log: &Path,
    extra: &[&str],
) -> Result<Daemon> {
    let bin = bins::bin(NAT_ROUTER);
    let mut argv = vec![
        bin.to_string_lossy().into_owned(),
        "--inside".into(),
        inside_if.into(),
        "--outside".into(),
        outside_if.into(),
        "--address".into(),
        address.into(),
        "--behavior".into(),
        behavior.into(),
    ];
    argv.extend(extra.iter().map(|s| (*s).to_owned()));
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let mut daemon = Daemon::spawn(ns, &format!("NAT router ({behavior})"), log, &argv)?;
    daemon.wait_for_log("NAT router up", Duration::from_secs(20))?;
    daemon.ensure_running()?;
    Ok(daemon)
}

/// A UDP socket bound to `bind` inside namespace `ns` (the socket belongs to the namespace it
/// was made in, whichever thread uses it later).
pub(crate) fn udp_socket_in(ns: &Netns, bind: SocketAddr) -> Result<UdpSocket> {
    let path = format!("/run/netns/{}", ns.name());
    let file = File::open(&path).with_context(|| format!("opening {path}"))?;
    let socket = std::thread::scope(|s| {
        s.spawn(|| -> Result<UdpSocket> {
            // SAFETY: setns(2) takes a valid open file descriptor (held by `file` for the whole
            // call) and changes the network namespace of this short-lived thread only.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            if rc != 0 {
                bail!("setns {path}: {}", std::io::Error::last_os_error());
            }
            UdpSocket::bind(bind).with_context(|| format!("binding {bind} in {path}"))
        })
        .join()
        .map_err(|_| anyhow::anyhow!("the setns thread panicked"))
    })??;
    socket.set_read_timeout(Some(Duration::from_secs(2)))?;
    Ok(socket)
}

/// Receives one datagram within `timeout`: its payload and source, or `None`.
pub(crate) fn recv_within(socket: &UdpSocket, timeout: Duration) -> Option<(Vec<u8>, SocketAddr)> {
    socket.set_read_timeout(Some(timeout)).ok()?;
    let mut buf = [0u8; 2048];
    let (n, from) = socket.recv_from(&mut buf).ok()?;
    Some((buf[..n].to_vec(), from))
}

/// Sends `payload` from `from` to `to` up to `tries` times until `to` receives it; returns the
/// source address `to` saw (the NAT's mapping). Each try waits up to 1 s.
pub(crate) fn probe(
    from: &UdpSocket,
    to: &UdpSocket,
    payload: &[u8],
    tries: usize,
) -> Result<SocketAddr> {
    let dst = to.local_addr()?;
    for _ in 0..tries {
        from.send_to(payload, dst)?;
        let deadline = std::time::Instant::now() + Duration::from_secs(1);
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            match recv_within(to, left.max(Duration::from_millis(10))) {
                Some((got, seen)) if got == payload => return Ok(seen),
                Some(_) => continue,
                None => break,
            }
        }
    }
    bail!(
        "{dst} never received {:?}",
        String::from_utf8_lossy(payload)
    )
}
