//! Incremental Internet checksum updates (RFC 1624).
//!
//! When a NAT rewrites a few 16-bit words of a packet it does not recompute the checksums over the
//! whole packet: it adds the difference. RFC 1624 eqn. 3, `HC' = ~(~HC + ~m + m')`, summed over
//! every changed word `m -> m'` in one's complement arithmetic, gives the same value as a full
//! recomputation (the property tests in `nat::proptests` check that against etherparse).

/// The one's complement sum of `~m + m'` over the words a rewrite changed; applied to every
/// checksum that covers those words.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Delta(u32);

impl Delta {
    /// Records that a 16-bit word changed from `old` to `new`.
    pub(crate) fn word(&mut self, old: u16, new: u16) {
        self.0 += u32::from(!old) + u32::from(new);
        self.fold_once();
    }

    /// Records that a 32-bit field (an IPv4 address) changed, as its two 16-bit words.
    pub(crate) fn addr(&mut self, old: [u8; 4], new: [u8; 4]) {
        self.word(
            u16::from_be_bytes([old[0], old[1]]),
            u16::from_be_bytes([new[0], new[1]]),
        );
        self.word(
            u16::from_be_bytes([old[2], old[3]]),
            u16::from_be_bytes([new[2], new[3]]),
        );
    }

    /// Records every changed word between two equally long, 16-bit aligned snapshots of the same
    /// region (`old` before a rewrite, `new` after). An odd trailing byte counts as the high byte
    /// of a word padded with zero, as in the checksum itself.
    pub(crate) fn region(&mut self, old: &[u8], new: &[u8]) {
        for (o, n) in old.chunks(2).zip(new.chunks(2)) {
            let o = u16::from_be_bytes([o[0], o.get(1).copied().unwrap_or(0)]);
            let n = u16::from_be_bytes([n[0], n.get(1).copied().unwrap_or(0)]);
            if o != n {
                self.word(o, n);
            }
        }
    }

    /// Adds another delta (changes covered by both checksums, e.g. an address in the IPv4 header
    /// and in the TCP pseudo-header).
    pub(crate) fn add(&mut self, other: Delta) {
        self.0 += other.0;
        self.fold_once();
    }

    /// Whether nothing changed.
    pub(crate) fn is_empty(self) -> bool {
        self.0 == 0
    }

    fn fold_once(&mut self) {
        self.0 = (self.0 & 0xffff) + (self.0 >> 16);
    }

    /// The checksum `check` updated for the recorded changes (RFC 1624 eqn. 3).
    pub(crate) fn apply(self, check: u16) -> u16 {
        if self.is_empty() {
            return check;
        }
        let mut sum = u32::from(!check) + self.0;
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        // `sum` fits in 16 bits after folding.
        !(sum as u16)
    }

    /// As [`Delta::apply`] for a UDP checksum: zero (no checksum sent) stays zero, and a computed
    /// zero is sent as `0xffff` (RFC 768).
    pub(crate) fn apply_udp(self, check: u16) -> u16 {
        if check == 0 {
            return 0;
        }
        match self.apply(check) {
            0 => 0xffff,
            c => c,
        }
    }
}

/// The full Internet checksum of `data` (for tests).
#[cfg(test)]
pub(crate) fn full(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for chunk in data.chunks(2) {
        sum += u32::from(u16::from_be_bytes([
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
        ]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Writes a correct checksum at `at` (a 16-bit word) over `data`.
    fn fill(data: &mut [u8], at: usize) {
        data[at..at + 2].copy_from_slice(&[0, 0]);
        let c = full(data);
        data[at..at + 2].copy_from_slice(&c.to_be_bytes());
    }

    #[test]
    fn rfc1624_example() {
        // RFC 1624 section 4: HC = 0xDD2F, m = 0x5555 -> m' = 0x3285 gives HC' = 0x0000.
        let mut d = Delta::default();
        d.word(0x5555, 0x3285);
        assert_eq!(d.apply(0xdd2f), 0x0000);
    }

    #[test]
    fn udp_zero_stays_zero() {
        let mut d = Delta::default();
        d.word(1, 2);
        assert_eq!(d.apply_udp(0), 0);
    }

    proptest! {
        #[test]
        fn incremental_equals_full(
            mut data in proptest::collection::vec(any::<u8>(), 4..64usize),
            changes in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        ) {
            // Keep an even length and put the checksum in the first word.
            if data.len() % 2 == 1 { data.pop(); }
            prop_assume!(data[2..].iter().any(|b| *b != 0));
            fill(&mut data, 0);
            let before = data.clone();
            for (i, v) in &changes {
                let at = 2 + i.index(data.len() - 2);
                data[at] = *v;
            }
            prop_assume!(data[2..].iter().any(|b| *b != 0));
            let mut d = Delta::default();
            d.region(&before[2..], &data[2..]);
            let old = u16::from_be_bytes([data[0], data[1]]);
            let incremental = d.apply(old);
            fill(&mut data, 0);
            let recomputed = u16::from_be_bytes([data[0], data[1]]);
            // 0x0000 and 0xffff are the same number in one's complement; a full computation over
            // data that is not all zero never yields 0xffff, and neither does eqn. 3.
            prop_assert_eq!(incremental, recomputed);
        }
    }
}
