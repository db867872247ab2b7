//! The data path under the gateway's event loop: how packets get from the TUN device and the UDP
//! socket into the core, and the core's output back out.
//!
//! Two ways, chosen when the gateway starts ([`Mode`]):
//! - **batch** (the default): [`crate::batch`]. The TUN device with offloads (a read is a TSO
//!   super-packet, split into MTU-sized packets; writes of one TCP flow are coalesced, GRO), the
//!   UDP socket with `recvmmsg` and UDP GRO in, UDP GSO out. The core's output for a whole wake-up
//!   is gathered in a [`BatchSink`] and written when the wake-up ends. Without TUN offloads in
//!   the kernel the TUN device moves one packet per call but UDP stays batched; without UDP
//!   GSO/GRO `quinn-udp` sends one datagram per call.
//! - **plain**: one packet per system call through `tokio-tun` and a plain UDP socket, the path
//!   the gateway had before batching. Chosen with `SITELINK_DATAPATH=plain`, or taken when the
//!   batched devices cannot be set up (logged).
//!
//! The event loop waits with [`DataPath::wait`], which reads the first batch, then hands it and
//! everything else already waiting (up to [`READS_PER_WAKEUP`] reads) to the core with
//! [`DataPath::feed`], which flushes the output before it returns.

use std::env::VarError;
use std::io;
use std::net::SocketAddr;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde::Serialize;
use sitelink_core::gateway::Sink;
use tokio_tun::Tun;
use tracing::{info, trace, warn};

use super::IoCounters;
use crate::batch::{BatchSink, BatchStats, BatchTun, BatchUdp, TunRx, UdpRx};
use crate::udp::UdpTransport;

/// Environment variable that picks the [`Mode`]: `batch` (default) or `plain`.
pub const DATAPATH_ENV: &str = "SITELINK_DATAPATH";

/// Reads of one kind (TUN reads, or `recvmmsg` calls) fed to the core per wake-up before the
/// output is flushed and the loop looks at the other side, the timers and the control socket.
pub(super) const READS_PER_WAKEUP: usize = 8;

/// How packets move between the devices and the core.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Batched system calls with TUN and UDP offloads where the kernel has them.
    Batch,
    /// One packet per system call.
    Plain,
}

impl Mode {
    /// The mode `SITELINK_DATAPATH` asks for; [`Mode::Batch`] when it is unset or empty.
    pub fn from_env() -> Result<Self> {
        match std::env::var(DATAPATH_ENV) {
            Err(VarError::NotPresent) => Ok(Self::Batch),
            Ok(v) => match v.trim() {
                "" | "batch" => Ok(Self::Batch),
                "plain" => Ok(Self::Plain),
                other => bail!("{DATAPATH_ENV}={other:?}: expected \"batch\" or \"plain\""),
            },
            Err(VarError::NotUnicode(v)) => {
                bail!("{DATAPATH_ENV}={v:?}: expected \"batch\" or \"plain\"")
            }
        }
    }
}

/// The TUN device and the UDP socket, opened for one [`Mode`].
pub(super) enum Devices {
    Plain { udp: UdpTransport, tun: Tun },
    Batch { udp: BatchUdp, tun: BatchTun },
}

impl Devices {
    /// Binds the UDP socket on `port` and creates the TUN device `name` with `mtu`, batched if
    /// `mode` asks for it and the kernel allows, plain otherwise.
    pub(super) async fn open(name: &str, mtu: u16, port: u16, mode: Mode) -> Result<Self> {
        if mode == Mode::Batch {
            match open_batch(name, mtu, port).await {
                Ok(devices) => return Ok(devices),
                Err(e) => warn!(
                    interface = name,
                    error = %format!("{e:#}"),
                    "batched I/O unavailable; one packet per system call"
                ),
            }
        }
        let udp = UdpTransport::bind(port)?;
        let tun = crate::tun::create(name, mtu)?;
        info!(
            interface = name,
            "data path: plain, one packet per system call"
        );
        Ok(Self::Plain { udp, tun })
    }

    /// The TUN device's interface index.
    pub(super) fn ifindex(&self, name: &str) -> Result<u32> {
        let index = match self {
            Self::Plain { tun, .. } => tun.index().map_err(anyhow::Error::from),
            Self::Batch { tun, .. } => tun.ifindex().map_err(anyhow::Error::from),
        };
        index.with_context(|| format!("cannot read the index of {name}"))
    }

    /// The UDP socket's port.
    pub(super) fn local_port(&self) -> io::Result<u16> {
        match self {
            Self::Plain { udp, .. } => udp.local_port(),
            Self::Batch { udp, .. } => udp.local_port(),
        }
    }

    /// The buffers and sink to move packets through these devices (allocated here, once).
    pub(super) fn data_path(&self, mtu: u16) -> DataPath<'_> {
        match self {
            Self::Plain { udp, tun } => DataPath {
                rx: Rx::Plain {
                    udp,
                    tun,
                    tun_buf: vec![0; 65_535],
                    udp_buf: vec![0; 65_535],
                },
                out: Output::Plain {
                    udp,
                    tun,
                    counters: IoCounters::default(),
                },
            },
            Self::Batch { udp, tun } => DataPath {
                rx: Rx::Batch {
                    udp,
                    tun,
                    tun_rx: TunRx::new(mtu),
                    udp_rx: Box::new(UdpRx::new()),
                },
                out: Output::Batch(BatchSink::new(udp, tun)),
            },
        }
    }
}

async fn open_batch(name: &str, mtu: u16, port: u16) -> Result<Devices> {
    let udp = BatchUdp::bind(port)?;
    let mut tun = BatchTun::create(name, mtu)?;
    if tun.offload() {
        if let Err(e) = tun.cap_gso_segments().await {
            // Without the cap a peer announcing a tiny MSS stalls its flows: do without TSO.
            warn!(interface = name, error = %format!("{e:#}"), "TUN offloads turned off");
            drop(tun);
            tun = BatchTun::create_with(name, mtu, false)?;
        }
    }
    // The TUN transmit queue keeps the kernel's default (500): with TSO it holds super-packets,
    // and 1,000 measured no different (no drops at either, 4 streams both ways).
    info!(
        interface = name,
        tun_offload = tun.offload(),
        udp_gso_segments = udp.max_gso_segments(),
        udp_gro_segments = udp.gro_segments(),
        "data path: batched"
    );
    Ok(Devices::Batch { udp, tun })
}

/// What the event loop hands the core: a packet read from the TUN device, or a datagram.
#[derive(Debug, Clone, Copy)]
pub(super) enum Input<'b> {
    /// An inner IP packet from the TUN device.
    Tun(&'b [u8]),
    /// A UDP datagram and its source.
    Datagram(SocketAddr, &'b [u8]),
}

/// What [`DataPath::wait`] read first.
#[derive(Debug, Clone, Copy)]
pub(super) struct Ready(Got);

#[derive(Debug, Clone, Copy)]
enum Got {
    /// Plain: one packet of this length in the TUN buffer.
    Tun(usize),
    /// Plain: one datagram of this length from this source in the UDP buffer.
    Datagram(usize, SocketAddr),
    /// Batch: packets in `tun_rx`.
    TunBatch,
    /// Batch: datagrams in `udp_rx`.
    UdpBatch,
    /// A receive error that is not fatal (logged); nothing to feed.
    Nothing,
}

enum Rx<'a> {
    Plain {
        udp: &'a UdpTransport,
        tun: &'a Tun,
        tun_buf: Vec<u8>,
        udp_buf: Vec<u8>,
    },
    Batch {
        udp: &'a BatchUdp,
        tun: &'a BatchTun,
        tun_rx: TunRx,
        /// Boxed: its receive metadata is an inline array.
        udp_rx: Box<UdpRx>,
    },
}

/// Receive buffers and the core's output, for one pair of [`Devices`].
pub(super) struct DataPath<'a> {
    rx: Rx<'a>,
    out: Output<'a>,
}

impl<'a> DataPath<'a> {
    /// Waits until the TUN device or the UDP socket has something and reads it. Cancel safe:
    /// nothing is lost if the future is dropped. A TUN error is fatal; a UDP error (ICMP errors
    /// from earlier sends surface as `ECONNREFUSED`) is logged and yields nothing to feed.
    pub(super) async fn wait(&mut self) -> Result<Ready> {
        let got = match &mut self.rx {
            Rx::Plain {
                udp,
                tun,
                tun_buf,
                udp_buf,
            } => tokio::select! {
                r = tun.recv(tun_buf) => Got::Tun(r.context("reading the TUN device")?),
                r = udp.recv_from(udp_buf) => match r {
                    Ok((n, src)) => Got::Datagram(n, src),
                    Err(e) => {
                        trace!(error = %e, "UDP receive error");
                        Got::Nothing
                    }
                },
            },
            Rx::Batch {
                udp,
                tun,
                tun_rx,
                udp_rx,
            } => tokio::select! {
                r = tun.recv(tun_rx) => {
                    r.context("reading the TUN device")?;
                    Got::TunBatch
                }
                r = udp.recv(udp_rx) => match r {
                    Ok(_) => Got::UdpBatch,
                    Err(e) => {
                        trace!(error = %e, "UDP receive error");
                        Got::Nothing
                    }
                },
            },
        };
        Ok(Ready(got))
    }

    /// Hands what [`DataPath::wait`] read to `handle`, with the time it was read and the sink
    /// for the core's output; in batch mode also whatever else of the same kind is already
    /// waiting, up to [`READS_PER_WAKEUP`] reads. Flushes the output before it returns. Fails
    /// only on a TUN read error.
    pub(super) fn feed(
        &mut self,
        ready: Ready,
        mut handle: impl FnMut(Input<'_>, Instant, &mut Output<'a>),
    ) -> Result<()> {
        let out = &mut self.out;
        let result = match (&mut self.rx, ready.0) {
            (Rx::Plain { tun_buf, .. }, Got::Tun(n)) => {
                handle(Input::Tun(&tun_buf[..n]), Instant::now(), out);
                Ok(())
            }
            (Rx::Plain { udp_buf, .. }, Got::Datagram(n, src)) => {
                handle(Input::Datagram(src, &udp_buf[..n]), Instant::now(), out);
                Ok(())
            }
            (Rx::Batch { tun, tun_rx, .. }, Got::TunBatch) => {
                let mut result = Ok(());
                for read in 1..=READS_PER_WAKEUP {
                    let now = Instant::now();
                    for packet in tun_rx.packets() {
                        handle(Input::Tun(packet), now, out);
                    }
                    if read == READS_PER_WAKEUP {
                        break;
                    }
                    match tun.try_recv(tun_rx) {
                        Ok(_) => {}
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) => {
                            result = Err(e).context("reading the TUN device");
                            break;
                        }
                    }
                }
                result
            }
            (Rx::Batch { udp, udp_rx, .. }, Got::UdpBatch) => {
                for read in 1..=READS_PER_WAKEUP {
                    let now = Instant::now();
                    for (src, datagram) in udp_rx.datagrams() {
                        handle(Input::Datagram(src, datagram), now, out);
                    }
                    if read == READS_PER_WAKEUP {
                        break;
                    }
                    match udp.try_recv(udp_rx) {
                        Ok(_) => {}
                        Err(e) => {
                            if e.kind() != io::ErrorKind::WouldBlock {
                                trace!(error = %e, "UDP receive error");
                            }
                            break;
                        }
                    }
                }
                Ok(())
            }
            _ => Ok(()),
        };
        out.flush();
        result
    }

    /// Lets `f` write output (timers, control traffic) and flushes it.
    pub(super) fn emit(&mut self, f: impl FnOnce(&mut Output<'a>)) {
        f(&mut self.out);
        self.out.flush();
    }

    /// Packets dropped so far by this data path.
    pub(super) fn counters(&self) -> IoCounters {
        match (&self.out, &self.rx) {
            (Output::Plain { counters, .. }, _) => *counters,
            (Output::Batch(sink), rx) => {
                let stats = sink.stats();
                IoCounters {
                    udp_send_dropped: stats.udp_send_dropped,
                    tun_write_dropped: stats.tun_write_dropped,
                    tun_read_dropped: match rx {
                        Rx::Batch { tun_rx, .. } => tun_rx.dropped(),
                        Rx::Plain { .. } => 0,
                    },
                }
            }
        }
    }

    /// The mode, offloads and batch statistics, for `status`.
    pub(super) fn report(&self) -> Report {
        match (&self.rx, &self.out) {
            (Rx::Batch { udp, tun, .. }, Output::Batch(sink)) => Report {
                mode: Mode::Batch,
                tun_offload: tun.offload(),
                udp_gso_segments: udp.max_gso_segments(),
                udp_gro_segments: udp.gro_segments(),
                batches: Some(*sink.stats()),
            },
            _ => Report {
                mode: Mode::Plain,
                tun_offload: false,
                udp_gso_segments: 1,
                udp_gro_segments: 1,
                batches: None,
            },
        }
    }
}

/// The data path's state, as `status --json` shows it under `datapath`.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Report {
    /// `batch` or `plain`.
    pub mode: Mode,
    /// Whether the TUN device reads and writes TSO/GRO super-packets.
    pub tun_offload: bool,
    /// Datagrams one UDP send may carry (1: no GSO).
    pub udp_gso_segments: usize,
    /// Datagrams one UDP receive may return coalesced (1: no GRO).
    pub udp_gro_segments: usize,
    /// What the batches did (batch mode only).
    pub batches: Option<BatchStats>,
}

/// The core's output: straight to the devices (plain), or gathered until the wake-up ends
/// (batch).
pub(super) enum Output<'a> {
    Plain {
        udp: &'a UdpTransport,
        tun: &'a Tun,
        counters: IoCounters,
    },
    Batch(BatchSink<'a>),
}

impl Output<'_> {
    fn flush(&mut self) {
        if let Self::Batch(sink) = self {
            sink.flush();
        }
    }
}

impl Sink for Output<'_> {
    fn send_to(&mut self, dst: SocketAddr, datagram: &[u8]) {
        match self {
            Self::Plain { udp, counters, .. } => {
                if let Err(e) = udp.try_send_to(datagram, dst) {
                    counters.udp_send_dropped += 1;
                    if e.kind() != io::ErrorKind::WouldBlock {
                        trace!(%dst, error = %e, "send failed");
                    }
                }
            }
            Self::Batch(sink) => sink.send_to(dst, datagram),
        }
    }

    fn write_tun(&mut self, packet: &[u8]) {
        match self {
            Self::Plain { tun, counters, .. } => {
                if let Err(e) = tun.try_send(packet) {
                    counters.tun_write_dropped += 1;
                    if e.kind() != io::ErrorKind::WouldBlock {
                        trace!(error = %e, "TUN write failed");
                    }
                }
            }
            Self::Batch(sink) => sink.write_tun(packet),
        }
    }
}
