//! sitelink's I/O layer: the thin drivers around the sans-IO core.
//!
//! - [`tun`]: the TUN device.
//! - [`batch`]: batched, offloading TUN and UDP I/O (GSO/GRO) and the sink that feeds them.
//! - [`netlink`]: addresses and routes through rtnetlink (no shelling out to `ip`).
//! - [`udp`]: the tunnel's UDP socket.
//! - [`control`]: the root-only unix socket that `status` talks to.
//! - [`driver`]: the event loop that feeds packets, datagrams and timers to the core.
//! - [`poller`]: the data path thread's epoll set (TUN, UDP, a waker).
//! - [`netcheck`]: public endpoint, NAT type, hairpinning and UPnP, for `netcheck`.
//! - [`upnp`]: UPnP IGD port mapping of the listen port.
//! - [`nat_routing`]: nftables marks and policy routing that steer packets into the NAT's TUN.
//! - [`nat_router`]: the NAT engine as a standalone router between two interfaces.
//! - [`client`]: the remote-worker client's event loop, routes, DNS and lease memory.

pub mod batch;
pub mod cli;
pub mod client;
pub mod control;
pub mod driver;
pub mod lease_store;
pub mod nat_router;
pub mod nat_routing;
pub mod netcheck;
pub mod netlink;
pub mod poller;
pub mod tun;
pub mod udp;
pub mod upnp;
