//! Leases of virtual addresses to remote-worker clients, the way a DHCP server hands them out.
//!
//! The control protocol ([`crate::control`]) asks an [`AddressAuthority`] for offers and leases;
//! the lease pool implements it. Lease times are wall-clock (`SystemTime`, passed in by the
//! caller) because leases are persisted and must outlive a restart of the gateway.
//!
//! [`LeasePool`] is that implementation: ranges, exclusions, fixed addresses, offers, expiry and
//! reclaiming, written through a [`LeaseStore`] ([`MemoryStore`] here, a redb file in
//! `sitelink-io`). [`PoolSettings`] and [`ClientEntry`] are the validated `[pool]` and
//! `[[client]]` config sections.

use std::net::Ipv4Addr;
use std::time::{Duration, SystemTime};

use crate::keys::PublicKey;

/// An address offered or leased to a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseInfo {
    /// The client's virtual address.
    pub address: Ipv4Addr,
    /// Prefix length of the pool range the address is in (for the client's interface).
    pub prefix_len: u8,
    /// Total lease time.
    pub lease_time: Duration,
    /// When the client should start renewing (T1, default 50% of the lease).
    pub renew_after: Duration,
    /// When the client should start rebinding (T2, default 75% of the lease).
    pub rebind_after: Duration,
    /// When the lease ends unless renewed.
    pub expires_at: SystemTime,
}

/// Why an offer or a lease was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Every address is leased to a present client; nothing can be reclaimed.
    #[error("the address pool is exhausted")]
    PoolExhausted,
    /// The address asked for is not in the pool, is excluded, or belongs to someone else.
    #[error("address {0} is not available to this client")]
    AddressUnavailable(Ipv4Addr),
    /// The client holds no lease on that address (renew/release of an unknown lease).
    #[error("no lease on {0} for this client")]
    NoSuchLease(Ipv4Addr),
    /// The lease store failed; nothing was promised.
    #[error("lease store failure: {0}")]
    Store(String),
}

/// Who decides which client gets which address. Every method that changes a lease makes the
/// change durable before it returns `Ok`, so an acknowledged lease survives a crash.
pub trait AddressAuthority {
    /// Proposes an address for `client` (its previous one, its fixed one, or the one it asks
    /// for if free). An offer reserves nothing durable.
    fn offer(
        &mut self,
        client: &PublicKey,
        requested: Option<Ipv4Addr>,
        now: SystemTime,
    ) -> Result<LeaseInfo, Refusal>;
    /// Binds `address` to `client` (after an offer, or on a client's reboot with its old address).
    fn request(
        &mut self,
        client: &PublicKey,
        address: Ipv4Addr,
        now: SystemTime,
    ) -> Result<LeaseInfo, Refusal>;
    /// Extends the client's lease on `address`.
    fn renew(
        &mut self,
        client: &PublicKey,
        address: Ipv4Addr,
        now: SystemTime,
    ) -> Result<LeaseInfo, Refusal>;
    /// Ends the client's lease on `address` now.
    fn release(
        &mut self,
        client: &PublicKey,
        address: Ipv4Addr,
        now: SystemTime,
    ) -> Result<(), Refusal>;
}

mod config;
mod pool;
mod space;
mod store;
#[cfg(test)]
mod tests;

pub use config::{
    AddressRange, AddressRangeError, ClientEntry, PoolSettings, DEFAULT_OFFER_TIME,
    DEFAULT_REBIND_AFTER_PERCENT, DEFAULT_RENEW_AFTER_PERCENT, MAX_LEASE_TIME,
};
pub use pool::{ExpiredLease, LeaseEntry, LeasePool, LeaseState, PoolError};
pub use store::{LeaseRecord, LeaseStore, MemoryStore, StoreError};
