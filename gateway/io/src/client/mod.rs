//! The remote-worker client's I/O: what `sitelink-client up` runs.
//!
//! - [`driver`]: the event loop. One UDP socket carries both the control protocol (lease of a
//!   virtual address, [`sitelink_core::control::ControlClient`]) and the WireGuard data plane
//!   (a [`sitelink_core::gateway::Gateway`] with one peer: the gateway), told apart by the first
//!   byte of each datagram.
//! - [`net`]: the leased address and pushed routes on the TUN device, and in full-tunnel mode
//!   the host route that keeps the tunnel's own packets off the tunnel.
//! - [`lease_memory`]: the last lease, kept in `state_dir` so that a restarted client asks for
//!   the same address again.
//! - [`dns`]: pushed DNS servers, handed to `resolvconf` when the config asks for it.

pub mod dns;
pub mod driver;
pub mod lease_memory;
pub mod net;
