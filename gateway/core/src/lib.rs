//! sitelink's sans-IO core.
//!
//! Protocol logic only: no sockets, no TUN, no timers of its own. Time comes in as `now`
//! arguments and output goes out through return values or a [`gateway::Sink`]; the I/O layer
//! (`sitelink-io`) drives it.
//!
//! - [`keys`]: x25519 keys and pre-shared keys, wg-compatible base64, 0600 key files.
//! - [`config`]: the gateway's TOML config, with `file:line` errors.
//! - [`routing`]: longest-prefix match from inner addresses to peers.
//! - [`peer`], [`gateway`]: WireGuard tunnels (boringtun `Tunn`) and the data plane.
//! - [`access`]: remote-worker access — control server + lease pool driving the peer table.
//! - [`ratelimit`]: per-source limits on handshake initiations.
//! - [`counters`]: what the data plane dropped, and why.
//! - [`stun`]: STUN Binding client and RFC 5780 NAT classification (netcheck).
//! - [`traversal`]: rendezvous, hole punching and relay between gateways behind NAT.
#![forbid(unsafe_code)]

pub mod access;
pub mod config;
pub mod control;
pub mod counters;
pub mod export;
pub mod gateway;
pub mod keys;
pub mod lease;
pub mod nat;
pub mod peer;
pub mod ratelimit;
pub mod routing;
pub mod stun;
pub mod traversal;
