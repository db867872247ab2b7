//! The validated form of the gateway config's `[pool]` and `[[client]]` sections.
//!
//! These are plain data: the config loader fills them in (with `file:line` errors for syntax and
//! types), and [`LeasePool::new`](super::LeasePool::new) checks that they make sense together
//! (exclusions inside the ranges, fixed addresses assignable and unique, client keys and names
//! unique).

use std::fmt;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use ipnet::Ipv4Net;

use crate::keys::PublicKey;

/// Default T1: clients start renewing after this percentage of the lease time.
pub const DEFAULT_RENEW_AFTER_PERCENT: u8 = 50;
/// Default T2: clients start rebinding after this percentage of the lease time.
pub const DEFAULT_REBIND_AFTER_PERCENT: u8 = 75;
/// How long an offer reserves its address (in memory only) unless the config says otherwise.
pub const DEFAULT_OFFER_TIME: Duration = Duration::from_secs(30);
/// Longest accepted lease time: DHCP's 32-bit seconds field, which the control protocol can
/// carry.
pub const MAX_LEASE_TIME: Duration = Duration::from_secs(u32::MAX as u64);

/// The `[pool]` section: which addresses remote-worker clients get, for how long, and what they
/// are told to route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolSettings {
    /// Prefixes the pool hands addresses out of (`ranges = ["10.77.100.0/24"]`). They must not
    /// overlap and must have no host bits set. The network and broadcast addresses of a prefix
    /// shorter than /31 are never handed out.
    pub ranges: Vec<Ipv4Net>,
    /// Addresses inside `ranges` that are never handed out, single (`"10.77.100.1"`) or inclusive
    /// ranges (`"10.77.100.2-10.77.100.9"`).
    pub exclude: Vec<AddressRange>,
    /// How long a lease lasts unless renewed (`lease_time = 3600`, seconds).
    pub lease_time: Duration,
    /// T1 as a percentage of `lease_time`: when a client starts renewing (default 50).
    pub renew_after_percent: u8,
    /// T2 as a percentage of `lease_time`: when a client starts rebinding (default 75).
    pub rebind_after_percent: u8,
    /// How long an offer holds its address for the client it was made to (default 30 s; not in
    /// the config file).
    pub offer_time: Duration,
    /// Prefixes a client routes through the tunnel (`routes = ["192.168.10.0/24"]`).
    pub routes: Vec<Ipv4Net>,
    /// DNS servers handed to clients (`dns = ["192.168.10.53"]`, optional).
    pub dns: Vec<Ipv4Addr>,
    /// Whether clients send all their traffic through the tunnel (`full_tunnel = false`).
    pub full_tunnel: bool,
    /// The lease database file, already resolved relative to the config file
    /// (`store = "leases.db"`).
    pub store: PathBuf,
}

impl PoolSettings {
    /// Settings with the given ranges, lease time and store, and defaults for the rest: no
    /// exclusions, T1 50%, T2 75%, 30 s offers, no routes, no DNS, split tunnel.
    pub fn new(ranges: Vec<Ipv4Net>, lease_time: Duration, store: PathBuf) -> Self {
        Self {
            ranges,
            exclude: Vec::new(),
            lease_time,
            renew_after_percent: DEFAULT_RENEW_AFTER_PERCENT,
            rebind_after_percent: DEFAULT_REBIND_AFTER_PERCENT,
            offer_time: DEFAULT_OFFER_TIME,
            routes: Vec::new(),
            dns: Vec::new(),
            full_tunnel: false,
            store,
        }
    }

    /// T1: how long after a lease starts the client should renew it.
    pub fn renew_after(&self) -> Duration {
        percent_of(self.lease_time, self.renew_after_percent)
    }

    /// T2: how long after a lease starts the client should rebind.
    pub fn rebind_after(&self) -> Duration {
        percent_of(self.lease_time, self.rebind_after_percent)
    }
}

/// `percent`% of `d`, exact to the nanosecond.
fn percent_of(d: Duration, percent: u8) -> Duration {
    let nanos = d.as_nanos() * u128::from(percent) / 100;
    Duration::new(
        u64::try_from(nanos / 1_000_000_000).unwrap_or(u64::MAX),
        // The remainder of a division by 1e9 always fits.
        u32::try_from(nanos % 1_000_000_000).unwrap_or(0),
    )
}

/// One `[[client]]` entry: a remote-worker client the gateway knows by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientEntry {
    /// Name used in logs and in the lease listing (`name = "alice"`); unique.
    pub name: String,
    /// The client's static public key (`public_key = "base64…"`); unique.
    pub public_key: PublicKey,
    /// An address reserved for this client only (`fixed_address = "10.77.100.50"`, optional).
    /// It must be inside the pool's ranges, not excluded, and not another client's.
    pub fixed_address: Option<Ipv4Addr>,
}

/// An inclusive range of IPv4 addresses, written `"10.77.100.2-10.77.100.9"`, or a single address
/// written `"10.77.100.1"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AddressRange {
    first: Ipv4Addr,
    last: Ipv4Addr,
}

impl AddressRange {
    /// The range `first..=last`; `first` must not come after `last`.
    pub fn new(first: Ipv4Addr, last: Ipv4Addr) -> Result<Self, AddressRangeError> {
        if first > last {
            return Err(AddressRangeError::Reversed { first, last });
        }
        Ok(Self { first, last })
    }

    /// The range holding only `address`.
    pub fn single(address: Ipv4Addr) -> Self {
        Self {
            first: address,
            last: address,
        }
    }

    /// The lowest address of the range.
    pub fn first(&self) -> Ipv4Addr {
        self.first
    }

    /// The highest address of the range (inclusive).
    pub fn last(&self) -> Ipv4Addr {
        self.last
    }

    /// Whether `address` is in the range.
    pub fn contains(&self, address: Ipv4Addr) -> bool {
        self.first <= address && address <= self.last
    }

    /// How many addresses the range holds (at least 1).
    pub fn len(&self) -> u64 {
        u64::from(u32::from(self.last)) - u64::from(u32::from(self.first)) + 1
    }

    /// Always false: a range holds at least one address. (Here for clippy's `len_without_is_empty`.)
    pub fn is_empty(&self) -> bool {
        false
    }
}

impl fmt::Display for AddressRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}-{}", self.first, self.last)
        }
    }
}

impl From<Ipv4Addr> for AddressRange {
    fn from(address: Ipv4Addr) -> Self {
        Self::single(address)
    }
}

impl FromStr for AddressRange {
    type Err = AddressRangeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parse = |part: &str| {
            part.trim()
                .parse::<Ipv4Addr>()
                .map_err(|_| AddressRangeError::InvalidAddress {
                    text: part.trim().to_owned(),
                })
        };
        match s.split_once('-') {
            Some((first, last)) => Self::new(parse(first)?, parse(last)?),
            None => parse(s).map(Self::single),
        }
    }
}

/// Why text is not an [`AddressRange`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressRangeError {
    /// One side is not a dotted-quad IPv4 address.
    #[error("{text:?} is not an IPv4 address")]
    InvalidAddress {
        /// The text that did not parse.
        text: String,
    },
    /// The first address comes after the last one.
    #[error("range {first}-{last} ends before it starts")]
    Reversed {
        /// The first address as written.
        first: Ipv4Addr,
        /// The last address as written.
        last: Ipv4Addr,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_single_addresses_and_ranges() {
        let single: AddressRange = "10.77.100.1".parse().expect("single");
        assert_eq!(single, AddressRange::single(Ipv4Addr::new(10, 77, 100, 1)));
        assert_eq!(single.len(), 1);
        assert_eq!(single.to_string(), "10.77.100.1");

        let range: AddressRange = "10.77.100.2-10.77.100.9".parse().expect("range");
        assert_eq!(range.first(), Ipv4Addr::new(10, 77, 100, 2));
        assert_eq!(range.last(), Ipv4Addr::new(10, 77, 100, 9));
        assert_eq!(range.len(), 8);
        assert_eq!(range.to_string(), "10.77.100.2-10.77.100.9");
        assert_eq!(
            " 10.0.0.1 - 10.0.0.2 "
                .parse::<AddressRange>()
                .map(|r| r.len()),
            Ok(2)
        );
    }

    #[test]
    fn rejects_bad_ranges() {
        assert!(matches!(
            "10.77.100.9-10.77.100.2".parse::<AddressRange>(),
            Err(AddressRangeError::Reversed { .. })
        ));
        assert!(matches!(
            "10.77.100.300".parse::<AddressRange>(),
            Err(AddressRangeError::InvalidAddress { .. })
        ));
        assert!(matches!(
            "10.77.100.0/24".parse::<AddressRange>(),
            Err(AddressRangeError::InvalidAddress { .. })
        ));
        assert!("".parse::<AddressRange>().is_err());
        assert!("10.0.0.1-".parse::<AddressRange>().is_err());
    }

    #[test]
    fn t1_t2_are_percentages_of_the_lease() {
        let s = PoolSettings::new(Vec::new(), Duration::from_secs(3600), PathBuf::new());
        assert_eq!(s.renew_after(), Duration::from_secs(1800));
        assert_eq!(s.rebind_after(), Duration::from_secs(2700));
        assert_eq!(
            percent_of(Duration::from_secs(1), 33),
            Duration::from_millis(330)
        );
    }
}
