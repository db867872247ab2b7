//! The TUN device with offloads, through `tun-rs`: TSO/USO super-packets in, GRO-coalesced
//! super-packets out.
//!
//! With offloads on (`IFF_VNET_HDR` and `TUNSETOFFLOAD` with `TUN_F_CSUM | TSO4 | TSO6`, plus
//! `USO4 | USO6` on Linux 6.2+), every read and write carries a 10-byte `virtio_net_hdr`:
//! - a read returns up to 64 KiB of one TCP (or UDP) flow, which [`BatchTun::try_recv`] splits into
//!   MTU-sized IP packets with complete checksums (the kernel leaves them partial);
//! - [`BatchTun::send`] coalesces consecutive segments of one TCP flow (`batch::gro`, as the
//!   kernel's GRO does on a NIC) and writes each coalesced packet with one `write`.
//!
//! Without offloads (old kernel, or asked for), the same calls move one packet per system call.

use std::io;
use std::os::fd::{AsRawFd, RawFd};

use anyhow::{anyhow, Context, Result};
use rtnetlink::packet_route::link::LinkAttribute;
use rtnetlink::LinkUnspec;
use tracing::{debug, info, trace, warn};
use tun_rs::{DeviceBuilder, SyncDevice, IDEAL_BATCH_SIZE, VIRTIO_NET_HDR_LEN};

use super::gro::{TcpGro, VNET_HDR_LEN};

/// Packets one read can be split into. A 64 KiB super-packet of a 1,420-byte MTU is 47
/// segments; a peer that announces a tiny MSS can make more, and such a read is dropped (as
/// wireguard-go does) unless the device's `gso_max_segs` is lowered to this.
pub const RX_SEGMENTS: usize = IDEAL_BATCH_SIZE;
/// Bytes a read may return: the virtio header and the largest (64 KiB) super-packet.
const RX_RAW_BYTES: usize = VIRTIO_NET_HDR_LEN + 65_535;
/// Packets queued for one [`BatchTun::send`].
pub const TX_SLOTS: usize = IDEAL_BATCH_SIZE;
/// Capacity of each write slot: the virtio header and the largest coalesced packet.
const TX_SLOT_BYTES: usize = VNET_HDR_LEN + 65_535;

/// A TUN device that reads and writes batches. Non-blocking and registered with no runtime: the
/// data path thread waits for it in its own epoll set ([`crate::poller`]).
pub struct BatchTun {
    dev: SyncDevice,
    name: String,
    mtu: u16,
    offload: bool,
}

impl std::fmt::Debug for BatchTun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchTun")
            .field("name", &self.name)
            .field("mtu", &self.mtu)
            .field("offload", &self.offload)
            .field("udp_offload", &self.udp_offload())
            .finish()
    }
}

impl BatchTun {
    /// Creates the TUN device `name` with `mtu`, up, with offloads when the kernel has them
    /// (otherwise plain, logged). Addresses and routes are left to [`crate::netlink`].
    ///
    /// The device is not persistent: it disappears when the process exits.
    pub fn create(name: &str, mtu: u16) -> Result<Self> {
        match Self::create_with(name, mtu, true) {
            Ok(tun) => Ok(tun),
            Err(e) => {
                warn!(interface = name, error = %format!("{e:#}"),
                    "TUN offloads unavailable; one packet per system call");
                Self::create_with(name, mtu, false)
            }
        }
    }

    /// Creates the device with offloads on or off, without falling back.
    pub fn create_with(name: &str, mtu: u16, offload: bool) -> Result<Self> {
        let dev = DeviceBuilder::new()
            .name(name)
            .mtu(mtu)
            .offload(offload)
            .build_sync()
            .and_then(|dev| dev.set_nonblocking(true).map(|()| dev))
            .with_context(|| {
                format!(
                    "cannot create TUN device {name:?}{} (needs root or CAP_NET_ADMIN and \
                     /dev/net/tun; is another process using a device of that name?)",
                    if offload { " with offloads" } else { "" }
                )
            })?;
        let offload = dev.tcp_gso();
        let tun = Self {
            name: dev.name().unwrap_or_else(|_| name.to_owned()),
            dev,
            mtu,
            offload,
        };
        info!(interface = %tun.name, mtu, offload, udp_offload = tun.udp_offload(), "TUN device up");
        Ok(tun)
    }

    /// The interface name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The interface index, for netlink.
    pub fn ifindex(&self) -> io::Result<u32> {
        self.dev.if_index()
    }

    /// The MTU the device was created with.
    pub fn mtu(&self) -> u16 {
        self.mtu
    }

    /// Whether reads and writes carry virtio headers (TCP segmentation offload, checksum
    /// offload, GRO on write).
    pub fn offload(&self) -> bool {
        self.offload
    }

    /// Whether UDP segmentation offload is on too (Linux 6.2+).
    pub fn udp_offload(&self) -> bool {
        self.offload && self.dev.udp_gso()
    }

    /// Lowers the device's `gso_max_segs` to [`RX_SEGMENTS`], through rtnetlink, so that the
    /// kernel segments in software any super-packet with more segments than one read can be
    /// split into, instead of handing it over to be dropped. Without it, a TCP flow with a small
    /// MSS (a peer announcing 200 bytes gives 300+ segments per 64 KiB) loses every read and
    /// stalls. Call it once after [`BatchTun::create`] when [`BatchTun::offload`] is on.
    pub async fn cap_gso_segments(&self) -> Result<()> {
        let ifindex = self
            .ifindex()
            .with_context(|| format!("cannot read the index of {}", self.name))?;
        let (connection, handle, _) =
            rtnetlink::new_connection().context("cannot open a netlink socket")?;
        let connection = tokio::spawn(connection);
        let segments = u32::try_from(RX_SEGMENTS).unwrap_or(u32::MAX);
        let msg = LinkUnspec::new_with_index(ifindex)
            .append_extra_attribute(LinkAttribute::GsoMaxSegs(segments))
            .build();
        let result = handle.link().set(msg).execute().await;
        connection.abort();
        result.map_err(|e| anyhow!("cannot set gso_max_segs {segments} on {}: {e}", self.name))?;
        debug!(interface = %self.name, segments, "gso_max_segs capped");
        Ok(())
    }

    /// Reads once and splits what was read into `rx`, replacing what it held; returns the
    /// number of packets (at least 1). `WouldBlock` when nothing waits. A read that cannot be
    /// split (bad virtio header, more segments than [`RX_SEGMENTS`]) is counted in
    /// [`TunRx::dropped`] and the next one is tried. Any other error is the device's.
    pub fn try_recv(&self, rx: &mut TunRx) -> io::Result<usize> {
        rx.count = 0;
        loop {
            match self
                .dev
                .recv_multiple(&mut rx.raw, &mut rx.bufs, &mut rx.sizes, 0)
            {
                Ok(0) => continue,
                Ok(n) => {
                    rx.count = n;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Err(e),
                // An error from the read itself carries an errno; the splitter's do not.
                Err(e) if e.raw_os_error().is_some() => return Err(e),
                Err(e) => {
                    rx.dropped += 1;
                    debug!(interface = %self.name, error = %e, "TUN read could not be split; dropped");
                }
            }
        }
    }

    /// Writes every packet queued in `tx` and empties it: with offloads, each run of in-order
    /// segments of a TCP flow goes as one coalesced write (`batch::gro`); otherwise one write
    /// per packet. Never waits (a TUN write does not block: it succeeds or fails); a failed
    /// write is counted, not returned.
    pub fn send(&self, tx: &mut TunTx) -> TunSendReport {
        let n = tx.len;
        let mut report = TunSendReport {
            packets: n,
            ..TunSendReport::default()
        };
        if n == 0 {
            return report;
        }
        let (slots, counts) = (&mut tx.slots[..n], &mut tx.counts[..n]);
        let skip = if self.offload {
            tx.gro.coalesce(slots, counts);
            0
        } else {
            counts.fill(1);
            VNET_HDR_LEN
        };
        for (slot, &count) in slots.iter().zip(counts.iter()) {
            if count == 0 {
                continue;
            }
            report.writes += 1;
            match self.write(&slot[skip..]) {
                Ok(written) => report.bytes += written,
                Err(e) => {
                    report.failed_writes += 1;
                    report.dropped += usize::from(count);
                    trace!(interface = %self.name, error = %e, packets = count, "TUN write failed");
                }
            }
        }
        for slot in slots {
            slot.clear();
        }
        tx.len = 0;
        report
    }

    /// Writes one IP packet with one `write`, on a device without offloads (with them, a write
    /// needs a virtio header: use [`BatchTun::send`]).
    pub fn send_one(&self, packet: &[u8]) -> io::Result<usize> {
        if self.offload {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a device with offloads takes writes through BatchTun::send",
            ));
        }
        self.write(packet)
    }

    /// One `write(2)` on the device's non-blocking descriptor.
    fn write(&self, buf: &[u8]) -> io::Result<usize> {
        loop {
            // SAFETY: the descriptor is owned by `self.dev` and open for as long as `self`
            // lives; `buf` is valid for reads of `buf.len()` bytes.
            let n = unsafe { libc::write(self.dev.as_raw_fd(), buf.as_ptr().cast(), buf.len()) };
            if let Ok(n) = usize::try_from(n) {
                return Ok(n);
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}

impl AsRawFd for BatchTun {
    fn as_raw_fd(&self) -> RawFd {
        self.dev.as_raw_fd()
    }
}

/// What one [`BatchTun::send`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TunSendReport {
    /// Packets handed in.
    pub packets: usize,
    /// `write` calls made (fewer than `packets` when GRO coalesced them).
    pub writes: usize,
    /// Writes that failed.
    pub failed_writes: usize,
    /// Packets in the failed writes.
    pub dropped: usize,
    /// Bytes the kernel took, virtio headers included.
    pub bytes: usize,
}

/// Read buffers for [`BatchTun::try_recv`], allocated once: one raw 64 KiB buffer for what the
/// kernel hands over and [`RX_SEGMENTS`] MTU-sized buffers for the packets split from it.
pub struct TunRx {
    raw: Vec<u8>,
    bufs: Vec<Vec<u8>>,
    sizes: Vec<usize>,
    count: usize,
    dropped: u64,
}

impl std::fmt::Debug for TunRx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TunRx")
            .field("count", &self.count)
            .field("dropped", &self.dropped)
            .finish_non_exhaustive()
    }
}

impl TunRx {
    /// Buffers for a device of `mtu`.
    pub fn new(mtu: u16) -> Self {
        Self {
            raw: vec![0; RX_RAW_BYTES],
            bufs: vec![vec![0; usize::from(mtu)]; RX_SEGMENTS],
            sizes: vec![0; RX_SEGMENTS],
            count: 0,
            dropped: 0,
        }
    }

    /// Packets from the last read.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether the last read produced no packet.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Reads dropped so far because they could not be split.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// The IP packets from the last read, in order.
    pub fn packets(&self) -> impl Iterator<Item = &[u8]> + '_ {
        self.bufs[..self.count]
            .iter()
            .zip(&self.sizes)
            .map(|(buf, &size)| &buf[..size])
    }
}

/// Packets queued for [`BatchTun::send`]: [`TX_SLOTS`] slots of 64 KiB capacity (GRO coalesces
/// in place into them), reserved once; a slot's pages are touched only as far as packets fill
/// it.
pub struct TunTx {
    slots: Vec<Vec<u8>>,
    counts: Vec<u16>,
    len: usize,
    gro: TcpGro,
}

impl std::fmt::Debug for TunTx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TunTx")
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

impl Default for TunTx {
    fn default() -> Self {
        Self::new()
    }
}

impl TunTx {
    /// Reserves the slots.
    pub fn new() -> Self {
        Self {
            slots: (0..TX_SLOTS)
                .map(|_| Vec::with_capacity(TX_SLOT_BYTES))
                .collect(),
            counts: vec![0; TX_SLOTS],
            len: 0,
            gro: TcpGro::new(TX_SLOTS),
        }
    }

    /// Packets queued.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether another packet would not fit: send first.
    pub fn is_full(&self) -> bool {
        self.len == self.slots.len()
    }

    /// Queues a copy of `packet`. Returns `false`, queuing nothing, when full or when `packet` is
    /// empty or longer than 65,535 bytes.
    pub fn push(&mut self, packet: &[u8]) -> bool {
        if self.is_full() || packet.is_empty() || packet.len() > 65_535 {
            return false;
        }
        let slot = &mut self.slots[self.len];
        slot.clear();
        slot.resize(VNET_HDR_LEN, 0);
        slot.extend_from_slice(packet);
        self.len += 1;
        true
    }
}
