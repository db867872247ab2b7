//! External ports of the masquerade pools: which are taken, and which wait out their reuse delay.
//!
//! One bitmap of 65 536 bits (8 KiB) per pool address and protocol, made on first use; a set bit
//! means the port is in use, held back after its mapping ended, or reserved by a port forward.
//! Ports below 1024 and the others are separate ranges (RFC 4787 REQ-3): a well-known source
//! port maps to a well-known port.

use std::collections::VecDeque;
use std::net::Ipv4Addr;

use super::packet::Proto;

const WORDS: usize = 65_536 / 64;

/// Lowest port of the ephemeral range; below it, the well-known range (port 0 is never used).
pub(crate) const EPHEMERAL_START: u16 = 1024;

/// The range an inside port maps into.
pub(crate) fn range_for(port: u16) -> (u16, u16) {
    if port < EPHEMERAL_START {
        (1, EPHEMERAL_START - 1)
    } else {
        (EPHEMERAL_START, u16::MAX)
    }
}

struct Bitmap(Box<[u64; WORDS]>);

impl Bitmap {
    fn new() -> Self {
        Bitmap(Box::new([0; WORDS]))
    }
    fn get(&self, port: u16) -> bool {
        self.0[usize::from(port / 64)] & (1 << (port % 64)) != 0
    }
    fn set(&mut self, port: u16, v: bool) {
        let w = &mut self.0[usize::from(port / 64)];
        if v {
            *w |= 1 << (port % 64);
        } else {
            *w &= !(1 << (port % 64));
        }
    }
    /// The first clear bit in `from..=to`.
    fn first_clear(&self, from: u16, to: u16) -> Option<u16> {
        if from > to {
            return None;
        }
        let (fw, tw) = (usize::from(from / 64), usize::from(to / 64));
        for w in fw..=tw {
            let mut free = !self.0[w];
            if w == fw {
                free &= u64::MAX << (from % 64);
            }
            if w == tw {
                free &= u64::MAX >> (63 - to % 64);
            }
            if free != 0 {
                // w < 1024 and the bit < 64, so this fits in u16.
                return Some((w * 64) as u16 + free.trailing_zeros() as u16);
            }
        }
        None
    }
}

/// A port reservation made by a port forward, applied to each bitmap as it is made.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Reservation {
    pub(crate) proto: Proto,
    /// `None`: on every pool address.
    pub(crate) addr: Option<Ipv4Addr>,
    pub(crate) port: u16,
}

/// The port bitmaps of every pool address.
pub(crate) struct PortSpaces {
    addrs: Vec<Ipv4Addr>,
    spaces: Vec<Option<Bitmap>>,
    reservations: Vec<Reservation>,
    /// Released ports and the second they become free, oldest first.
    held: VecDeque<(u32, u16, u32)>,
    reuse_delay: u32,
    /// A configured range every mapping takes its port from, instead of [`range_for`].
    range: Option<(u16, u16)>,
}

impl PortSpaces {
    pub(crate) fn new(
        addrs: Vec<Ipv4Addr>,
        reservations: Vec<Reservation>,
        reuse_delay: u32,
    ) -> Self {
        let spaces = (0..addrs.len() * 3).map(|_| None).collect();
        Self {
            addrs,
            spaces,
            reservations,
            held: VecDeque::new(),
            reuse_delay,
            range: None,
        }
    }

    /// Takes every port from `range` (inclusive) instead of the well-known/ephemeral split.
    pub(crate) fn with_range(mut self, range: Option<(u16, u16)>) -> Self {
        self.range = range.map(|(lo, hi)| (lo.max(1), hi.max(lo.max(1))));
        self
    }

    /// The pool address with this index.
    pub(crate) fn addr(&self, pool: u32) -> Ipv4Addr {
        self.addrs[pool as usize]
    }

    fn space(&mut self, pool: u32, proto: Proto) -> &mut Bitmap {
        let i = pool as usize * 3 + proto.index();
        let addr = self.addrs[pool as usize];
        let reservations = &self.reservations;
        self.spaces[i].get_or_insert_with(|| {
            let mut b = Bitmap::new();
            b.set(0, true);
            for r in reservations {
                if r.proto == proto && r.addr.is_none_or(|a| a == addr) {
                    b.set(r.port, true);
                }
            }
            b
        })
    }

    /// Takes a port on pool address `pool`: `preferred` if it is free (port preservation), else
    /// the first free port of the same range at or after `hint` (wrapping around).
    pub(crate) fn allocate(
        &mut self,
        pool: u32,
        proto: Proto,
        preferred: u16,
        hint: u16,
    ) -> Option<u16> {
        let (lo, hi) = self.range.unwrap_or_else(|| range_for(preferred));
        let b = self.space(pool, proto);
        let port = if (lo..=hi).contains(&preferred) && !b.get(preferred) {
            Some(preferred)
        } else {
            let start = lo + hint % (hi - lo + 1);
            b.first_clear(start, hi)
                .or_else(|| b.first_clear(lo, start.saturating_sub(1)))
        }?;
        b.set(port, true);
        Some(port)
    }

    /// Gives a port back; it stays unused for the reuse delay (`now`: seconds since the epoch).
    pub(crate) fn release(&mut self, pool: u32, proto: Proto, port: u16, now: u32) {
        let space = pool * 3 + proto.index() as u32;
        if self.reuse_delay == 0 {
            self.space(pool, proto).set(port, false);
        } else {
            self.held
                .push_back((space, port, now.saturating_add(self.reuse_delay)));
        }
    }

    /// Frees the ports whose delay is over. Returns how many.
    pub(crate) fn expire(&mut self, now: u32) -> usize {
        let mut n = 0;
        while let Some(&(space, port, until)) = self.held.front() {
            if until > now {
                break;
            }
            self.held.pop_front();
            if let Some(b) = self.spaces[space as usize].as_mut() {
                b.set(port, false);
            }
            n += 1;
        }
        n
    }

    /// Ports waiting out their reuse delay.
    pub(crate) fn held(&self) -> usize {
        self.held.len()
    }

    /// Heap bytes of the bitmaps and the hold queue.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.spaces.iter().flatten().count() * WORDS * 8
            + self.spaces.capacity() * size_of::<Option<Bitmap>>()
            + self.held.capacity() * size_of::<(u32, u16, u32)>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spaces(delay: u32) -> PortSpaces {
        PortSpaces::new(vec![Ipv4Addr::new(203, 0, 113, 1)], Vec::new(), delay)
    }

    #[test]
    fn preserves_then_scans_within_range() {
        let mut s = spaces(0);
        assert_eq!(s.allocate(0, Proto::Udp, 5000, 0), Some(5000));
        let next = s.allocate(0, Proto::Udp, 5000, 7).expect("a port");
        assert!(next >= 1024 && next != 5000);
        // Well-known source ports stay well-known.
        assert_eq!(s.allocate(0, Proto::Udp, 53, 0), Some(53));
        let p = s.allocate(0, Proto::Udp, 53, 9000).expect("a port");
        assert!((1..1024).contains(&p));
        // Protocols have separate spaces.
        assert_eq!(s.allocate(0, Proto::Tcp, 5000, 0), Some(5000));
    }

    #[test]
    fn exhausts_the_low_range() {
        let mut s = spaces(0);
        for i in 0..1023u16 {
            assert!(s.allocate(0, Proto::Tcp, 80, i).is_some());
        }
        assert_eq!(s.allocate(0, Proto::Tcp, 80, 0), None);
        // The ephemeral range is untouched.
        assert_eq!(s.allocate(0, Proto::Tcp, 40000, 0), Some(40000));
    }

    #[test]
    fn released_ports_are_held() {
        let mut s = spaces(120);
        assert_eq!(s.allocate(0, Proto::Udp, 5000, 0), Some(5000));
        s.release(0, Proto::Udp, 5000, 10);
        assert_ne!(s.allocate(0, Proto::Udp, 5000, 0), Some(5000));
        assert_eq!(s.expire(129), 0);
        assert_eq!(s.expire(130), 1);
        assert_eq!(s.allocate(0, Proto::Udp, 5000, 0), Some(5000));
    }

    #[test]
    fn configured_range_holds_every_port() {
        let mut s = spaces(0).with_range(Some((20000, 20001)));
        assert_eq!(s.allocate(0, Proto::Udp, 20001, 0), Some(20001));
        assert_eq!(s.allocate(0, Proto::Udp, 53, 0), Some(20000));
        assert_eq!(s.allocate(0, Proto::Udp, 40000, 5), None);
    }

    #[test]
    fn reservations_apply() {
        let mut s = PortSpaces::new(
            vec![Ipv4Addr::new(203, 0, 113, 1)],
            vec![Reservation {
                proto: Proto::Tcp,
                addr: None,
                port: 8443,
            }],
            0,
        );
        assert_ne!(s.allocate(0, Proto::Tcp, 8443, 0), Some(8443));
        assert_eq!(s.allocate(0, Proto::Udp, 8443, 0), Some(8443));
    }
}
