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
//! - **plain**: one packet per system call: the TUN device without offloads and a plain UDP
//!   socket, the path the gateway had before batching. Chosen with `SITELINK_DATAPATH=plain`, or
//!   taken when the batched devices cannot be set up (logged).
//!
//! Either way the devices are non-blocking and belong to no runtime: the data path thread waits
//! for them in its own epoll set ([`crate::poller`], registered with [`Devices::register`]) and,
//! when one is ready, hands what it reads (up to [`READS_PER_WAKEUP`] reads) to the core with
//! [`DataPath::drain`], which flushes the output before it returns.

use std::env::VarError;
use std::io;
use std::net::SocketAddr;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde::Serialize;
use sitelink_core::gateway::Sink;
use tracing::{info, trace, warn};

use super::IoCounters;
use crate::batch::{BatchSink, BatchStats, BatchTun, BatchUdp, TunRx, UdpRx};
use crate::poller::{Poller, TUN, UDP};
use crate::udp::PlainUdp;

/// Environment variable that picks the [`Mode`]: `batch` (default) or `plain`.
pub const DATAPATH_ENV: &str = "SITELINK_DATAPATH";

/// Reads of one kind (TUN reads, or `recvmmsg` calls) fed to the core per turn before the
/// output is flushed and the loop looks at the other side, the timers and the commands.
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
    Plain { udp: PlainUdp, tun: BatchTun },
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
        let udp = PlainUdp::bind(port)?;
        let tun = BatchTun::create_with(name, mtu, false)?;
        info!(
            interface = name,
            "data path: plain, one packet per system call"
        );
        Ok(Self::Plain { udp, tun })
    }

    /// The TUN device's interface index.
    pub(super) fn ifindex(&self, name: &str) -> Result<u32> {
        let (Self::Plain { tun, .. } | Self::Batch { tun, .. }) = self;
        tun.ifindex()
            .with_context(|| format!("cannot read the index of {name}"))
    }

    /// Adds the TUN device and the UDP socket to the data path thread's epoll set.
    pub(super) fn register(&self, poller: &Poller) -> io::Result<()> {
        match self {
            Self::Plain { udp, tun } => {
                poller.register(tun, TUN)?;
                poller.register(udp, UDP)
            }
            Self::Batch { udp, tun } => {
                poller.register(tun, TUN)?;
                poller.register(udp, UDP)
            }
        }
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
                tun,
                tun_rx: TunRx::new(mtu),
                udp_in: UdpIn::Plain {
                    udp,
                    buf: vec![0; 65_535],
                },
                out: Output::Plain {
                    udp,
                    tun,
                    counters: IoCounters::default(),
                    tun_packets: 0,
                },
            },
            Self::Batch { udp, tun } => DataPath {
                tun,
                tun_rx: TunRx::new(mtu),
                udp_in: UdpIn::Batch {
                    udp,
                    rx: Box::new(UdpRx::new()),
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

/// What the data path hands the core: a packet read from the TUN device, or a datagram.
#[derive(Debug, Clone, Copy)]
pub(super) enum Input<'b> {
    /// An inner IP packet from the TUN device.
    Tun(&'b [u8]),
    /// A UDP datagram and its source.
    Datagram(SocketAddr, &'b [u8]),
}

/// Which device [`DataPath::drain`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Side {
    Tun,
    Udp,
}

/// The UDP socket's receive side.
enum UdpIn<'a> {
    Plain {
        udp: &'a PlainUdp,
        buf: Vec<u8>,
    },
    Batch {
        udp: &'a BatchUdp,
        /// Boxed: its receive metadata is an inline array.
        rx: Box<UdpRx>,
    },
}

/// Receive buffers and the core's output, for one pair of [`Devices`].
pub(super) struct DataPath<'a> {
    tun: &'a BatchTun,
    /// TUN reads, split into packets (one per read without offloads).
    tun_rx: TunRx,
    udp_in: UdpIn<'a>,
    out: Output<'a>,
}

impl<'a> DataPath<'a> {
    /// Reads `side` up to [`READS_PER_WAKEUP`] times, handing every packet or datagram to
    /// `handle` with the time it was read and the sink for the core's output, then flushes the
    /// output (also after the first read when it brought one packet only, so that the answer
    /// to a lone packet leaves before the read that finds the device empty). Returns whether
    /// more may be waiting (it stopped at the limit, not at `WouldBlock`): the epoll
    /// registration is edge-triggered, so the caller must come back without waiting. Fails only
    /// on a TUN read error; a UDP receive error (ICMP errors from earlier sends surface as
    /// `ECONNREFUSED`) is logged and the reads go on.
    pub(super) fn drain(
        &mut self,
        side: Side,
        mut handle: impl FnMut(Input<'_>, Instant, &mut Output<'a>),
    ) -> Result<bool> {
        let out = &mut self.out;
        let mut result = Ok(true);
        let mut single = true;
        for i in 0..READS_PER_WAKEUP {
            let first = i == 0;
            // Whether the read brought one packet (or datagram) only.
            let mut lone = false;
            // Ok(true): read something, and more may wait; Ok(false): the device is empty.
            let read = match side {
                Side::Tun => match self.tun.try_recv(&mut self.tun_rx) {
                    Ok(n) => {
                        lone = n == 1;
                        let now = Instant::now();
                        for packet in self.tun_rx.packets() {
                            handle(Input::Tun(packet), now, out);
                        }
                        Ok(true)
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
                    Err(e) => Err(e),
                },
                Side::Udp => {
                    let received = match &mut self.udp_in {
                        UdpIn::Plain { udp, buf } => udp.try_recv_from(buf).map(|(n, src)| {
                            handle(Input::Datagram(src, &buf[..n]), Instant::now(), out);
                            true
                        }),
                        // A turn begins with `recvmsg` for one message: after a sleep that is
                        // usually all there is, and it costs half a cold `recvmmsg`. A lone
                        // datagram keeps the next read to one message too (it mostly finds
                        // the socket empty); a GRO run or a second datagram means traffic,
                        // and the reads go on with `recvmmsg`.
                        UdpIn::Batch { udp, rx } => {
                            let one = single;
                            let got = if one {
                                udp.try_recv_one(rx)
                            } else {
                                udp.try_recv(rx)
                            };
                            got.map(|n| {
                                let now = Instant::now();
                                for (src, datagram) in rx.datagrams() {
                                    handle(Input::Datagram(src, datagram), now, out);
                                }
                                if one {
                                    lone = n == 1;
                                    single = first && lone;
                                    true
                                } else {
                                    // `recvmmsg` stops early only when the queue is empty: no
                                    // need for another call to learn it (a datagram that
                                    // arrives later raises a new epoll event).
                                    rx.message_count() == quinn_udp::BATCH_SIZE
                                }
                            })
                        }
                    };
                    match received {
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
                        Err(e) => {
                            trace!(error = %e, "UDP receive error");
                            Ok(true)
                        }
                        Ok(more) => Ok(more),
                    }
                }
            };
            match read {
                // The answer to a lone first packet goes out before the next read, which after
                // a sleep usually only finds the device empty. (Under load, flushing there
                // would only split a batch: 4-stream throughput 0.88-0.89x.)
                Ok(true) if first && lone => out.flush(),
                Ok(true) => {}
                Ok(false) => {
                    result = Ok(false);
                    break;
                }
                Err(e) => {
                    result = Err(e).context("reading the TUN device");
                    break;
                }
            }
        }
        out.flush();
        result
    }

    /// Lets `f` write output (timers, control traffic) and flushes it.
    pub(super) fn emit(&mut self, f: impl FnOnce(&mut Output<'a>)) {
        f(&mut self.out);
        self.out.flush();
    }

    /// Packets handed to the TUN device's write path so far.
    pub(super) fn tun_packets(&self) -> u64 {
        match &self.out {
            Output::Plain { tun_packets, .. } => *tun_packets,
            Output::Batch(sink) => sink.stats().tun_packets,
        }
    }

    /// Packets dropped so far by this data path.
    pub(super) fn counters(&self) -> IoCounters {
        let tun_read_dropped = self.tun_rx.dropped();
        match &self.out {
            Output::Plain { counters, .. } => IoCounters {
                tun_read_dropped,
                ..*counters
            },
            Output::Batch(sink) => {
                let stats = sink.stats();
                IoCounters {
                    udp_send_dropped: stats.udp_send_dropped,
                    tun_write_dropped: stats.tun_write_dropped,
                    tun_read_dropped,
                }
            }
        }
    }

    /// The mode, offloads and batch statistics, for `status`.
    pub(super) fn report(&self) -> Report {
        match (&self.udp_in, &self.out) {
            (UdpIn::Batch { udp, .. }, Output::Batch(sink)) => Report {
                mode: Mode::Batch,
                tun_offload: self.tun.offload(),
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
        udp: &'a PlainUdp,
        tun: &'a BatchTun,
        counters: IoCounters,
        /// Packets handed to `tun`, written or not.
        tun_packets: u64,
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
            Self::Plain {
                tun,
                counters,
                tun_packets,
                ..
            } => {
                *tun_packets += 1;
                if let Err(e) = tun.send_one(packet) {
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
