//! Which addresses the pool may hand out: its ranges, minus exclusions, minus the network and
//! broadcast address of every range shorter than /31 (innernet's `is_assignable` rule).

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use super::config::AddressRange;
use super::pool::PoolError;

/// One pool range and the first and last address of it that may be handed out.
#[derive(Debug, Clone, Copy)]
struct Block {
    net: Ipv4Net,
    first: u32,
    last: u32,
}

/// The pool's address space, validated.
#[derive(Debug, Clone)]
pub(super) struct AddressSpace {
    /// Sorted by first address; never overlapping.
    blocks: Vec<Block>,
    /// Sorted, merged, inclusive `(first, last)` pairs.
    excluded: Vec<(u32, u32)>,
    /// How many addresses may be handed out.
    size: u64,
}

impl AddressSpace {
    /// Validates `ranges` and `exclude`: ranges are proper prefixes that do not overlap, every
    /// exclusion lies inside the ranges, and at least one address is left.
    pub(super) fn new(ranges: &[Ipv4Net], exclude: &[AddressRange]) -> Result<Self, PoolError> {
        if ranges.is_empty() {
            return Err(PoolError::NoRanges);
        }
        let mut blocks = Vec::with_capacity(ranges.len());
        for &net in ranges {
            if net.network() != net.addr() {
                return Err(PoolError::RangeHostBits {
                    range: net,
                    network: net.trunc(),
                });
            }
            let (network, broadcast) = (u32::from(net.network()), u32::from(net.broadcast()));
            let (first, last) = if net.prefix_len() < 31 {
                (network + 1, broadcast - 1)
            } else {
                (network, broadcast)
            };
            blocks.push(Block { net, first, last });
        }
        blocks.sort_by_key(|b| b.net.network());
        for pair in blocks.windows(2) {
            if pair[0].net.broadcast() >= pair[1].net.network() {
                return Err(PoolError::OverlappingRanges {
                    first: pair[0].net,
                    second: pair[1].net,
                });
            }
        }

        let mut excluded = Vec::with_capacity(exclude.len());
        for range in exclude {
            let (lo, hi) = (u32::from(range.first()), u32::from(range.last()));
            let covered: u64 = blocks
                .iter()
                .map(|b| {
                    let (n, bc) = (u32::from(b.net.network()), u32::from(b.net.broadcast()));
                    let (from, to) = (lo.max(n), hi.min(bc));
                    if from <= to {
                        u64::from(to - from) + 1
                    } else {
                        0
                    }
                })
                .sum();
            if covered != range.len() {
                return Err(PoolError::ExclusionOutsideRanges { exclusion: *range });
            }
            excluded.push((lo, hi));
        }
        excluded.sort_unstable();
        let mut merged: Vec<(u32, u32)> = Vec::with_capacity(excluded.len());
        for (lo, hi) in excluded {
            match merged.last_mut() {
                Some(last) if u64::from(lo) <= u64::from(last.1) + 1 => last.1 = last.1.max(hi),
                _ => merged.push((lo, hi)),
            }
        }

        let mut space = Self {
            blocks,
            excluded: merged,
            size: 0,
        };
        space.size = space
            .blocks
            .iter()
            .map(|b| {
                let all = u64::from(b.last - b.first) + 1;
                let gone: u64 = space
                    .excluded
                    .iter()
                    .map(|&(lo, hi)| {
                        let (from, to) = (lo.max(b.first), hi.min(b.last));
                        if from <= to {
                            u64::from(to - from) + 1
                        } else {
                            0
                        }
                    })
                    .sum();
                all - gone
            })
            .sum();
        if space.size == 0 {
            return Err(PoolError::NoAssignableAddresses);
        }
        Ok(space)
    }

    /// How many addresses may be handed out.
    pub(super) fn size(&self) -> u64 {
        self.size
    }

    /// The range `address` is in, if any.
    pub(super) fn range_of(&self, address: Ipv4Addr) -> Option<Ipv4Net> {
        self.block_of(u32::from(address)).map(|b| b.net)
    }

    /// Whether `address` is excluded.
    pub(super) fn is_excluded(&self, address: Ipv4Addr) -> bool {
        self.exclusion_of(u32::from(address)).is_some()
    }

    /// Whether `address` may be handed out: inside a range, not that range's network or
    /// broadcast address (below /31), not excluded.
    pub(super) fn is_assignable(&self, address: Ipv4Addr) -> bool {
        let a = u32::from(address);
        self.block_of(a)
            .is_some_and(|b| b.first <= a && a <= b.last && self.exclusion_of(a).is_none())
    }

    /// The first assignable address at or after `start`, wrapping around to the lowest one, for
    /// which `taken` is false; `None` when every assignable address is taken.
    pub(super) fn find_free(
        &self,
        start: Ipv4Addr,
        mut taken: impl FnMut(Ipv4Addr) -> bool,
    ) -> Option<Ipv4Addr> {
        let start = u32::from(start);
        // Blocks from the one holding (or following) `start`, then the ones before it.
        let split = self.blocks.partition_point(|b| b.last < start);
        let order = self.blocks[split..]
            .iter()
            .map(|b| (b, b.first.max(start)))
            .chain(self.blocks.iter().take(split + 1).map(|b| (b, b.first)));
        for (block, from) in order {
            let mut a = from;
            while a <= block.last {
                if let Some(hi) = self.exclusion_of(a) {
                    match hi.checked_add(1) {
                        Some(next) => a = next,
                        None => break,
                    }
                    continue;
                }
                let address = Ipv4Addr::from(a);
                if !taken(address) {
                    return Some(address);
                }
                match a.checked_add(1) {
                    Some(next) => a = next,
                    None => break,
                }
            }
        }
        None
    }

    /// The block holding `a`.
    fn block_of(&self, a: u32) -> Option<&Block> {
        let i = self
            .blocks
            .partition_point(|b| u32::from(b.net.broadcast()) < a);
        self.blocks
            .get(i)
            .filter(|b| u32::from(b.net.network()) <= a)
    }

    /// The last address of the exclusion holding `a`.
    fn exclusion_of(&self, a: u32) -> Option<u32> {
        let i = self.excluded.partition_point(|&(_, hi)| hi < a);
        self.excluded
            .get(i)
            .filter(|&&(lo, _)| lo <= a)
            .map(|&(_, hi)| hi)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().expect("prefix")
    }

    fn range(s: &str) -> AddressRange {
        s.parse().expect("range")
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().expect("address")
    }

    #[test]
    fn network_and_broadcast_are_not_assignable_below_31() {
        let space = AddressSpace::new(&[net("10.0.0.0/30")], &[]).expect("valid");
        assert_eq!(space.size(), 2);
        assert!(!space.is_assignable(ip("10.0.0.0")));
        assert!(space.is_assignable(ip("10.0.0.1")));
        assert!(space.is_assignable(ip("10.0.0.2")));
        assert!(!space.is_assignable(ip("10.0.0.3")));
        assert!(space.range_of(ip("10.0.0.3")).is_some());
        assert!(space.range_of(ip("10.0.0.4")).is_none());
    }

    #[test]
    fn slash_31_and_32_use_every_address() {
        let space =
            AddressSpace::new(&[net("10.0.0.0/31"), net("10.0.1.7/32")], &[]).expect("valid");
        assert_eq!(space.size(), 3);
        for a in ["10.0.0.0", "10.0.0.1", "10.0.1.7"] {
            assert!(space.is_assignable(ip(a)), "{a}");
        }
        assert_eq!(space.range_of(ip("10.0.1.7")), Some(net("10.0.1.7/32")));
    }

    #[test]
    fn exclusions_are_skipped_and_merged() {
        let space = AddressSpace::new(
            &[net("10.77.100.0/24")],
            &[
                range("10.77.100.1"),
                range("10.77.100.2-10.77.100.9"),
                range("10.77.100.5-10.77.100.12"),
            ],
        )
        .expect("valid");
        assert_eq!(space.size(), 254 - 12);
        assert!(space.is_excluded(ip("10.77.100.12")));
        assert!(!space.is_assignable(ip("10.77.100.12")));
        assert_eq!(
            space.find_free(ip("0.0.0.0"), |_| false),
            Some(ip("10.77.100.13"))
        );
    }

    #[test]
    fn find_free_wraps_around() {
        let space =
            AddressSpace::new(&[net("10.0.0.0/29"), net("10.0.1.0/30")], &[]).expect("valid");
        assert_eq!(
            space.find_free(ip("10.0.1.2"), |a| a == ip("10.0.1.2")),
            Some(ip("10.0.0.1"))
        );
        assert_eq!(
            space.find_free(ip("10.0.0.7"), |_| false),
            Some(ip("10.0.1.1"))
        );
        assert_eq!(space.find_free(ip("10.0.0.3"), |_| true), None);
    }

    #[test]
    fn bad_spaces_are_refused() {
        assert!(matches!(
            AddressSpace::new(&[], &[]),
            Err(PoolError::NoRanges)
        ));
        assert!(matches!(
            AddressSpace::new(&[net("10.0.0.5/24")], &[]),
            Err(PoolError::RangeHostBits { .. })
        ));
        assert!(matches!(
            AddressSpace::new(&[net("10.0.0.0/24"), net("10.0.0.128/25")], &[]),
            Err(PoolError::OverlappingRanges { .. })
        ));
        assert!(matches!(
            AddressSpace::new(&[net("10.0.0.0/24")], &[range("10.0.0.250-10.0.1.3")]),
            Err(PoolError::ExclusionOutsideRanges { .. })
        ));
        assert!(matches!(
            AddressSpace::new(&[net("10.0.0.0/30")], &[range("10.0.0.1-10.0.0.2")]),
            Err(PoolError::NoAssignableAddresses)
        ));
        // An exclusion may span two adjacent ranges.
        assert!(AddressSpace::new(
            &[net("10.0.0.0/25"), net("10.0.0.128/25")],
            &[range("10.0.0.120-10.0.0.130")]
        )
        .is_ok());
    }
}
