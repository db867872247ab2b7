//! [`BatchSink`]: the core's output, gathered per batch and written with as few system calls as
//! offloads allow.

use std::io;
use std::net::SocketAddr;

use serde::Serialize;
use sitelink_core::gateway::Sink;
use tracing::trace;

use super::tun::{BatchTun, TunTx};
use super::udp::{BatchUdp, MAX_GSO_BYTES};

/// Destinations one batch gathers separately before it must flush.
const LANES: usize = 8;
/// Bytes gathered per destination before that destination is flushed: two full GSO sends.
const LANE_BYTES: usize = 2 * (MAX_GSO_BYTES + 1);
/// Datagrams gathered per destination before that destination is flushed.
const LANE_DATAGRAMS: usize = 128;

/// Counters of what [`BatchSink`] sent and dropped, since it was made.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct BatchStats {
    /// Datagrams handed to the kernel.
    pub udp_datagrams: u64,
    /// `sendmsg` calls made for them (one per GSO run, or one per datagram without GSO).
    pub udp_send_calls: u64,
    /// Datagrams dropped because the socket buffer was full or the send failed.
    pub udp_send_dropped: u64,
    /// Packets handed to the TUN device's write path.
    pub tun_packets: u64,
    /// `write` calls made for them (fewer than `tun_packets` when GRO coalesced them).
    pub tun_writes: u64,
    /// Writes that failed.
    pub tun_writes_failed: u64,
    /// Packets dropped: those in failed writes, and any empty or oversize packet.
    pub tun_write_dropped: u64,
}

/// Destination-ordered run of datagrams: `data` holds them back to back, `lens` their lengths.
#[derive(Debug)]
struct Lane {
    dst: SocketAddr,
    data: Vec<u8>,
    lens: Vec<usize>,
}

/// A [`Sink`] that gathers the core's output and writes it in batches.
///
/// Datagrams go into one preallocated lane per destination (up to 8 at once), back to back, so
/// that [`BatchSink::flush`] can hand each run of equal-size datagrams to the kernel as one UDP
/// GSO `sendmsg`. Packets for the TUN device go into preallocated slots that `flush` coalesces
/// per flow (GRO) and writes. Nothing is allocated per packet. A lane or the TUN queue that
/// fills up is flushed on the spot, so a batch may be of any size; call `flush` once the
/// received batch has been fed to the core, and after timers.
///
/// Like the direct sink it replaces, it never waits: what the kernel will not take right away
/// is dropped and counted (TCP inside the tunnel recovers).
#[derive(Debug)]
pub struct BatchSink<'a> {
    udp: &'a BatchUdp,
    tun: &'a BatchTun,
    lanes: Vec<Lane>,
    active: usize,
    tun_tx: TunTx,
    stats: BatchStats,
}

impl<'a> BatchSink<'a> {
    /// Reserves the buffers (about 1 MiB of lanes, 8 MiB of TUN slots, touched only as used).
    pub fn new(udp: &'a BatchUdp, tun: &'a BatchTun) -> Self {
        let unspecified = SocketAddr::from(([0, 0, 0, 0], 0));
        Self {
            udp,
            tun,
            lanes: (0..LANES)
                .map(|_| Lane {
                    dst: unspecified,
                    data: Vec::with_capacity(LANE_BYTES),
                    lens: Vec::with_capacity(LANE_DATAGRAMS),
                })
                .collect(),
            active: 0,
            tun_tx: TunTx::new(),
            stats: BatchStats::default(),
        }
    }

    /// What was sent and dropped so far.
    pub fn stats(&self) -> &BatchStats {
        &self.stats
    }

    /// Whether anything waits for [`BatchSink::flush`].
    pub fn is_empty(&self) -> bool {
        self.active == 0 && self.tun_tx.is_empty()
    }

    /// Sends every gathered datagram and writes every gathered TUN packet.
    pub fn flush(&mut self) {
        self.flush_udp();
        self.flush_tun();
    }

    fn flush_udp(&mut self) {
        for i in 0..self.active {
            self.flush_lane(i);
        }
        self.active = 0;
    }

    fn flush_tun(&mut self) {
        if self.tun_tx.is_empty() {
            return;
        }
        let report = self.tun.send(&mut self.tun_tx);
        self.stats.tun_packets += report.packets as u64;
        self.stats.tun_writes += report.writes as u64;
        self.stats.tun_writes_failed += report.failed_writes as u64;
        self.stats.tun_write_dropped += report.dropped as u64;
    }

    /// Sends lane `i` as runs of equal-size datagrams (the last of a run may be shorter), each
    /// at most one GSO send long, and empties it.
    fn flush_lane(&mut self, i: usize) {
        let Self {
            udp, lanes, stats, ..
        } = self;
        let lane = &mut lanes[i];
        let max_segments = udp.max_gso_segments().max(1);
        let (mut start, mut k) = (0, 0);
        while k < lane.lens.len() {
            let segment = lane.lens[k];
            let (count, bytes) = next_run(&lane.lens[k..], max_segments);
            let end = start + bytes;
            k += count;
            match udp.try_send(lane.dst, &lane.data[start..end], segment) {
                Ok(calls) => {
                    stats.udp_send_calls += calls as u64;
                    stats.udp_datagrams += count as u64;
                }
                Err(e) => {
                    stats.udp_send_dropped += count as u64;
                    if e.kind() != io::ErrorKind::WouldBlock {
                        trace!(dst = %lane.dst, error = %e, datagrams = count, "send failed");
                    }
                }
            }
            start = end;
        }
        lane.data.clear();
        lane.lens.clear();
    }

    fn lane_for(&mut self, dst: SocketAddr) -> usize {
        if let Some(i) = self.lanes[..self.active].iter().position(|l| l.dst == dst) {
            return i;
        }
        if self.active == self.lanes.len() {
            self.flush_udp();
        }
        let i = self.active;
        self.lanes[i].dst = dst;
        self.active += 1;
        i
    }
}

/// The datagrams at the head of `lens` that one GSO send can carry: all of the first one's
/// length, except perhaps a shorter last, at most `max_segments` of them and [`MAX_GSO_BYTES`]
/// bytes (a lone datagram may be longer). Returns their count (at least 1) and total length.
fn next_run(lens: &[usize], max_segments: usize) -> (usize, usize) {
    let Some(&segment) = lens.first() else {
        return (0, 0);
    };
    let (mut count, mut bytes) = (1, segment);
    for &next in &lens[1..] {
        if count == max_segments || next > segment || bytes + next > MAX_GSO_BYTES {
            break;
        }
        count += 1;
        bytes += next;
        if next < segment {
            break;
        }
    }
    (count, bytes)
}

impl Sink for BatchSink<'_> {
    fn send_to(&mut self, dst: SocketAddr, datagram: &[u8]) {
        if datagram.is_empty() {
            return;
        }
        if datagram.len() > LANE_BYTES {
            // Larger than any UDP datagram can be: let the kernel say so.
            if let Err(e) = self.udp.try_send(dst, datagram, datagram.len()) {
                self.stats.udp_send_dropped += 1;
                trace!(%dst, error = %e, "send failed");
            }
            return;
        }
        let i = self.lane_for(dst);
        let lane = &self.lanes[i];
        if lane.lens.len() == LANE_DATAGRAMS || lane.data.len() + datagram.len() > LANE_BYTES {
            self.flush_lane(i);
        }
        let lane = &mut self.lanes[i];
        lane.data.extend_from_slice(datagram);
        lane.lens.push(datagram.len());
    }

    fn write_tun(&mut self, packet: &[u8]) {
        if self.tun_tx.is_full() {
            self.flush_tun();
        }
        if !self.tun_tx.push(packet) {
            self.stats.tun_write_dropped += 1;
        }
    }
}

impl Drop for BatchSink<'_> {
    /// Nothing gathered is lost if the driver forgets the last flush.
    fn drop(&mut self) {
        self.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runs(lens: &[usize], max_segments: usize) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        let mut k = 0;
        while k < lens.len() {
            let run = next_run(&lens[k..], max_segments);
            out.push(run);
            k += run.0;
        }
        out
    }

    #[test]
    fn equal_sizes_fill_a_send_up_to_the_byte_limit() {
        // 1,452-byte datagrams (1,420-byte MTU + 32): 45 fit in 65,487 bytes.
        let lens = vec![1452; 100];
        assert_eq!(
            runs(&lens, 64),
            [(45, 45 * 1452), (45, 45 * 1452), (10, 10 * 1452)]
        );
        assert_eq!(
            runs(&lens[..10], 4),
            [(4, 4 * 1452), (4, 4 * 1452), (2, 2 * 1452)]
        );
        assert_eq!(runs(&lens[..3], 1), [(1, 1452); 3]);
    }

    #[test]
    fn a_shorter_datagram_ends_a_run_and_a_longer_one_starts_the_next() {
        assert_eq!(
            runs(&[100, 100, 60, 100, 200, 200, 32], 64),
            [(3, 260), (1, 100), (3, 432)]
        );
    }

    #[test]
    fn every_run_is_sendable_and_runs_cover_the_input() {
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        for _ in 0..500 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let n = (seed % 200) as usize;
            let lens: Vec<usize> = (0..n)
                .map(|i| {
                    let r = seed.rotate_left(i as u32);
                    if r & 3 == 0 {
                        32 + (r % 1500) as usize
                    } else {
                        1452
                    }
                })
                .collect();
            let max_segments = 1 + (seed % 64) as usize;
            let (mut k, mut total) = (0, 0);
            for (count, bytes) in runs(&lens, max_segments) {
                let run = &lens[k..k + count];
                assert!(count >= 1 && count <= max_segments);
                assert_eq!(bytes, run.iter().sum::<usize>());
                assert!(count == 1 || bytes <= MAX_GSO_BYTES);
                assert!(run[..count - 1].iter().all(|&l| l == run[0]));
                assert!(run[count - 1] <= run[0]);
                k += count;
                total += bytes;
            }
            assert_eq!((k, total), (lens.len(), lens.iter().sum()));
        }
    }
}
