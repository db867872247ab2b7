//! Cryptokey routing: longest-prefix match from an inner IP address to the peer that owns it.
//!
//! Every peer owns a set of prefixes (its `allowed_ips`). Outbound, the destination address of an
//! inner packet picks the peer; inbound, the source address of a decrypted packet must map back to
//! the peer it came from, or the packet is dropped.
//!
//! The table keeps one hash map per prefix length and per address family, and remembers which
//! lengths are in use, longest first. A lookup costs one hash probe per prefix length in use
//! (typically two or three), independent of the number of prefixes.

use std::collections::HashMap;
use std::net::IpAddr;

use ipnet::IpNet;

/// A longest-prefix-match table from IP prefixes to values (peer indices).
#[derive(Debug, Clone)]
pub struct PrefixTable<T> {
    v4: Family<u32, T>,
    v6: Family<u128, T>,
}

#[derive(Debug, Clone)]
struct Family<A, T> {
    /// `by_len[len]` maps the masked network address to the value.
    by_len: Vec<HashMap<A, T>>,
    /// Prefix lengths with at least one entry, longest first.
    lens: Vec<u8>,
}

impl<A: Copy + Eq + std::hash::Hash + Mask, T: Clone> Family<A, T> {
    fn new() -> Self {
        Self {
            by_len: (0..=A::BITS).map(|_| HashMap::new()).collect(),
            lens: Vec::new(),
        }
    }

    fn insert(&mut self, addr: A, len: u8, value: T) -> Option<T> {
        let map = &mut self.by_len[usize::from(len)];
        let old = map.insert(addr.mask(len), value);
        if old.is_none() && map.len() == 1 {
            self.lens.push(len);
            self.lens.sort_unstable_by(|a, b| b.cmp(a));
        }
        old
    }

    fn remove(&mut self, addr: A, len: u8) -> Option<T> {
        let map = &mut self.by_len[usize::from(len)];
        let old = map.remove(&addr.mask(len));
        if old.is_some() && map.is_empty() {
            self.lens.retain(|l| *l != len);
        }
        old
    }

    fn get_exact(&self, addr: A, len: u8) -> Option<&T> {
        self.by_len[usize::from(len)].get(&addr.mask(len))
    }

    fn longest_match(&self, addr: A) -> Option<&T> {
        self.lens
            .iter()
            .find_map(|&len| self.by_len[usize::from(len)].get(&addr.mask(len)))
    }

    fn retain(&mut self, mut keep: impl FnMut(&T) -> bool) {
        for map in &mut self.by_len {
            map.retain(|_, v| keep(v));
        }
        let by_len = &self.by_len;
        self.lens.retain(|l| !by_len[usize::from(*l)].is_empty());
    }

    fn len(&self) -> usize {
        self.by_len.iter().map(HashMap::len).sum()
    }
}

trait Mask: Sized {
    const BITS: u8;
    fn mask(self, len: u8) -> Self;
}

impl Mask for u32 {
    const BITS: u8 = 32;
    fn mask(self, len: u8) -> Self {
        match len {
            0 => 0,
            l if l >= 32 => self,
            l => self & (u32::MAX << (32 - l)),
        }
    }
}

impl Mask for u128 {
    const BITS: u8 = 128;
    fn mask(self, len: u8) -> Self {
        match len {
            0 => 0,
            l if l >= 128 => self,
            l => self & (u128::MAX << (128 - l)),
        }
    }
}

impl<T: Clone> Default for PrefixTable<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Clone> PrefixTable<T> {
    /// An empty table.
    pub fn new() -> Self {
        Self {
            v4: Family::new(),
            v6: Family::new(),
        }
    }

    /// Inserts `prefix` (host bits are ignored), returning the value it replaced.
    pub fn insert(&mut self, prefix: IpNet, value: T) -> Option<T> {
        match prefix {
            IpNet::V4(n) => self.v4.insert(u32::from(n.addr()), n.prefix_len(), value),
            IpNet::V6(n) => self.v6.insert(u128::from(n.addr()), n.prefix_len(), value),
        }
    }

    /// Removes exactly `prefix`, returning its value.
    pub fn remove(&mut self, prefix: IpNet) -> Option<T> {
        match prefix {
            IpNet::V4(n) => self.v4.remove(u32::from(n.addr()), n.prefix_len()),
            IpNet::V6(n) => self.v6.remove(u128::from(n.addr()), n.prefix_len()),
        }
    }

    /// The value stored for exactly `prefix`.
    pub fn get_exact(&self, prefix: IpNet) -> Option<&T> {
        match prefix {
            IpNet::V4(n) => self.v4.get_exact(u32::from(n.addr()), n.prefix_len()),
            IpNet::V6(n) => self.v6.get_exact(u128::from(n.addr()), n.prefix_len()),
        }
    }

    /// The value of the longest prefix that contains `addr`.
    pub fn longest_match(&self, addr: IpAddr) -> Option<&T> {
        match addr {
            IpAddr::V4(a) => self.v4.longest_match(u32::from(a)),
            IpAddr::V6(a) => self.v6.longest_match(u128::from(a)),
        }
    }

    /// Keeps only the entries whose value satisfies `keep`.
    pub fn retain(&mut self, mut keep: impl FnMut(&T) -> bool) {
        self.v4.retain(&mut keep);
        self.v6.retain(&mut keep);
    }

    /// Number of prefixes in the table.
    pub fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    /// Whether the table holds no prefix.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn net(s: &str) -> IpNet {
        s.parse().expect("test prefix")
    }

    #[test]
    fn longest_prefix_wins() {
        let mut t = PrefixTable::new();
        t.insert(net("0.0.0.0/0"), 0);
        t.insert(net("192.168.0.0/16"), 1);
        t.insert(net("192.168.20.0/24"), 2);
        t.insert(net("192.168.20.7/32"), 3);
        fn q(t: &PrefixTable<i32>, s: &str) -> Option<i32> {
            t.longest_match(s.parse().expect("addr")).copied()
        }
        assert_eq!(q(&t, "192.168.20.7"), Some(3));
        assert_eq!(q(&t, "192.168.20.8"), Some(2));
        assert_eq!(q(&t, "192.168.21.1"), Some(1));
        assert_eq!(q(&t, "8.8.8.8"), Some(0));
        assert_eq!(q(&t, "::1"), None);
        assert_eq!(t.remove(net("192.168.20.0/24")), Some(2));
        assert_eq!(q(&t, "192.168.20.8"), Some(1));
        t.retain(|v| *v != 1);
        assert_eq!(q(&t, "192.168.20.8"), Some(0));
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn ipv6() {
        let mut t = PrefixTable::new();
        t.insert(net("fd00::/8"), 1);
        t.insert(net("fd00:1::/32"), 2);
        assert_eq!(t.longest_match("fd00:1::5".parse().expect("a")), Some(&2));
        assert_eq!(t.longest_match("fd00:2::5".parse().expect("a")), Some(&1));
        assert_eq!(t.longest_match("fe80::1".parse().expect("a")), None);
    }

    proptest! {
        #[test]
        fn matches_linear_scan(
            prefixes in proptest::collection::vec((any::<u32>(), 0u8..=32), 1..40),
            probes in proptest::collection::vec(any::<u32>(), 1..40),
            v6 in any::<bool>(),
        ) {
            let mut t = PrefixTable::new();
            let mut list: Vec<(IpNet, usize)> = Vec::new();
            for (i, (a, l)) in prefixes.iter().enumerate() {
                let n = if v6 {
                    IpNet::new(IpAddr::V6(Ipv6Addr::from(u128::from(*a) << 96)), *l).expect("len")
                } else {
                    IpNet::new(IpAddr::V4(Ipv4Addr::from(*a)), *l).expect("len")
                }.trunc();
                t.insert(n, i);
                list.retain(|(p, _)| *p != n);
                list.push((n, i));
            }
            for p in probes {
                let addr = if v6 { IpAddr::V6(Ipv6Addr::from(u128::from(p) << 96)) } else { IpAddr::V4(Ipv4Addr::from(p)) };
                let expect = list.iter().filter(|(n, _)| n.contains(&addr)).max_by_key(|(n, _)| n.prefix_len()).map(|(_, v)| *v);
                prop_assert_eq!(t.longest_match(addr).copied(), expect);
            }
        }
    }
}
