//! Host package for sitelink's end-to-end tests (`tests/`) and examples (`examples/`).
//!
//! The product lives in the workspace crates: `sitelink-core` (sans-IO protocol logic),
//! `sitelink-io` (sockets, TUN, netlink), and the binaries `sitelink-gateway`,
//! `sitelink-client` and `sitelink-keys`.
