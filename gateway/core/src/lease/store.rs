//! Durable lease records and the [`LeaseStore`] trait the pool writes them through.
//!
//! The pool keeps at most one record per address. A record whose `expires_at` has passed is not
//! garbage: it is the pool's memory of which client last had the address, so that the client
//! gets it back when it returns.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::keys::{PublicKey, KEY_LEN};

/// Largest timestamp a record may hold (about the year 36 800): larger values mean corruption.
const MAX_UNIX_SECS: u64 = 1 << 40;

/// The version byte that starts every encoded record.
const RECORD_VERSION: u8 = 1;

/// One lease as stored: who has (or last had) which address, until when.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LeaseRecord {
    /// The client's static public key.
    pub client: PublicKey,
    /// The leased address; the store's key.
    pub address: Ipv4Addr,
    /// When the lease ends (or ended), in seconds since the Unix epoch.
    pub expires_at: u64,
    /// When the client last requested, renewed or released the lease, in seconds since the Unix
    /// epoch.
    pub last_seen: u64,
}

impl LeaseRecord {
    /// Length of [`LeaseRecord::to_bytes`]'s output.
    pub const ENCODED_LEN: usize = 1 + 4 + KEY_LEN + 8 + 8;

    /// A compact, fixed-size encoding: a version byte, the address, the key, then both times as
    /// big-endian `u64`s.
    pub fn to_bytes(&self) -> [u8; Self::ENCODED_LEN] {
        let mut out = [0u8; Self::ENCODED_LEN];
        let mut at = 0;
        let mut put = |bytes: &[u8]| {
            out[at..at + bytes.len()].copy_from_slice(bytes);
            at += bytes.len();
        };
        put(&[RECORD_VERSION]);
        put(&self.address.octets());
        put(self.client.as_bytes());
        put(&self.expires_at.to_be_bytes());
        put(&self.last_seen.to_be_bytes());
        out
    }

    /// Decodes [`LeaseRecord::to_bytes`]'s output.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, StoreError> {
        let corrupt = |reason: String| StoreError::CorruptRecord { reason };
        let bytes: &[u8; Self::ENCODED_LEN] = bytes.try_into().map_err(|_| {
            corrupt(format!(
                "record is {} bytes, expected {}",
                bytes.len(),
                Self::ENCODED_LEN
            ))
        })?;
        let (version, rest) = bytes.split_at(1);
        if version[0] != RECORD_VERSION {
            return Err(corrupt(format!("unknown record version {}", version[0])));
        }
        let (address, rest) = rest.split_at(4);
        let (key, rest) = rest.split_at(KEY_LEN);
        let (expires_at, last_seen) = rest.split_at(8);
        let u64_of = |b: &[u8]| {
            let mut a = [0u8; 8];
            a.copy_from_slice(b);
            u64::from_be_bytes(a)
        };
        let mut octets = [0u8; 4];
        octets.copy_from_slice(address);
        let mut key_bytes = [0u8; KEY_LEN];
        key_bytes.copy_from_slice(key);
        let record = Self {
            client: PublicKey::from_bytes(key_bytes),
            address: Ipv4Addr::from(octets),
            expires_at: u64_of(expires_at),
            last_seen: u64_of(last_seen),
        };
        if record.expires_at > MAX_UNIX_SECS || record.last_seen > MAX_UNIX_SECS {
            return Err(corrupt(format!(
                "record for {} has an impossible timestamp",
                record.address
            )));
        }
        Ok(record)
    }
}

/// `t` in whole seconds since the Unix epoch, rounded up (a lease never ends earlier after a
/// round trip through the store); times before the epoch become 0.
pub(crate) fn unix_secs_ceil(t: SystemTime) -> u64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs().saturating_add(u64::from(d.subsec_nanos() > 0)),
        Err(_) => 0,
    }
}

/// `t` in whole seconds since the Unix epoch, rounded down; times before the epoch become 0.
pub(crate) fn unix_secs_floor(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The `SystemTime` `secs` seconds after the Unix epoch.
pub(crate) fn from_unix_secs(secs: u64) -> SystemTime {
    let secs = secs.min(MAX_UNIX_SECS);
    UNIX_EPOCH
        .checked_add(Duration::from_secs(secs))
        .unwrap_or(UNIX_EPOCH)
}

/// Why the lease store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A stored record could not be decoded; the store is damaged or from a newer version.
    #[error("corrupt lease record: {reason}")]
    CorruptRecord {
        /// What is wrong with it.
        reason: String,
    },
    /// The backend (file, database) failed to read or write.
    #[error("{store}: {source}")]
    Backend {
        /// Which store failed, e.g. its file name.
        store: String,
        /// The backend's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Where the pool keeps leases so that they survive a restart, `kill -9` included.
///
/// Every call must be durable when it returns `Ok`: the pool acknowledges a lease to a client
/// only after `put` has returned. Records are keyed by address; `put` replaces any record for
/// the same address.
pub trait LeaseStore {
    /// Every stored record, in any order. Called once, when the pool starts.
    fn load(&mut self) -> Result<Vec<LeaseRecord>, StoreError>;
    /// Stores `rec`, replacing the record for `rec.address` if there is one.
    fn put(&mut self, rec: &LeaseRecord) -> Result<(), StoreError>;
    /// Forgets the record for `addr`; removing a missing record is not an error.
    fn remove(&mut self, addr: Ipv4Addr) -> Result<(), StoreError>;
}

impl<S: LeaseStore + ?Sized> LeaseStore for &mut S {
    fn load(&mut self) -> Result<Vec<LeaseRecord>, StoreError> {
        (**self).load()
    }

    fn put(&mut self, rec: &LeaseRecord) -> Result<(), StoreError> {
        (**self).put(rec)
    }

    fn remove(&mut self, addr: Ipv4Addr) -> Result<(), StoreError> {
        (**self).remove(addr)
    }
}

impl<S: LeaseStore + ?Sized> LeaseStore for Box<S> {
    fn load(&mut self) -> Result<Vec<LeaseRecord>, StoreError> {
        (**self).load()
    }

    fn put(&mut self, rec: &LeaseRecord) -> Result<(), StoreError> {
        (**self).put(rec)
    }

    fn remove(&mut self, addr: Ipv4Addr) -> Result<(), StoreError> {
        (**self).remove(addr)
    }
}

/// A [`LeaseStore`] in memory, for tests and for gateways that need no persistence.
///
/// It can be told to fail, to test what the pool promises when the store is down. Pass it as
/// `&mut MemoryStore` to keep it after the pool is dropped (a simulated crash).
#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    records: BTreeMap<Ipv4Addr, LeaseRecord>,
    failing: bool,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes every later `load`, `put` and `remove` fail (`true`) or work again (`false`).
    pub fn set_failing(&mut self, failing: bool) {
        self.failing = failing;
    }

    /// The stored records, by address.
    pub fn records(&self) -> &BTreeMap<Ipv4Addr, LeaseRecord> {
        &self.records
    }

    /// The error a failing store returns.
    fn failure(&self) -> Result<(), StoreError> {
        if self.failing {
            return Err(StoreError::Backend {
                store: "memory store".to_owned(),
                source: "injected failure".into(),
            });
        }
        Ok(())
    }
}

impl LeaseStore for MemoryStore {
    fn load(&mut self) -> Result<Vec<LeaseRecord>, StoreError> {
        self.failure()?;
        Ok(self.records.values().copied().collect())
    }

    fn put(&mut self, rec: &LeaseRecord) -> Result<(), StoreError> {
        self.failure()?;
        self.records.insert(rec.address, *rec);
        Ok(())
    }

    fn remove(&mut self, addr: Ipv4Addr) -> Result<(), StoreError> {
        self.failure()?;
        self.records.remove(&addr);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> LeaseRecord {
        LeaseRecord {
            client: PublicKey::from_bytes([7; KEY_LEN]),
            address: Ipv4Addr::new(10, 77, 100, 50),
            expires_at: 1_800_000_000,
            last_seen: 1_799_996_400,
        }
    }

    #[test]
    fn record_round_trips() {
        let rec = record();
        let bytes = rec.to_bytes();
        assert_eq!(bytes.len(), LeaseRecord::ENCODED_LEN);
        assert_eq!(LeaseRecord::from_bytes(&bytes).expect("decodes"), rec);
    }

    #[test]
    fn damaged_records_are_errors() {
        let bytes = record().to_bytes();
        assert!(LeaseRecord::from_bytes(&bytes[..10]).is_err());
        let mut wrong_version = bytes;
        wrong_version[0] = 9;
        assert!(LeaseRecord::from_bytes(&wrong_version).is_err());
        let mut huge = bytes;
        huge[37] = 0xff;
        assert!(LeaseRecord::from_bytes(&huge).is_err());
    }

    #[test]
    fn times_round_up_when_stored() {
        let t = UNIX_EPOCH + Duration::from_millis(1500);
        assert_eq!(unix_secs_ceil(t), 2);
        assert_eq!(unix_secs_floor(t), 1);
        assert_eq!(unix_secs_ceil(UNIX_EPOCH + Duration::from_secs(3)), 3);
        assert_eq!(from_unix_secs(2), UNIX_EPOCH + Duration::from_secs(2));
    }

    #[test]
    fn memory_store_replaces_by_address_and_can_fail() {
        let mut store = MemoryStore::new();
        let mut rec = record();
        store.put(&rec).expect("put");
        rec.expires_at += 60;
        store.put(&rec).expect("put again");
        assert_eq!(store.load().expect("load"), vec![rec]);
        store.set_failing(true);
        assert!(store.put(&rec).is_err());
        assert!(store.remove(rec.address).is_err());
        store.set_failing(false);
        store.remove(rec.address).expect("remove");
        store.remove(rec.address).expect("removing twice is fine");
        assert!(store.load().expect("load").is_empty());
    }
}
