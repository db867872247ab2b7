//! [`LeasePool`]: hands out virtual addresses to remote-worker clients, DHCP-style.
//!
//! Every address is in one of these states, kept in one map:
//!
//! - **free**: never leased, or forgotten;
//! - **offered** to a client, in memory only, for [`PoolSettings::offer_time`] (30 s), so that
//!   two clients discovering at the same time get different addresses;
//! - **leased** to a client until `expires_at`, durable in the [`LeaseStore`];
//! - **expired**: the lease ended (expiry or release) but the record stays, so that the client
//!   gets the address back when it returns. Other clients get such an address only when no free
//!   one is left, the longest-expired first.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;
use std::net::Ipv4Addr;
use std::time::{Duration, SystemTime};

use ipnet::Ipv4Net;
use serde::Serialize;

use super::config::{AddressRange, ClientEntry, PoolSettings, MAX_LEASE_TIME};
use super::space::AddressSpace;
use super::store::{
    from_unix_secs, unix_secs_ceil, unix_secs_floor, LeaseRecord, LeaseStore, StoreError,
};
use super::{AddressAuthority, LeaseInfo, Refusal};
use crate::keys::PublicKey;

/// Why a [`LeasePool`] could not be built from its settings, clients and store.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// `ranges` is empty.
    #[error("the pool has no ranges")]
    NoRanges,
    /// A range has host bits set, e.g. `10.77.100.5/24`.
    #[error("range {range} has host bits set; did you mean {network}?")]
    RangeHostBits {
        /// The range as written.
        range: Ipv4Net,
        /// The prefix without host bits.
        network: Ipv4Net,
    },
    /// Two ranges share addresses.
    #[error("ranges {first} and {second} overlap")]
    OverlappingRanges {
        /// The lower range.
        first: Ipv4Net,
        /// The range that overlaps it.
        second: Ipv4Net,
    },
    /// An exclusion holds addresses that are in no range.
    #[error("exclusion {exclusion} is not inside the pool's ranges")]
    ExclusionOutsideRanges {
        /// The exclusion as written.
        exclusion: AddressRange,
    },
    /// Exclusions, network and broadcast addresses leave nothing to hand out.
    #[error("the pool's ranges leave no address to hand out once exclusions and network/broadcast addresses are removed")]
    NoAssignableAddresses,
    /// The lease time is zero or longer than [`MAX_LEASE_TIME`].
    #[error("lease time of {} s is not between 1 and {} s", .lease_time.as_secs_f64(), MAX_LEASE_TIME.as_secs())]
    InvalidLeaseTime {
        /// The lease time given.
        lease_time: Duration,
    },
    /// The offer time is zero.
    #[error("offer time must be longer than zero")]
    InvalidOfferTime,
    /// T1 and T2 are not `0 < renew < rebind < 100` percent of the lease.
    #[error("renew_after_percent = {renew} and rebind_after_percent = {rebind} must satisfy 0 < renew < rebind < 100")]
    InvalidRenewRebind {
        /// T1 in percent.
        renew: u8,
        /// T2 in percent.
        rebind: u8,
    },
    /// A client has no name.
    #[error("client with public key {key} has an empty name")]
    EmptyClientName {
        /// The client's key.
        key: PublicKey,
    },
    /// Two clients have the same name.
    #[error("two clients are named {name:?}")]
    DuplicateClientName {
        /// The name.
        name: String,
    },
    /// Two clients have the same public key.
    #[error("clients {first:?} and {second:?} have the same public key {key}")]
    DuplicateClientKey {
        /// The key.
        key: PublicKey,
        /// The first client with it.
        first: String,
        /// The second client with it.
        second: String,
    },
    /// A client's fixed address is in none of the pool's ranges.
    #[error("client {client:?}: fixed address {address} is not inside the pool's ranges")]
    FixedAddressOutsideRanges {
        /// The client's name.
        client: String,
        /// The fixed address.
        address: Ipv4Addr,
    },
    /// A client's fixed address is excluded.
    #[error("client {client:?}: fixed address {address} is excluded from the pool")]
    FixedAddressExcluded {
        /// The client's name.
        client: String,
        /// The fixed address.
        address: Ipv4Addr,
    },
    /// A client's fixed address is the network or broadcast address of its range.
    #[error(
        "client {client:?}: fixed address {address} is the network or broadcast address of {range}"
    )]
    FixedAddressNotAssignable {
        /// The client's name.
        client: String,
        /// The fixed address.
        address: Ipv4Addr,
        /// The range it is in.
        range: Ipv4Net,
    },
    /// Two clients have the same fixed address.
    #[error("clients {first:?} and {second:?} have the same fixed address {address}")]
    DuplicateFixedAddress {
        /// The address.
        address: Ipv4Addr,
        /// The first client with it.
        first: String,
        /// The second client with it.
        second: String,
    },
    /// The stored leases could not be loaded.
    #[error("cannot load the stored leases: {0}")]
    Store(#[source] StoreError),
}

/// A lease that ended because its client did not renew it; reported by
/// [`LeasePool::handle_timeout`] so that the gateway can stop routing to the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpiredLease {
    /// The client whose lease ended.
    pub client: PublicKey,
    /// The address it had.
    pub address: Ipv4Addr,
    /// When the lease ended.
    pub expired_at: SystemTime,
}

/// What a [`LeaseEntry`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LeaseState {
    /// Offered, not yet requested; `expires_at` is when the offer lapses. Not durable.
    Offered,
    /// Leased; `expires_at` is when the lease ends unless renewed.
    Active,
    /// The lease ended (expired or released); the client gets this address back if it returns
    /// before someone else needs it.
    Expired,
}

/// One row of [`LeasePool::leases`], for `status` output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LeaseEntry {
    /// The client's name from `[[client]]`, if it has one.
    pub name: Option<String>,
    /// The client's public key.
    pub client: PublicKey,
    /// The address.
    pub address: Ipv4Addr,
    /// When the offer or lease ends (ended), as Unix seconds in JSON.
    #[serde(serialize_with = "serialize_unix_secs")]
    pub expires_at: SystemTime,
    /// When the client last asked for this address, as Unix seconds in JSON.
    #[serde(serialize_with = "serialize_unix_secs")]
    pub last_seen: SystemTime,
    /// Offered, active or expired.
    pub state: LeaseState,
    /// Whether the address is this client's fixed address.
    pub fixed: bool,
}

/// Serializes a time as whole seconds since the Unix epoch.
fn serialize_unix_secs<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(unix_secs_floor(*t))
}

/// Who holds an address, and how.
#[derive(Debug, Clone)]
struct Binding {
    client: PublicKey,
    last_seen: SystemTime,
    state: State,
}

/// The non-free states of an address.
#[derive(Debug, Clone)]
enum State {
    /// Reserved in memory until `until`. `shadowed` is the expired record the offer displaced,
    /// restored if the offer lapses.
    Offered {
        until: SystemTime,
        shadowed: Option<Box<Binding>>,
    },
    /// Leased (durable) until `expires_at`.
    Leased { expires_at: SystemTime },
    /// The lease ended at `expired_at`; the record stays as the client's last address.
    Expired { expired_at: SystemTime },
}

/// A client as logs show it: its name if it has one, else its key.
struct Label<'a>(Option<&'a str>, &'a PublicKey);

impl fmt::Display for Label<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(name) => f.write_str(name),
            None => write!(f, "{}", self.1),
        }
    }
}

/// The lease pool: a sans-IO state machine that implements [`AddressAuthority`].
///
/// It reads no clock: every call takes the wall-clock `now` (wall-clock because leases are
/// persisted and outlive the process). It writes every lease change through its
/// [`LeaseStore`] before returning `Ok`, and rebuilds itself from the store in
/// [`LeasePool::new`], so an acknowledged lease survives `kill -9` and no address is handed out
/// twice after a restart. Offers are not persisted: a client whose offer was lost simply asks
/// again.
///
/// # Driving it
///
/// The control protocol calls the [`AddressAuthority`] methods. Around them, the driver loops:
///
/// 1. arm a timer for [`LeasePool::poll_timeout`];
/// 2. when it fires (or after any call), call [`LeasePool::handle_timeout`] with the current
///    time and stop routing to the clients of the [`ExpiredLease`]s it returns;
/// 3. go back to 1.
///
/// After a restart the first `handle_timeout` also reports the leases that ran out while the
/// gateway was down.
///
/// # Allocation order
///
/// A client with a `fixed_address` always gets that address and no other, and nobody else ever
/// gets it. Any other client gets, in this order: the address it asks for, if free for it; the
/// address it holds or last held, if nobody took it since; the next never-used address; the
/// address whose lease expired longest ago (its client being absent). Only then is it refused
/// with [`Refusal::PoolExhausted`].
///
/// A client holds one address: when a request for another address succeeds, the client's
/// previous lease ends.
#[derive(Debug)]
pub struct LeasePool<S> {
    settings: PoolSettings,
    space: AddressSpace,
    /// `[[client]]` entries by key.
    clients: HashMap<PublicKey, ClientEntry>,
    /// Fixed addresses and the only client that may have each.
    fixed: HashMap<Ipv4Addr, PublicKey>,
    /// Every non-free address. Addresses outside the pool may appear here after a config
    /// change, until their lease ends.
    bindings: BTreeMap<Ipv4Addr, Binding>,
    /// The addresses in `bindings` of each client.
    by_client: HashMap<PublicKey, BTreeSet<Ipv4Addr>>,
    /// Ends of offers and leases, earliest first.
    deadlines: BTreeSet<(SystemTime, Ipv4Addr)>,
    /// Expired bindings, longest-expired first.
    expired: BTreeSet<(SystemTime, Ipv4Addr)>,
    /// Expiries found by an `AddressAuthority` call, not yet returned by `handle_timeout`.
    pending: Vec<ExpiredLease>,
    /// Where the search for a never-used address starts (round robin).
    cursor: Ipv4Addr,
    store: S,
}

impl<S: LeaseStore> LeasePool<S> {
    /// Validates `settings` and `clients`, then rebuilds the pool from `store`.
    ///
    /// Stored leases that no longer fit the config (address outside the ranges, excluded, or
    /// now fixed for another client) are kept until they end, so that no address is in use
    /// twice, but are not renewed.
    pub fn new(
        settings: PoolSettings,
        clients: Vec<ClientEntry>,
        mut store: S,
    ) -> Result<Self, PoolError> {
        let Validated {
            space,
            clients: by_key,
            fixed,
        } = validate(&settings, &clients)?;
        let records = store.load().map_err(PoolError::Store)?;
        let cursor = Ipv4Addr::from(0);
        let mut pool = Self {
            settings,
            space,
            clients: by_key,
            fixed,
            bindings: BTreeMap::new(),
            by_client: HashMap::new(),
            deadlines: BTreeSet::new(),
            expired: BTreeSet::new(),
            pending: Vec::new(),
            cursor,
            store,
        };
        pool.rebuild(records);
        Ok(pool)
    }

    /// Puts the stored records back into memory.
    fn rebuild(&mut self, records: Vec<LeaseRecord>) {
        let count = records.len();
        for rec in records {
            let expires_at = from_unix_secs(rec.expires_at);
            // A release stores `expires_at == last_seen`; a lease always ends after it was seen.
            let state = if rec.expires_at <= rec.last_seen {
                State::Expired {
                    expired_at: expires_at,
                }
            } else {
                State::Leased { expires_at }
            };
            if let Some(existing) = self.bindings.get(&rec.address) {
                if end_of(existing) >= expires_at {
                    continue;
                }
            }
            let binding = Binding {
                client: rec.client,
                last_seen: from_unix_secs(rec.last_seen),
                state,
            };
            let leased = matches!(binding.state, State::Leased { .. });
            self.set(rec.address, Some(binding));
            if !self.available_to(&rec.client, rec.address) {
                if leased {
                    tracing::warn!(
                        lease = %rec.address,
                        client = %self.label(&rec.client),
                        "stored lease no longer fits the pool's config; it is kept until it \
                         ends but will not be renewed"
                    );
                } else {
                    self.forget(rec.address);
                }
            }
        }
        tracing::info!(
            records = count,
            size = self.space.size(),
            "lease pool rebuilt from the store"
        );
    }

    /// The settings the pool was built with.
    pub fn settings(&self) -> &PoolSettings {
        &self.settings
    }

    /// How many addresses the pool may hand out.
    pub fn size(&self) -> u64 {
        self.space.size()
    }

    /// The `[[client]]` name of `client`, if it has one.
    pub fn client_name(&self, client: &PublicKey) -> Option<&str> {
        self.clients.get(client).map(|c| c.name.as_str())
    }

    /// The store the pool writes through.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The store, mutably (for tests that make it fail).
    pub fn store_mut(&mut self) -> &mut S {
        &mut self.store
    }

    /// Gives the store back, dropping the pool's in-memory state (offers included).
    pub fn into_store(self) -> S {
        self.store
    }

    /// Ends the offers and leases whose time has come and returns the leases that ended since the
    /// last call (including ones noticed by [`AddressAuthority`] calls in between).
    #[must_use = "the gateway must stop routing to clients whose lease expired"]
    pub fn handle_timeout(&mut self, now: SystemTime) -> Vec<ExpiredLease> {
        self.expire_due(now);
        std::mem::take(&mut self.pending)
    }

    /// When [`LeasePool::handle_timeout`] should next be called; `None` when no offer or lease is
    /// running. A time in the past means "now".
    #[must_use]
    pub fn poll_timeout(&self) -> Option<SystemTime> {
        let pending = self.pending.iter().map(|e| e.expired_at).min();
        pending.or_else(|| self.deadlines.first().map(|&(t, _)| t))
    }

    /// Every offer, lease and remembered expired lease, by address.
    pub fn leases(&self, now: SystemTime) -> Vec<LeaseEntry> {
        self.bindings
            .iter()
            .map(|(&address, b)| self.entry(address, b, now))
            .collect()
    }

    /// The active lease of `client`, if it has one.
    pub fn lease_of(&self, client: &PublicKey, now: SystemTime) -> Option<LeaseEntry> {
        self.by_client
            .get(client)?
            .iter()
            .filter_map(|a| self.bindings.get(a).map(|b| self.entry(*a, b, now)))
            .find(|e| e.state == LeaseState::Active)
    }

    /// A listing row for `b` at `address`.
    fn entry(&self, address: Ipv4Addr, b: &Binding, now: SystemTime) -> LeaseEntry {
        let (expires_at, state) = match b.state {
            State::Offered { until, .. } => (until, LeaseState::Offered),
            State::Leased { expires_at } if expires_at > now => (expires_at, LeaseState::Active),
            State::Leased { expires_at } => (expires_at, LeaseState::Expired),
            State::Expired { expired_at } => (expired_at, LeaseState::Expired),
        };
        LeaseEntry {
            name: self.client_name(&b.client).map(str::to_owned),
            client: b.client,
            address,
            expires_at,
            last_seen: b.last_seen,
            state,
            fixed: self.fixed.get(&address) == Some(&b.client),
        }
    }

    /// `client` as logs show it.
    fn label<'a>(&'a self, client: &'a PublicKey) -> Label<'a> {
        Label(self.client_name(client), client)
    }

    /// The fixed address of `client`, if it has one.
    fn fixed_of(&self, client: &PublicKey) -> Option<Ipv4Addr> {
        self.clients.get(client).and_then(|c| c.fixed_address)
    }

    /// Whether `client` may have `address` at all: assignable, not fixed for another client,
    /// and the client's fixed address if it has one.
    fn available_to(&self, client: &PublicKey, address: Ipv4Addr) -> bool {
        self.space.is_assignable(address)
            && self.fixed.get(&address).is_none_or(|k| k == client)
            && self.fixed_of(client).is_none_or(|f| f == address)
    }

    /// Replaces the binding of `address`, keeping the indexes in step; returns the old one.
    fn set(&mut self, address: Ipv4Addr, new: Option<Binding>) -> Option<Binding> {
        let old = self.bindings.remove(&address);
        if let Some(old) = &old {
            if let Some(set) = self.by_client.get_mut(&old.client) {
                set.remove(&address);
                if set.is_empty() {
                    self.by_client.remove(&old.client);
                }
            }
            match old.state {
                State::Offered { until: t, .. } | State::Leased { expires_at: t } => {
                    self.deadlines.remove(&(t, address));
                }
                State::Expired { expired_at } => {
                    self.expired.remove(&(expired_at, address));
                }
            }
        }
        if let Some(new) = new {
            self.by_client
                .entry(new.client)
                .or_default()
                .insert(address);
            match new.state {
                State::Offered { until: t, .. } | State::Leased { expires_at: t } => {
                    self.deadlines.insert((t, address));
                }
                State::Expired { expired_at } => {
                    self.expired.insert((expired_at, address));
                }
            }
            self.bindings.insert(address, new);
        }
        old
    }

    /// Drops the record of `address` from the store and memory. If the store fails the record
    /// stays in memory, where it does no harm: it is expired and its address is not available
    /// to its client.
    fn forget(&mut self, address: Ipv4Addr) {
        match self.store.remove(address) {
            Ok(()) => {
                self.set(address, None);
            }
            Err(error) => tracing::warn!(
                lease = %address,
                %error,
                "cannot drop a stale lease record from the store"
            ),
        }
    }

    /// Ends every offer and lease due at `now`; lease ends go to `pending`.
    fn expire_due(&mut self, now: SystemTime) {
        while let Some(&(t, address)) = self.deadlines.first() {
            if t > now {
                break;
            }
            let Some(b) = self.bindings.get(&address).cloned() else {
                self.deadlines.remove(&(t, address));
                continue;
            };
            match b.state {
                State::Offered { shadowed, .. } => {
                    tracing::trace!(lease = %address, client = %self.label(&b.client), "offer lapsed");
                    self.set(address, shadowed.map(|s| *s));
                }
                State::Leased { expires_at } => {
                    tracing::debug!(lease = %address, client = %self.label(&b.client), "lease expired");
                    self.pending.push(ExpiredLease {
                        client: b.client,
                        address,
                        expired_at: expires_at,
                    });
                    self.set(
                        address,
                        Some(Binding {
                            state: State::Expired {
                                expired_at: expires_at,
                            },
                            ..b
                        }),
                    );
                    if !self.available_to(&b.client, address) {
                        self.forget(address);
                    }
                }
                State::Expired { .. } => {
                    self.deadlines.remove(&(t, address));
                }
            }
        }
    }

    /// When a lease starting at `now` ends, in whole seconds so that it survives the store.
    fn lease_end(&self, now: SystemTime) -> SystemTime {
        let end = now.checked_add(self.settings.lease_time).unwrap_or(now);
        from_unix_secs(unix_secs_ceil(end))
    }

    /// What a client is told about `address`.
    fn info(&self, address: Ipv4Addr, expires_at: SystemTime) -> LeaseInfo {
        LeaseInfo {
            address,
            prefix_len: self.space.range_of(address).map_or(32, |r| r.prefix_len()),
            lease_time: self.settings.lease_time,
            renew_after: self.settings.renew_after(),
            rebind_after: self.settings.rebind_after(),
            expires_at,
        }
    }

    /// Picks the address to offer `client`; see the type's doc for the order.
    fn choose(
        &mut self,
        client: &PublicKey,
        requested: Option<Ipv4Addr>,
    ) -> Result<Ipv4Addr, Refusal> {
        let held_by_other =
            |pool: &Self, a: Ipv4Addr| pool.bindings.get(&a).is_some_and(|b| b.client != *client);
        if let Some(f) = self.fixed_of(client) {
            let blocked = self
                .bindings
                .get(&f)
                .is_some_and(|b| b.client != *client && !matches!(b.state, State::Expired { .. }));
            if blocked {
                tracing::warn!(
                    lease = %f,
                    client = %self.label(client),
                    "fixed address is still leased to another client (the config changed); \
                     refusing until that lease ends"
                );
                return Err(Refusal::AddressUnavailable(f));
            }
            return Ok(f);
        }
        if let Some(r) = requested {
            if self.available_to(client, r) && !held_by_other(self, r) {
                return Ok(r);
            }
        }
        let own = self.by_client.get(client).and_then(|set| {
            set.iter()
                .filter(|&&a| self.available_to(client, a))
                .filter_map(|&a| self.bindings.get(&a).map(|b| (a, b)))
                .max_by_key(|(_, b)| match b.state {
                    State::Leased { expires_at } => (2, expires_at),
                    State::Offered { until, .. } => (1, until),
                    State::Expired { expired_at } => (0, expired_at),
                })
                .map(|(a, _)| a)
        });
        if let Some(a) = own {
            return Ok(a);
        }
        let free = self.space.find_free(self.cursor, |a| {
            self.bindings.contains_key(&a) || self.fixed.contains_key(&a)
        });
        if let Some(a) = free {
            self.cursor = Ipv4Addr::from(u32::from(a).wrapping_add(1));
            return Ok(a);
        }
        let reclaim = self
            .expired
            .iter()
            .map(|&(_, a)| a)
            .find(|&a| self.space.is_assignable(a) && !self.fixed.contains_key(&a));
        if let Some(a) = reclaim {
            return Ok(a);
        }
        tracing::warn!(
            client = %self.label(client),
            size = self.space.size(),
            "address pool exhausted: every address is offered or leased to a present client"
        );
        Err(Refusal::PoolExhausted)
    }

    /// Makes `client`'s lease on `address` until `expires_at` durable, then records it.
    fn commit(
        &mut self,
        client: &PublicKey,
        address: Ipv4Addr,
        expires_at: SystemTime,
        now: SystemTime,
    ) -> Result<(), Refusal> {
        let record = LeaseRecord {
            client: *client,
            address,
            expires_at: unix_secs_ceil(expires_at),
            last_seen: unix_secs_floor(now),
        };
        if let Err(error) = self.store.put(&record) {
            tracing::warn!(
                lease = %address,
                client = %self.label(client),
                %error,
                "lease store failed; the lease was not granted"
            );
            return Err(Refusal::Store(error.to_string()));
        }
        self.set(
            address,
            Some(Binding {
                client: *client,
                last_seen: now,
                state: State::Leased { expires_at },
            }),
        );
        Ok(())
    }

    /// Ends everything `client` holds other than `keep`: offers lapse, leases and remembered
    /// addresses are forgotten (a client holds one address).
    fn drop_others(&mut self, client: &PublicKey, keep: Ipv4Addr) {
        let others: Vec<Ipv4Addr> = self
            .by_client
            .get(client)
            .map(|set| set.iter().copied().filter(|&a| a != keep).collect())
            .unwrap_or_default();
        for address in others {
            if let Some(Binding {
                state: State::Offered { shadowed, .. },
                ..
            }) = self.bindings.get(&address).cloned()
            {
                self.set(address, shadowed.map(|s| *s));
            }
            // What is left (a lease or a record the offer displaced) is forgotten if it is ours.
            if self
                .bindings
                .get(&address)
                .is_some_and(|b| b.client == *client)
            {
                match self.store.remove(address) {
                    Ok(()) => {
                        self.set(address, None);
                        tracing::debug!(
                            lease = %address,
                            client = %self.label(client),
                            "previous address given up: the client moved"
                        );
                    }
                    Err(error) => tracing::warn!(
                        lease = %address,
                        client = %self.label(client),
                        %error,
                        "cannot drop the client's previous lease from the store; it stays \
                         reserved until it ends"
                    ),
                }
            }
        }
    }
}

/// What [`LeasePool::new`] derives from valid settings and clients.
struct Validated {
    space: AddressSpace,
    clients: HashMap<PublicKey, ClientEntry>,
    fixed: HashMap<Ipv4Addr, PublicKey>,
}

/// Checks `settings` and `clients` together; see [`PoolSettings::validate`].
fn validate(settings: &PoolSettings, clients: &[ClientEntry]) -> Result<Validated, PoolError> {
    if settings.lease_time.is_zero() || settings.lease_time > MAX_LEASE_TIME {
        return Err(PoolError::InvalidLeaseTime {
            lease_time: settings.lease_time,
        });
    }
    if settings.offer_time.is_zero() {
        return Err(PoolError::InvalidOfferTime);
    }
    let (renew, rebind) = (settings.renew_after_percent, settings.rebind_after_percent);
    if !(0 < renew && renew < rebind && rebind < 100) {
        return Err(PoolError::InvalidRenewRebind { renew, rebind });
    }
    let space = AddressSpace::new(&settings.ranges, &settings.exclude)?;

    let mut by_key: HashMap<PublicKey, ClientEntry> = HashMap::with_capacity(clients.len());
    let mut names: HashSet<&str> = HashSet::with_capacity(clients.len());
    let mut fixed: HashMap<Ipv4Addr, PublicKey> = HashMap::new();
    for client in clients {
        if client.name.is_empty() {
            return Err(PoolError::EmptyClientName {
                key: client.public_key,
            });
        }
        if !names.insert(&client.name) {
            return Err(PoolError::DuplicateClientName {
                name: client.name.clone(),
            });
        }
        if let Some(first) = by_key.get(&client.public_key) {
            return Err(PoolError::DuplicateClientKey {
                key: client.public_key,
                first: first.name.clone(),
                second: client.name.clone(),
            });
        }
        if let Some(address) = client.fixed_address {
            let name = || client.name.clone();
            match space.range_of(address) {
                None => {
                    return Err(PoolError::FixedAddressOutsideRanges {
                        client: name(),
                        address,
                    })
                }
                Some(_) if space.is_excluded(address) => {
                    return Err(PoolError::FixedAddressExcluded {
                        client: name(),
                        address,
                    })
                }
                Some(range) if !space.is_assignable(address) => {
                    return Err(PoolError::FixedAddressNotAssignable {
                        client: name(),
                        address,
                        range,
                    })
                }
                Some(_) => {}
            }
            if let Some(other) = fixed.get(&address) {
                let first = by_key
                    .get(other)
                    .map_or_else(String::new, |c| c.name.clone());
                return Err(PoolError::DuplicateFixedAddress {
                    address,
                    first,
                    second: name(),
                });
            }
            fixed.insert(address, client.public_key);
        }
        by_key.insert(client.public_key, client.clone());
    }

    Ok(Validated {
        space,
        clients: by_key,
        fixed,
    })
}

impl PoolSettings {
    /// Checks these settings together with `clients` exactly as [`LeasePool::new`] does, without
    /// building a pool or touching a store: ranges, exclusions, lease time, T1/T2, and the
    /// clients' names, keys and fixed addresses.
    pub fn validate(&self, clients: &[ClientEntry]) -> Result<(), PoolError> {
        validate(self, clients).map(|_| ())
    }
}

/// When a binding's offer or lease ends (ended).
fn end_of(b: &Binding) -> SystemTime {
    match b.state {
        State::Offered { until: t, .. }
        | State::Leased { expires_at: t }
        | State::Expired { expired_at: t } => t,
    }
}

impl<S: LeaseStore> AddressAuthority for LeasePool<S> {
    fn offer(
        &mut self,
        client: &PublicKey,
        requested: Option<Ipv4Addr>,
        now: SystemTime,
    ) -> Result<LeaseInfo, Refusal> {
        self.expire_due(now);
        let address = self.choose(client, requested)?;
        let until = now.checked_add(self.settings.offer_time).unwrap_or(now);
        let current = self.bindings.get(&address).cloned();
        match current {
            Some(Binding {
                client: holder,
                state: State::Leased { .. },
                ..
            }) if holder == *client => {}
            Some(Binding {
                client: holder,
                state: State::Offered { shadowed, .. },
                ..
            }) if holder == *client => {
                self.set(
                    address,
                    Some(Binding {
                        client: *client,
                        last_seen: now,
                        state: State::Offered { until, shadowed },
                    }),
                );
            }
            previous => {
                if let Some(p) = previous.as_ref().filter(|p| p.client != *client) {
                    tracing::info!(
                        lease = %address,
                        client = %self.label(client),
                        previous = %self.label(&p.client),
                        "taking over an expired lease of another client"
                    );
                }
                self.set(
                    address,
                    Some(Binding {
                        client: *client,
                        last_seen: now,
                        state: State::Offered {
                            until,
                            shadowed: previous.map(Box::new),
                        },
                    }),
                );
            }
        }
        // One outstanding offer per client.
        let offers: Vec<Ipv4Addr> = self
            .by_client
            .get(client)
            .map(|set| set.iter().copied().filter(|&a| a != address).collect())
            .unwrap_or_default();
        for a in offers {
            if let Some(Binding {
                state: State::Offered { shadowed, .. },
                ..
            }) = self.bindings.get(&a).cloned()
            {
                self.set(a, shadowed.map(|s| *s));
            }
        }
        tracing::debug!(lease = %address, client = %self.label(client), "offered");
        Ok(self.info(address, self.lease_end(now)))
    }

    fn request(
        &mut self,
        client: &PublicKey,
        address: Ipv4Addr,
        now: SystemTime,
    ) -> Result<LeaseInfo, Refusal> {
        self.expire_due(now);
        let taken = self
            .bindings
            .get(&address)
            .is_some_and(|b| b.client != *client);
        if taken || !self.available_to(client, address) {
            tracing::debug!(
                lease = %address,
                client = %self.label(client),
                taken,
                "request refused: address not available to this client"
            );
            return Err(Refusal::AddressUnavailable(address));
        }
        let expires_at = self.lease_end(now);
        self.commit(client, address, expires_at, now)?;
        self.drop_others(client, address);
        tracing::debug!(lease = %address, client = %self.label(client), "leased");
        Ok(self.info(address, expires_at))
    }

    fn renew(
        &mut self,
        client: &PublicKey,
        address: Ipv4Addr,
        now: SystemTime,
    ) -> Result<LeaseInfo, Refusal> {
        self.expire_due(now);
        let ours = self
            .bindings
            .get(&address)
            .is_some_and(|b| b.client == *client && !matches!(b.state, State::Offered { .. }));
        if !ours {
            return Err(Refusal::NoSuchLease(address));
        }
        if !self.available_to(client, address) {
            tracing::info!(
                lease = %address,
                client = %self.label(client),
                "renewal refused: the address no longer fits the pool's config"
            );
            return Err(Refusal::AddressUnavailable(address));
        }
        let expires_at = self.lease_end(now);
        self.commit(client, address, expires_at, now)?;
        self.drop_others(client, address);
        tracing::debug!(lease = %address, client = %self.label(client), "renewed");
        Ok(self.info(address, expires_at))
    }

    fn release(
        &mut self,
        client: &PublicKey,
        address: Ipv4Addr,
        now: SystemTime,
    ) -> Result<(), Refusal> {
        self.expire_due(now);
        let Some(b) = self
            .bindings
            .get(&address)
            .filter(|b| b.client == *client)
            .cloned()
        else {
            return Err(Refusal::NoSuchLease(address));
        };
        match b.state {
            State::Offered { shadowed, .. } => {
                self.set(address, shadowed.map(|s| *s));
            }
            State::Expired { .. } => {}
            State::Leased { expires_at } => {
                let ended = from_unix_secs(unix_secs_floor(now)).min(expires_at);
                let record = LeaseRecord {
                    client: *client,
                    address,
                    expires_at: unix_secs_floor(ended),
                    last_seen: unix_secs_floor(now),
                };
                if let Err(error) = self.store.put(&record) {
                    tracing::warn!(
                        lease = %address,
                        client = %self.label(client),
                        %error,
                        "lease store failed; the lease was not released"
                    );
                    return Err(Refusal::Store(error.to_string()));
                }
                self.set(
                    address,
                    Some(Binding {
                        client: *client,
                        last_seen: now,
                        state: State::Expired { expired_at: ended },
                    }),
                );
                tracing::debug!(lease = %address, client = %self.label(client), "released");
                if !self.available_to(client, address) {
                    self.forget(address);
                }
            }
        }
        Ok(())
    }
}
