//! Lease pool tests, on a clock moved by hand.

use std::collections::{BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use proptest::prelude::*;

use super::*;
use crate::keys::PublicKey;

const LEASE: Duration = Duration::from_secs(3600);

fn key(n: u16) -> PublicKey {
    let mut bytes = [0u8; 32];
    bytes[..2].copy_from_slice(&n.to_be_bytes());
    bytes[31] = 0x5a;
    PublicKey::from_bytes(bytes)
}

fn ip(s: &str) -> Ipv4Addr {
    s.parse().expect("address")
}

/// A time `secs` seconds into the test (a whole number of seconds after the epoch).
fn t(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_800_000_000 + secs)
}

fn settings(ranges: &[&str], exclude: &[&str]) -> PoolSettings {
    let mut s = PoolSettings::new(
        ranges.iter().map(|r| r.parse().expect("prefix")).collect(),
        LEASE,
        PathBuf::from("leases.db"),
    );
    s.exclude = exclude.iter().map(|e| e.parse().expect("range")).collect();
    s
}

fn client(name: &str, n: u16, fixed: Option<&str>) -> ClientEntry {
    ClientEntry {
        name: name.to_owned(),
        public_key: key(n),
        fixed_address: fixed.map(ip),
    }
}

fn pool<S: LeaseStore>(
    ranges: &[&str],
    exclude: &[&str],
    clients: Vec<ClientEntry>,
    store: S,
) -> LeasePool<S> {
    LeasePool::new(settings(ranges, exclude), clients, store).expect("valid pool")
}

/// Offer then request: what a client does on first contact.
fn lease<S: LeaseStore>(
    pool: &mut LeasePool<S>,
    who: u16,
    now: SystemTime,
) -> Result<Ipv4Addr, Refusal> {
    let offered = pool.offer(&key(who), None, now)?;
    pool.request(&key(who), offered.address, now)
        .map(|l| l.address)
}

#[test]
fn a_lease_carries_t1_t2_and_its_end() {
    let mut pool = pool(&["10.77.100.0/24"], &[], vec![], MemoryStore::new());
    let offer = pool.offer(&key(1), None, t(0)).expect("offer");
    assert_eq!(offer.address, ip("10.77.100.1"));
    assert_eq!(offer.prefix_len, 24);
    let lease = pool.request(&key(1), offer.address, t(5)).expect("lease");
    assert_eq!(lease.lease_time, LEASE);
    assert_eq!(lease.renew_after, Duration::from_secs(1800));
    assert_eq!(lease.rebind_after, Duration::from_secs(2700));
    assert_eq!(lease.expires_at, t(5) + LEASE);
    assert_eq!(pool.poll_timeout(), Some(t(5) + LEASE));

    let renewed = pool.renew(&key(1), offer.address, t(1800)).expect("renew");
    assert_eq!(renewed.expires_at, t(1800) + LEASE);
    assert_eq!(pool.poll_timeout(), Some(t(1800) + LEASE));
    let active = pool.lease_of(&key(1), t(1801)).expect("active lease");
    assert_eq!(active.state, LeaseState::Active);
    assert_eq!(active.address, offer.address);
}

#[test]
fn configurable_t1_t2() {
    let mut s = settings(&["10.0.0.0/24"], &[]);
    s.renew_after_percent = 40;
    s.rebind_after_percent = 90;
    let mut pool = LeasePool::new(s, vec![], MemoryStore::new()).expect("valid");
    let offer = pool.offer(&key(1), None, t(0)).expect("offer");
    assert_eq!(offer.renew_after, Duration::from_secs(1440));
    assert_eq!(offer.rebind_after, Duration::from_secs(3240));
}

#[test]
fn sub_second_now_rounds_the_end_up() {
    let mut pool = pool(&["10.0.0.0/24"], &[], vec![], MemoryStore::new());
    let now = t(0) + Duration::from_millis(250);
    let lease = lease(&mut pool, 1, now).expect("lease");
    let end = pool.lease_of(&key(1), now).expect("active").expires_at;
    assert_eq!(end, t(1) + LEASE);
    assert_eq!(
        pool.store().records()[&lease].expires_at,
        1_800_000_001 + 3600
    );
}

#[test]
fn fixed_allocation_is_honoured_and_exclusive() {
    let clients = vec![client("alice", 1, Some("10.0.0.2")), client("bob", 2, None)];
    let mut pool = pool(&["10.0.0.0/29"], &[], clients, MemoryStore::new());

    // Alice gets her fixed address whatever she asks for, and nothing else.
    let offer = pool
        .offer(&key(1), Some(ip("10.0.0.5")), t(0))
        .expect("offer");
    assert_eq!(offer.address, ip("10.0.0.2"));
    assert_eq!(
        pool.request(&key(1), ip("10.0.0.5"), t(0)),
        Err(Refusal::AddressUnavailable(ip("10.0.0.5")))
    );

    // Nobody else gets it, even when asking for it or when the pool runs dry.
    let offer = pool
        .offer(&key(2), Some(ip("10.0.0.2")), t(0))
        .expect("offer");
    assert_ne!(offer.address, ip("10.0.0.2"));
    assert_eq!(
        pool.request(&key(2), ip("10.0.0.2"), t(0)),
        Err(Refusal::AddressUnavailable(ip("10.0.0.2")))
    );
    let mut given = BTreeSet::new();
    for who in 10..20 {
        match lease(&mut pool, who, t(1)) {
            Ok(a) => assert!(given.insert(a)),
            Err(e) => assert_eq!(e, Refusal::PoolExhausted),
        }
    }
    // 6 assignable addresses, one fixed, one offered to bob: 4 for the others.
    assert_eq!(given.len(), 4);
    assert!(!given.contains(&ip("10.0.0.2")));

    // Alice still gets it when the pool is otherwise full, and keeps it after expiry.
    assert_eq!(lease(&mut pool, 1, t(2)), Ok(ip("10.0.0.2")));
    let expired = pool.handle_timeout(t(2) + LEASE * 2);
    assert!(expired.iter().any(|e| e.client == key(1)));
    for who in 30..40 {
        let _ = lease(&mut pool, who, t(2) + LEASE * 2);
    }
    assert_eq!(lease(&mut pool, 1, t(2) + LEASE * 3), Ok(ip("10.0.0.2")));
    let entry = pool.lease_of(&key(1), t(2) + LEASE * 3).expect("active");
    assert!(entry.fixed);
    assert_eq!(entry.name.as_deref(), Some("alice"));
}

#[test]
fn returning_client_gets_its_previous_address() {
    let mut pool = pool(&["10.0.0.0/24"], &[], vec![], MemoryStore::new());
    let first = lease(&mut pool, 1, t(0)).expect("lease");
    let other = lease(&mut pool, 2, t(0)).expect("lease");
    assert_ne!(first, other);

    // Client 1 goes away; its lease expires.
    let expired = pool.handle_timeout(t(0) + LEASE);
    assert_eq!(expired.len(), 2);
    // Others come and go meanwhile.
    for who in 10..50 {
        lease(&mut pool, who, t(0) + LEASE + Duration::from_secs(10)).expect("lease");
    }
    // Back a day later, it gets its old address again.
    let back = t(0) + Duration::from_secs(86_400);
    assert_eq!(
        pool.offer(&key(1), None, back).map(|o| o.address),
        Ok(first)
    );

    // Same after a release.
    let mut pool2 = pool_with_released();
    let again = pool2.offer(&key(7), None, t(100)).expect("offer");
    assert_eq!(again.address, ip("10.0.0.1"));
}

fn pool_with_released() -> LeasePool<MemoryStore> {
    let mut pool = pool(&["10.0.0.0/24"], &[], vec![], MemoryStore::new());
    assert_eq!(lease(&mut pool, 7, t(0)), Ok(ip("10.0.0.1")));
    pool.release(&key(7), ip("10.0.0.1"), t(10))
        .expect("release");
    assert_eq!(
        pool.lease_of(&key(7), t(10)),
        None,
        "released lease is not active"
    );
    for who in 10..20 {
        lease(&mut pool, who, t(20)).expect("lease");
    }
    pool
}

#[test]
fn requested_address_is_given_when_free() {
    let mut pool = pool(&["10.0.0.0/24"], &[], vec![], MemoryStore::new());
    let offer = pool
        .offer(&key(1), Some(ip("10.0.0.77")), t(0))
        .expect("offer");
    assert_eq!(offer.address, ip("10.0.0.77"));
    // Another client asking for the same address gets a different one.
    let offer = pool
        .offer(&key(2), Some(ip("10.0.0.77")), t(0))
        .expect("offer");
    assert_ne!(offer.address, ip("10.0.0.77"));
    // A client rebooting with an address it never had (gateway lost track) may request a free one.
    assert_eq!(
        pool.request(&key(3), ip("10.0.0.200"), t(0))
            .map(|l| l.address),
        Ok(ip("10.0.0.200"))
    );
}

#[test]
fn exclusions_are_never_handed_out() {
    let mut pool = pool(
        &["10.77.100.0/27"],
        &[
            "10.77.100.1",
            "10.77.100.2-10.77.100.9",
            "10.77.100.20-10.77.100.25",
        ],
        vec![],
        MemoryStore::new(),
    );
    assert_eq!(pool.size(), 30 - 15);
    let mut given = BTreeSet::new();
    for who in 0..40 {
        if let Ok(a) = lease(&mut pool, who, t(0)) {
            assert!(given.insert(a));
        }
    }
    assert_eq!(given.len(), 15);
    for a in &given {
        let last = a.octets()[3];
        assert!(
            !(1..=9).contains(&last) && !(20..=25).contains(&last),
            "{a}"
        );
    }
    assert_eq!(
        pool.request(&key(99), ip("10.77.100.5"), t(0)),
        Err(Refusal::AddressUnavailable(ip("10.77.100.5")))
    );
    assert_eq!(
        pool.offer(&key(99), Some(ip("10.77.100.5")), t(0)),
        Err(Refusal::PoolExhausted)
    );
}

#[test]
fn network_and_broadcast_are_never_handed_out() {
    let mut pool = pool(&["10.0.0.0/30"], &[], vec![], MemoryStore::new());
    for a in ["10.0.0.0", "10.0.0.3"] {
        assert_eq!(
            pool.request(&key(1), ip(a), t(0)),
            Err(Refusal::AddressUnavailable(ip(a)))
        );
        assert_ne!(
            pool.offer(&key(1), Some(ip(a)), t(0)).map(|o| o.address),
            Ok(ip(a))
        );
    }
    let given: BTreeSet<_> = (1..10)
        .filter_map(|w| lease(&mut pool, w, t(0)).ok())
        .collect();
    assert_eq!(given, [ip("10.0.0.1"), ip("10.0.0.2")].into());

    // A /31 has no network or broadcast address: both are handed out.
    let mut pool = pool_31();
    let given: BTreeSet<_> = (1..10)
        .filter_map(|w| lease(&mut pool, w, t(0)).ok())
        .collect();
    assert_eq!(given, [ip("10.0.0.0"), ip("10.0.0.1")].into());
}

fn pool_31() -> LeasePool<MemoryStore> {
    pool(&["10.0.0.0/31"], &[], vec![], MemoryStore::new())
}

#[test]
fn concurrent_discovers_get_different_addresses_and_offers_lapse() {
    let mut pool = pool(&["10.0.0.0/30"], &[], vec![], MemoryStore::new());
    let a = pool.offer(&key(1), None, t(0)).expect("offer");
    let b = pool.offer(&key(2), None, t(0)).expect("offer");
    assert_ne!(a.address, b.address);
    assert_eq!(pool.offer(&key(3), None, t(1)), Err(Refusal::PoolExhausted));
    // Asking again refreshes the same offer rather than taking a second address.
    assert_eq!(
        pool.offer(&key(1), None, t(2)).map(|o| o.address),
        Ok(a.address)
    );
    // The other client cannot request an address offered to someone else.
    assert_eq!(
        pool.request(&key(3), a.address, t(3)),
        Err(Refusal::AddressUnavailable(a.address))
    );
    // Offers are short: 30 s later key 2's offer has lapsed and no lease-end is reported.
    assert_eq!(pool.poll_timeout(), Some(t(0) + DEFAULT_OFFER_TIME));
    assert!(pool.handle_timeout(t(31)).is_empty());
    assert_eq!(
        pool.offer(&key(3), None, t(31)).map(|o| o.address),
        Ok(b.address)
    );
    // Key 1's refreshed offer is still good until t(32).
    assert_eq!(
        pool.request(&key(1), a.address, t(31)).map(|l| l.address),
        Ok(a.address)
    );
}

#[test]
fn one_offer_per_client() {
    let mut pool = pool(&["10.0.0.0/24"], &[], vec![], MemoryStore::new());
    for n in 1..50u8 {
        let _ = pool.offer(&key(1), Some(Ipv4Addr::new(10, 0, 0, n)), t(0));
    }
    let offered: Vec<_> = pool
        .leases(t(0))
        .into_iter()
        .filter(|e| e.client == key(1))
        .collect();
    assert_eq!(offered.len(), 1);
    assert_eq!(offered[0].state, LeaseState::Offered);
}

#[test]
fn expiry_reclaims_and_is_reported() {
    let mut pool = pool(&["10.0.0.0/30"], &[], vec![], MemoryStore::new());
    let a = lease(&mut pool, 1, t(0)).expect("lease");
    let b = lease(&mut pool, 2, t(0)).expect("lease");
    assert_eq!(lease(&mut pool, 3, t(10)), Err(Refusal::PoolExhausted));

    // Client 2 renews, client 1 does not.
    pool.renew(&key(2), b, t(1800)).expect("renew");
    assert_eq!(pool.poll_timeout(), Some(t(0) + LEASE));
    let expired = pool.handle_timeout(t(0) + LEASE);
    assert_eq!(
        expired,
        vec![ExpiredLease {
            client: key(1),
            address: a,
            expired_at: t(0) + LEASE,
        }]
    );
    assert!(
        pool.handle_timeout(t(0) + LEASE).is_empty(),
        "reported once"
    );
    assert_eq!(lease(&mut pool, 3, t(0) + LEASE), Ok(a));
    // Client 1 is back: its address is gone, the pool is full.
    assert_eq!(
        pool.renew(&key(1), a, t(0) + LEASE),
        Err(Refusal::NoSuchLease(a))
    );
    assert_eq!(
        lease(&mut pool, 1, t(0) + LEASE),
        Err(Refusal::PoolExhausted)
    );
}

#[test]
fn expiry_found_by_a_call_is_reported_by_the_next_timeout() {
    let mut pool = pool(&["10.0.0.0/24"], &[], vec![], MemoryStore::new());
    let a = lease(&mut pool, 1, t(0)).expect("lease");
    let late = t(0) + LEASE + Duration::from_secs(5);
    lease(&mut pool, 2, late).expect("lease");
    assert_eq!(pool.poll_timeout(), Some(t(0) + LEASE), "due at once");
    let expired = pool.handle_timeout(late);
    assert_eq!(expired.len(), 1);
    assert_eq!(expired[0].address, a);
}

#[test]
fn an_expired_lease_may_be_renewed_while_nobody_took_it() {
    let mut pool = pool(&["10.0.0.0/24"], &[], vec![], MemoryStore::new());
    let a = lease(&mut pool, 1, t(0)).expect("lease");
    let _ = pool.handle_timeout(t(0) + LEASE);
    let renewed = pool.renew(&key(1), a, t(0) + LEASE * 2).expect("renew");
    assert_eq!(renewed.address, a);
    assert_eq!(renewed.expires_at, t(0) + LEASE * 3);
}

#[test]
fn longest_expired_lease_is_reclaimed_first() {
    let mut pool = pool(&["10.0.0.0/29"], &[], vec![], MemoryStore::new());
    // Six addresses, six clients, leased at different times.
    let mut addr = HashMap::new();
    for who in 1..=6u16 {
        let at = t(u64::from(who) * 100);
        addr.insert(who, lease(&mut pool, who, at).expect("lease"));
    }
    // Client 4 releases early; client 2 renews late.
    pool.release(&key(4), addr[&4], t(1000)).expect("release");
    pool.renew(&key(2), addr[&2], t(2000)).expect("renew");
    // Everything has expired by now. Order of ends: 4 (t1000), 1, 3, 5, 6, 2.
    let now = t(2000) + LEASE * 2;
    let _ = pool.handle_timeout(now);
    let order: Vec<Ipv4Addr> = (100..106)
        .map(|who| lease(&mut pool, who, now).expect("reclaimed"))
        .collect();
    assert_eq!(
        order,
        vec![addr[&4], addr[&1], addr[&3], addr[&5], addr[&6], addr[&2]]
    );
    assert_eq!(lease(&mut pool, 200, now), Err(Refusal::PoolExhausted));
}

#[test]
fn never_used_addresses_go_before_reclaiming() {
    let mut pool = pool(&["10.0.0.0/29"], &[], vec![], MemoryStore::new());
    let a = lease(&mut pool, 1, t(0)).expect("lease");
    pool.release(&key(1), a, t(1)).expect("release");
    for who in 2..=6 {
        assert_ne!(lease(&mut pool, who, t(2)), Ok(a));
    }
    // Only now, with the pool full, is client 1's address reclaimed.
    assert_eq!(lease(&mut pool, 7, t(3)), Ok(a));
}

#[test]
fn exhaustion_is_refused() {
    let mut pool = pool(&["10.0.0.0/30"], &[], vec![], MemoryStore::new());
    lease(&mut pool, 1, t(0)).expect("lease");
    lease(&mut pool, 2, t(0)).expect("lease");
    assert_eq!(pool.offer(&key(3), None, t(0)), Err(Refusal::PoolExhausted));
    // Nothing was reserved for the refused client.
    assert_eq!(pool.leases(t(0)).len(), 2);
}

#[test]
fn release_and_renew_need_the_clients_own_lease() {
    let mut pool = pool(&["10.0.0.0/24"], &[], vec![], MemoryStore::new());
    let a = lease(&mut pool, 1, t(0)).expect("lease");
    assert_eq!(pool.renew(&key(2), a, t(1)), Err(Refusal::NoSuchLease(a)));
    assert_eq!(pool.release(&key(2), a, t(1)), Err(Refusal::NoSuchLease(a)));
    let other = ip("10.0.0.99");
    assert_eq!(
        pool.renew(&key(1), other, t(1)),
        Err(Refusal::NoSuchLease(other))
    );
    // Renewing an offer that was never requested is not a lease.
    let offer = pool.offer(&key(3), None, t(1)).expect("offer");
    assert_eq!(
        pool.renew(&key(3), offer.address, t(1)),
        Err(Refusal::NoSuchLease(offer.address))
    );
    // Releasing an offer drops it; releasing twice is harmless.
    pool.release(&key(3), offer.address, t(1))
        .expect("release offer");
    pool.release(&key(1), a, t(2)).expect("release");
    pool.release(&key(1), a, t(3)).expect("release again");
    assert_eq!(pool.renew(&key(1), a, t(4)).map(|l| l.address), Ok(a));
}

#[test]
fn a_client_holds_one_address() {
    let mut pool = pool(&["10.0.0.0/24"], &[], vec![], MemoryStore::new());
    let a = lease(&mut pool, 1, t(0)).expect("lease");
    let b = ip("10.0.0.200");
    pool.request(&key(1), b, t(1)).expect("move");
    assert_eq!(
        pool.leases(t(1))
            .iter()
            .filter(|e| e.client == key(1))
            .map(|e| e.address)
            .collect::<Vec<_>>(),
        vec![b]
    );
    assert!(!pool.store().records().contains_key(&a));
    // The old address is free again for anyone.
    assert_eq!(pool.request(&key(2), a, t(2)).map(|l| l.address), Ok(a));
}

#[test]
fn store_failure_promises_nothing() {
    let mut store = MemoryStore::new();
    let mut pool = pool(&["10.0.0.0/24"], &[], vec![], &mut store);
    let offer = pool.offer(&key(1), None, t(0)).expect("offer");
    pool.store_mut().set_failing(true);
    assert!(matches!(
        pool.request(&key(1), offer.address, t(0)),
        Err(Refusal::Store(_))
    ));
    assert_eq!(pool.lease_of(&key(1), t(0)), None);
    pool.store_mut().set_failing(false);
    let a = pool.request(&key(1), offer.address, t(0)).expect("lease");
    pool.store_mut().set_failing(true);
    assert!(matches!(
        pool.renew(&key(1), a.address, t(10)),
        Err(Refusal::Store(_))
    ));
    assert!(matches!(
        pool.release(&key(1), a.address, t(10)),
        Err(Refusal::Store(_))
    ));
    // Still leased as before, in memory and in the store.
    let entry = pool.lease_of(&key(1), t(10)).expect("still active");
    assert_eq!(entry.expires_at, t(0) + LEASE);
    drop(pool);
    store.set_failing(false);
    assert_eq!(store.records()[&a.address].expires_at, 1_800_000_000 + 3600);
}

#[test]
fn failing_store_at_start_is_an_error() {
    let mut store = MemoryStore::new();
    store.set_failing(true);
    assert!(matches!(
        LeasePool::new(settings(&["10.0.0.0/24"], &[]), vec![], store),
        Err(PoolError::Store(_))
    ));
}

#[test]
fn restart_from_store_keeps_every_lease() {
    let mut store = MemoryStore::new();
    let clients = || vec![client("alice", 1, Some("10.0.0.6")), client("bob", 2, None)];
    let ranges = ["10.0.0.0/29"];
    let (bob, carol, dave);
    {
        let mut pool = pool(&ranges, &[], clients(), &mut store);
        assert_eq!(lease(&mut pool, 1, t(0)), Ok(ip("10.0.0.6")));
        bob = lease(&mut pool, 2, t(0)).expect("lease");
        carol = lease(&mut pool, 3, t(0)).expect("lease");
        dave = lease(&mut pool, 4, t(0)).expect("lease");
        pool.release(&key(4), dave, t(5)).expect("release");
        // An offer in flight is lost in the crash; that is fine.
        pool.offer(&key(5), None, t(6)).expect("offer");
        // kill -9: the pool is dropped without any shutdown.
    }
    let mut pool = pool(&ranges, &[], clients(), &mut store);
    let now = t(100);
    let active: BTreeSet<_> = pool
        .leases(now)
        .into_iter()
        .filter(|e| e.state == LeaseState::Active)
        .map(|e| (e.address, e.client))
        .collect();
    assert_eq!(
        active,
        [(ip("10.0.0.6"), key(1)), (bob, key(2)), (carol, key(3))].into()
    );
    let bob_entry = pool.lease_of(&key(2), now).expect("bob");
    assert_eq!(bob_entry.name.as_deref(), Some("bob"));
    assert_eq!(bob_entry.last_seen, t(0));
    // Leases renew across the restart; new clients never get a leased address.
    assert_eq!(
        pool.renew(&key(3), carol, now).map(|l| l.address),
        Ok(carol)
    );
    let mut fresh = BTreeSet::new();
    for who in 10..20 {
        if let Ok(a) = lease(&mut pool, who, now) {
            fresh.insert(a);
        }
    }
    assert!(!fresh.contains(&bob) && !fresh.contains(&carol) && !fresh.contains(&ip("10.0.0.6")));
    // The released address was remembered as dave's and reclaimed last.
    assert!(fresh.contains(&dave));
    // Nothing was reported as expired that had not expired.
    assert!(pool.handle_timeout(now).is_empty());
}

#[test]
fn leases_that_ended_while_down_are_reported_after_restart() {
    let mut store = MemoryStore::new();
    let a = {
        let mut pool = pool(&["10.0.0.0/24"], &[], vec![], &mut store);
        lease(&mut pool, 1, t(0)).expect("lease")
    };
    let mut pool = pool(&["10.0.0.0/24"], &[], vec![], &mut store);
    let later = t(0) + LEASE * 2;
    assert_eq!(pool.poll_timeout(), Some(t(0) + LEASE));
    let expired = pool.handle_timeout(later);
    assert_eq!(expired.len(), 1);
    assert_eq!(expired[0].address, a);
    // ... and the client still gets its address back.
    assert_eq!(pool.offer(&key(1), None, later).map(|o| o.address), Ok(a));
}

#[test]
fn stored_lease_that_no_longer_fits_is_kept_until_it_ends() {
    let mut store = MemoryStore::new();
    {
        let mut pool = pool(&["10.0.0.0/24"], &[], vec![], &mut store);
        assert_eq!(
            pool.request(&key(1), ip("10.0.0.50"), t(0))
                .map(|l| l.address),
            Ok(ip("10.0.0.50"))
        );
    }
    // The admin now gives .50 to bob as a fixed address.
    let clients = vec![client("bob", 2, Some("10.0.0.50"))];
    let mut pool = pool(&["10.0.0.0/24"], &[], clients, &mut store);
    let fifty = ip("10.0.0.50");
    assert_eq!(
        pool.offer(&key(2), None, t(10)),
        Err(Refusal::AddressUnavailable(fifty)),
        "not handed out twice"
    );
    assert_eq!(
        pool.renew(&key(1), fifty, t(1800)),
        Err(Refusal::AddressUnavailable(fifty)),
        "the old holder cannot renew"
    );
    let moved = lease(&mut pool, 1, t(1800)).expect("client 1 moves");
    assert_ne!(moved, fifty);
    assert_eq!(
        pool.offer(&key(2), None, t(1801)).map(|o| o.address),
        Ok(fifty)
    );
}

#[test]
fn invalid_settings_are_refused() {
    let bad = |s: PoolSettings, clients: Vec<ClientEntry>| {
        LeasePool::new(s, clients, MemoryStore::new()).expect_err("invalid")
    };
    let base = || settings(&["10.77.100.0/24"], &[]);

    let mut s = base();
    s.exclude = vec!["10.77.101.1".parse().expect("range")];
    assert!(matches!(
        bad(s, vec![]),
        PoolError::ExclusionOutsideRanges { .. }
    ));

    let mut s = base();
    s.lease_time = Duration::ZERO;
    assert!(matches!(bad(s, vec![]), PoolError::InvalidLeaseTime { .. }));
    let mut s = base();
    s.lease_time = MAX_LEASE_TIME + Duration::from_secs(1);
    assert!(matches!(bad(s, vec![]), PoolError::InvalidLeaseTime { .. }));
    let mut s = base();
    s.offer_time = Duration::ZERO;
    assert!(matches!(bad(s, vec![]), PoolError::InvalidOfferTime));
    for (renew, rebind) in [(0, 75), (75, 50), (50, 50), (50, 100)] {
        let mut s = base();
        s.renew_after_percent = renew;
        s.rebind_after_percent = rebind;
        assert!(matches!(
            bad(s, vec![]),
            PoolError::InvalidRenewRebind { .. }
        ));
    }

    let fixed = |a: &str| vec![client("alice", 1, Some(a))];
    assert!(matches!(
        bad(base(), fixed("10.77.101.5")),
        PoolError::FixedAddressOutsideRanges { .. }
    ));
    let mut s = base();
    s.exclude = vec!["10.77.100.2-10.77.100.9".parse().expect("range")];
    assert!(matches!(
        bad(s, fixed("10.77.100.5")),
        PoolError::FixedAddressExcluded { .. }
    ));
    assert!(matches!(
        bad(base(), fixed("10.77.100.255")),
        PoolError::FixedAddressNotAssignable { .. }
    ));
    assert!(matches!(
        bad(base(), fixed("10.77.100.0")),
        PoolError::FixedAddressNotAssignable { .. }
    ));
    assert!(matches!(
        bad(
            base(),
            vec![
                client("alice", 1, Some("10.77.100.5")),
                client("bob", 2, Some("10.77.100.5"))
            ]
        ),
        PoolError::DuplicateFixedAddress { .. }
    ));
    assert!(matches!(
        bad(
            base(),
            vec![client("alice", 1, None), client("bob", 1, None)]
        ),
        PoolError::DuplicateClientKey { .. }
    ));
    assert!(matches!(
        bad(
            base(),
            vec![client("alice", 1, None), client("alice", 2, None)]
        ),
        PoolError::DuplicateClientName { .. }
    ));
    assert!(matches!(
        bad(base(), vec![client("", 1, None)]),
        PoolError::EmptyClientName { .. }
    ));
    assert!(matches!(
        bad(settings(&[], &[]), vec![]),
        PoolError::NoRanges
    ));
    let err = bad(
        base(),
        vec![
            client("alice", 1, Some("10.77.100.5")),
            client("bob", 2, Some("10.77.100.5")),
        ],
    );
    assert_eq!(
        err.to_string(),
        "clients \"alice\" and \"bob\" have the same fixed address 10.77.100.5"
    );
}

/// A small, seedable PRNG so that the randomized test needs no extra dependency.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// One step of the randomized workload.
#[derive(Debug, Clone)]
enum Op {
    Offer { who: u16, requested: Option<u8> },
    Request { who: u16, last_octet: u8 },
    Renew { who: u16 },
    Release { who: u16 },
    Tick { secs: u64 },
    Crash,
}

/// The pool the randomized workload runs against: 26 assignable addresses, 2 of them fixed.
fn workload_pool(store: &mut MemoryStore) -> LeasePool<&mut MemoryStore> {
    let mut settings = settings(&["10.9.0.0/27"], &["10.9.0.1-10.9.0.3", "10.9.0.20"]);
    settings.lease_time = Duration::from_secs(600);
    let clients = vec![
        client("fixed-a", 0, Some("10.9.0.10")),
        client("fixed-b", 1, Some("10.9.0.11")),
        client("named", 2, None),
    ];
    LeasePool::new(settings, clients, store).expect("valid pool")
}

/// Plays `ops` against a pool and a model of what it promised, checking after every step that
/// no address is leased (or offered) to two keys at once, and never handed out when it must not
/// be.
fn check_workload(ops: &[Op]) -> Stats {
    let mut stats = Stats::default();
    let mut store = MemoryStore::new();
    let forbidden = |a: Ipv4Addr| {
        let o = a.octets()[3];
        o == 0 || o == 31 || (1..=3).contains(&o) || o == 20
    };
    let fixed_of = |who: u16| match who {
        0 => Some(ip("10.9.0.10")),
        1 => Some(ip("10.9.0.11")),
        _ => None,
    };

    let mut now = t(0);
    // What the pool acknowledged: address -> (key, lease end).
    let mut leased: HashMap<Ipv4Addr, (u16, SystemTime)> = HashMap::new();
    // Unexpired offers: key -> (address, offer end).
    let mut offers: HashMap<u16, (Ipv4Addr, SystemTime)> = HashMap::new();
    // What each key believes it has.
    let mut held: HashMap<u16, Ipv4Addr> = HashMap::new();
    let mut pool = workload_pool(&mut store);

    for op in ops {
        match *op {
            Op::Tick { secs } => {
                now += Duration::from_secs(secs);
                for e in pool.handle_timeout(now) {
                    assert!(e.expired_at <= now);
                    stats.expired += 1;
                }
            }
            Op::Crash => {
                drop(pool);
                pool = workload_pool(&mut store);
                offers.clear();
                stats.crashes += 1;
            }
            Op::Offer { who, requested } => {
                let requested = requested.map(|o| Ipv4Addr::new(10, 9, 0, o));
                let offered = pool.offer(&key(who), requested, now);
                if offered == Err(Refusal::PoolExhausted) {
                    stats.exhausted += 1;
                }
                if let Ok(info) = offered {
                    let a = info.address;
                    assert!(!forbidden(a), "offered forbidden {a}");
                    if let Some(f) = fixed_of(who) {
                        assert_eq!(a, f);
                    }
                    assert!(who == 0 || a != ip("10.9.0.10"));
                    assert!(who == 1 || a != ip("10.9.0.11"));
                    if let Some(&(holder, end)) = leased.get(&a) {
                        assert!(
                            holder == who || end <= now,
                            "offered {a} leased to {holder}"
                        );
                    }
                    for (&other, &(oa, end)) in &offers {
                        assert!(
                            other == who || oa != a || end <= now,
                            "offered {a} to {who} and {other}"
                        );
                    }
                    // An offer of the address the key already leases reserves nothing more.
                    let reserved = pool.leases(now).iter().any(|e| {
                        e.address == a && e.client == key(who) && e.state == LeaseState::Offered
                    });
                    if reserved {
                        offers.insert(who, (a, now + DEFAULT_OFFER_TIME));
                    } else {
                        offers.remove(&who);
                    }
                }
            }
            Op::Request { who, last_octet } => {
                let a = match offers.get(&who) {
                    Some(&(oa, _)) if last_octet % 4 != 0 => oa,
                    _ => Ipv4Addr::new(10, 9, 0, last_octet % 32),
                };
                if let Ok(info) = pool.request(&key(who), a, now) {
                    assert_eq!(info.address, a);
                    stats.granted += 1;
                    grant(&mut leased, &mut held, who, a, info.expires_at, now);
                    offers.remove(&who);
                }
            }
            Op::Renew { who } => {
                if let Some(&a) = held.get(&who) {
                    if let Ok(info) = pool.renew(&key(who), a, now) {
                        stats.renewed += 1;
                        grant(&mut leased, &mut held, who, a, info.expires_at, now);
                        offers.remove(&who);
                    }
                }
            }
            Op::Release { who } => {
                if let Some(&a) = held.get(&who) {
                    if pool.release(&key(who), a, now).is_ok() {
                        if leased.get(&a).is_some_and(|&(h, _)| h == who) {
                            leased.remove(&a);
                        }
                        held.remove(&who);
                        if offers.get(&who).is_some_and(|&(oa, _)| oa == a) {
                            offers.remove(&who);
                        }
                    }
                }
            }
        }
        // The pool's own view agrees: at most one active lease per address, none forbidden.
        let mut seen = BTreeSet::new();
        for e in pool.leases(now) {
            assert!(seen.insert(e.address), "two entries for {}", e.address);
            if e.state != LeaseState::Expired {
                assert!(!forbidden(e.address));
            }
        }
    }
    stats
}

/// What a workload exercised, so that a test can tell it did something.
#[derive(Debug, Default)]
struct Stats {
    granted: usize,
    renewed: usize,
    expired: usize,
    exhausted: usize,
    crashes: usize,
}

/// Records an acknowledged lease, checking that nobody else holds the address.
fn grant(
    leased: &mut HashMap<Ipv4Addr, (u16, SystemTime)>,
    held: &mut HashMap<u16, Ipv4Addr>,
    who: u16,
    a: Ipv4Addr,
    end: SystemTime,
    now: SystemTime,
) {
    if let Some(&(holder, old_end)) = leased.get(&a) {
        assert!(
            holder == who || old_end <= now,
            "{a} leased to {who} while {holder}'s lease runs until {old_end:?}"
        );
    }
    if let Some(previous) = held.insert(who, a) {
        if previous != a && leased.get(&previous).is_some_and(|&(h, _)| h == who) {
            leased.remove(&previous);
        }
    }
    leased.insert(a, (who, end));
}

fn random_ops(seed: u64, count: usize, keys: u16) -> Vec<Op> {
    let mut rng = SplitMix(seed);
    let keys = u64::from(keys);
    (0..count)
        .map(|_| {
            let who = u16::try_from(rng.below(keys)).unwrap_or(0);
            match rng.below(100) {
                0..=29 => Op::Offer {
                    who,
                    requested: (rng.below(3) == 0).then(|| (rng.below(32)) as u8),
                },
                30..=59 => Op::Request {
                    who,
                    last_octet: rng.below(64) as u8,
                },
                60..=74 => Op::Renew { who },
                75..=84 => Op::Release { who },
                // Mostly a few seconds; now and then long enough for leases to run out.
                85..=98 => Op::Tick {
                    secs: if rng.below(50) == 0 {
                        300 + rng.below(600)
                    } else {
                        rng.below(4)
                    },
                },
                _ => Op::Crash,
            }
        })
        .collect()
}

#[test]
fn ten_thousand_interleaved_requests_never_share_an_address() {
    for seed in [1, 2, 3, 0xdead_beef] {
        let stats = check_workload(&random_ops(seed, 10_000, 60));
        // 60 keys share 23 addresses: most requests meet a full pool.
        assert!(stats.granted > 200, "{stats:?}");
        assert!(stats.renewed > 200, "{stats:?}");
        assert!(stats.expired > 100, "{stats:?}");
        assert!(stats.exhausted > 10, "{stats:?}");
        assert!(stats.crashes > 10, "{stats:?}");
    }
}

fn op_strategy() -> impl Strategy<Value = Op> {
    let who = 0u16..40;
    prop_oneof![
        3 => (who.clone(), proptest::option::of(0u8..32))
            .prop_map(|(who, requested)| Op::Offer { who, requested }),
        3 => (who.clone(), any::<u8>())
            .prop_map(|(who, last_octet)| Op::Request { who, last_octet }),
        2 => who.clone().prop_map(|who| Op::Renew { who }),
        1 => who.prop_map(|who| Op::Release { who }),
        2 => (0u64..400).prop_map(|secs| Op::Tick { secs }),
        1 => Just(Op::Crash),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn no_address_is_ever_leased_twice(ops in proptest::collection::vec(op_strategy(), 1..400)) {
        let _ = check_workload(&ops);
    }
}
