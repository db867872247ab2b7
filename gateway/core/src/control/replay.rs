//! The sliding anti-replay window of a transport session.
//!
//! Transport packets carry an explicit 64-bit nonce because they travel over UDP, where they can
//! be lost, duplicated and reordered. A receiver accepts each nonce at most once and forgets
//! nonces that are more than [`WINDOW`] behind the highest one it accepted (the ring-of-words
//! bitmap of RFC 6479, as WireGuard uses it).
//!
//! Checking and marking are separate steps: [`ReplayWindow::check`] before decryption (cheap, and
//! it does not change the window), [`ReplayWindow::mark`] only after the packet authenticated, so
//! forged packets cannot move the window.

/// Bits in the bitmap.
const BITS: u64 = 2048;
/// Bits per word of the bitmap.
const WORD_BITS: u64 = u64::BITS as u64;
/// Words in the bitmap.
const WORDS: usize = (BITS / WORD_BITS) as usize;

/// How far behind the highest accepted nonce a nonce may be and still be accepted once.
///
/// One word of the ring is the one being filled, so the usable window is one word short of the
/// bitmap.
pub const WINDOW: u64 = BITS - WORD_BITS;

/// Why a nonce was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    /// The nonce was accepted before.
    #[error("nonce {0} was already received")]
    Duplicate(u64),
    /// The nonce is so far behind the newest one that the window has forgotten it.
    #[error("nonce {0} is older than the replay window")]
    TooOld(u64),
    /// `u64::MAX` is never a valid nonce (Noise reserves it).
    #[error("nonce {0} is reserved")]
    Reserved(u64),
}

/// Which nonces of a session were already received.
#[derive(Debug, Clone)]
pub struct ReplayWindow {
    /// One more than the highest accepted nonce; 0 while none was accepted.
    next: u64,
    /// Bit `n % BITS` is set when nonce `n` (within the window) was accepted.
    bitmap: [u64; WORDS],
}

impl Default for ReplayWindow {
    fn default() -> Self {
        Self::new()
    }
}

impl ReplayWindow {
    /// An empty window: every nonce but `u64::MAX` is acceptable.
    pub fn new() -> Self {
        Self {
            next: 0,
            bitmap: [0; WORDS],
        }
    }

    /// Whether `nonce` would be accepted, without remembering it.
    pub fn check(&self, nonce: u64) -> Result<(), ReplayError> {
        if nonce == u64::MAX {
            return Err(ReplayError::Reserved(nonce));
        }
        if nonce >= self.next {
            return Ok(());
        }
        if self.next - 1 - nonce >= WINDOW {
            return Err(ReplayError::TooOld(nonce));
        }
        let (word, bit) = position(nonce);
        if self.bitmap[word] & bit != 0 {
            return Err(ReplayError::Duplicate(nonce));
        }
        Ok(())
    }

    /// Checks `nonce` and remembers it; call only once the packet authenticated.
    pub fn mark(&mut self, nonce: u64) -> Result<(), ReplayError> {
        self.check(nonce)?;
        if nonce >= self.next {
            // Clear the words between the old newest nonce and this one (at most the whole ring).
            let current_word = self.next.saturating_sub(1) / WORD_BITS;
            let new_word = nonce / WORD_BITS;
            let to_clear = (new_word - current_word).min(WORDS as u64);
            for i in 1..=to_clear {
                let index = ((current_word + i) % WORDS as u64) as usize;
                self.bitmap[index] = 0;
            }
            self.next = nonce + 1;
        }
        let (word, bit) = position(nonce);
        self.bitmap[word] |= bit;
        Ok(())
    }
}

/// The word index and bit mask of `nonce` in the ring.
fn position(nonce: u64) -> (usize, u64) {
    let word = ((nonce / WORD_BITS) % WORDS as u64) as usize;
    (word, 1 << (nonce % WORD_BITS))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;

    #[test]
    fn in_order_once_each() {
        let mut w = ReplayWindow::new();
        for n in 0..5000 {
            assert_eq!(w.mark(n), Ok(()));
            assert_eq!(w.mark(n), Err(ReplayError::Duplicate(n)));
        }
    }

    #[test]
    fn reordered_within_window() {
        let mut w = ReplayWindow::new();
        w.mark(3000).expect("fresh");
        w.mark(3000 - WINDOW + 1).expect("just inside");
        assert_eq!(
            w.check(3000 - WINDOW),
            Err(ReplayError::TooOld(3000 - WINDOW))
        );
        assert_eq!(w.mark(2999), Ok(()));
        assert_eq!(w.mark(2999), Err(ReplayError::Duplicate(2999)));
    }

    #[test]
    fn big_jump_clears_the_ring() {
        let mut w = ReplayWindow::new();
        for n in 0..100 {
            w.mark(n).expect("fresh");
        }
        w.mark(1_000_000).expect("fresh");
        // Old bits must not make new nonces look duplicated.
        for n in (1_000_000 - WINDOW + 1)..1_000_000 {
            assert_eq!(w.check(n), Ok(()), "{n}");
        }
        assert_eq!(w.check(99), Err(ReplayError::TooOld(99)));
    }

    #[test]
    fn reserved_and_near_max() {
        let mut w = ReplayWindow::new();
        assert_eq!(w.mark(u64::MAX), Err(ReplayError::Reserved(u64::MAX)));
        w.mark(u64::MAX - 1).expect("largest valid nonce");
        assert_eq!(
            w.mark(u64::MAX - 1),
            Err(ReplayError::Duplicate(u64::MAX - 1))
        );
        w.mark(u64::MAX - 2).expect("inside the window");
    }

    #[test]
    fn check_does_not_remember() {
        let mut w = ReplayWindow::new();
        w.check(7).expect("fresh");
        w.check(7).expect("still fresh");
        w.mark(7).expect("fresh");
        assert!(w.check(7).is_err());
    }

    proptest! {
        /// Against a model that remembers everything: the window accepts exactly the nonces
        /// never seen that are within `WINDOW` of the newest.
        #[test]
        fn matches_a_model(nonces in proptest::collection::vec(0u64..6000, 1..400)) {
            let mut w = ReplayWindow::new();
            let mut seen = HashSet::new();
            let mut newest: Option<u64> = None;
            for n in nonces {
                let fresh = !seen.contains(&n);
                let in_window = newest.is_none_or(|top| n > top || top - n < WINDOW);
                let expected = fresh && in_window;
                prop_assert_eq!(w.mark(n).is_ok(), expected, "nonce {}", n);
                if expected {
                    seen.insert(n);
                    newest = Some(newest.map_or(n, |top| top.max(n)));
                }
            }
        }
    }
}
