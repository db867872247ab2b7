//! Batched, offloading I/O: many packets per system call between the TUN device, the UDP socket
//! and the sans-IO core.
//!
//! - [`BatchTun`]: the TUN device with `IFF_VNET_HDR` offloads. One read returns up to 64 KiB of
//!   one flow (a TSO super-packet), split into MTU-sized packets in a [`TunRx`]; writes coalesce
//!   the in-order segments of a TCP flow (GRO, in `gro`) into one write each.
//! - [`BatchUdp`]: the UDP socket through `quinn-udp`. One `recvmmsg` returns up to 32 messages,
//!   each possibly many GRO-coalesced datagrams, in a [`UdpRx`]; one `sendmsg` sends a run of
//!   equal-size datagrams to one destination with UDP GSO.
//! - [`BatchSink`]: a [`sitelink_core::gateway::Sink`] that gathers the core's output for a
//!   whole batch and writes it with the two above on [`BatchSink::flush`].
//!
//! All buffers are allocated when these are made; nothing is allocated per packet.
//!
//! # Driving it
//!
//! ```ignore
//! let tun = BatchTun::create(&iface.name, iface.mtu)?;      // falls back to plain, logged
//! let udp = BatchUdp::bind(iface.listen_port)?;
//! if tun.offload() {
//!     tun.cap_gso_segments().await?;                        // else a tiny MSS stalls flows
//! }
//! let ifindex = tun.ifindex()?;                             // for netlink, as before
//! let (mut tun_rx, mut udp_rx) = (TunRx::new(tun.mtu()), UdpRx::new());
//! let mut sink = BatchSink::new(&udp, &tun);
//! loop {
//!     tokio::select! {
//!         r = tun.recv(&mut tun_rx) => {                    // cancel safe
//!             r.context("reading the TUN device")?;
//!             let now = Instant::now();
//!             for read in 1.. {
//!                 for packet in tun_rx.packets() {
//!                     gateway.handle_tun_packet(packet, now, &mut sink);
//!                 }
//!                 // Bounded (e.g. 8 reads) so that UDP and timers get a turn; stop when drained.
//!                 if read == READS_PER_WAKEUP || tun.try_recv(&mut tun_rx).is_err() {
//!                     break;
//!                 }
//!             }
//!             sink.flush();
//!         }
//!         r = udp.recv(&mut udp_rx) => {                    // cancel safe
//!             if let Err(e) = r { trace!(error = %e, "UDP receive error"); continue }
//!             let now = Instant::now();
//!             for (src, datagram) in udp_rx.datagrams() {
//!                 gateway.handle_datagram(src, datagram, now, &mut sink);
//!             }
//!             sink.flush();
//!         }
//!         () = tokio::time::sleep_until(deadline) => {
//!             gateway.handle_timeout(Instant::now(), &mut sink);
//!             sink.flush();
//!         }
//!         // control requests: report sink.stats() beside the core's counters
//!     }
//! }
//! ```
//!
//! Flush after every branch that fed the core, before waiting again: the sink never holds
//! output across a wait. It flushes by itself when a destination's lane or the TUN queue fills.

mod gro;
pub mod sink;
pub mod tun;
pub mod udp;

pub use sink::{BatchSink, BatchStats};

/// Counts allocations per thread in this crate's unit tests, for the tests that check the
/// batch path allocates nothing per packet (the same allocator as `sitelink-core`'s
/// `tests/no_alloc.rs`).
#[cfg(test)]
#[path = "../../../core/tests/support/counting_alloc.rs"]
mod counting_alloc;

#[cfg(test)]
#[global_allocator]
static COUNTING: counting_alloc::Counting = counting_alloc::Counting;
pub use tun::{BatchTun, TunRx, TunSendReport, TunTx};
pub use udp::{BatchUdp, UdpRx};
