//! The random source for traversal packets' nonces: a ChaCha20 CSPRNG seeded from the OS and
//! reseeded every [`RESEED_AFTER`] bytes, so that a relayed packet costs no `getrandom` system
//! call (each one draws a 24-byte XChaCha20-Poly1305 nonce).
//!
//! `rand_chacha` is already in the build (through `stun-rs`'s `rand`), but on `rand_core` 0.9;
//! the core takes `rand_core` 0.6's `CryptoRngCore`, hence the small adapter.

use rand_chacha::rand_core::{RngCore as _, SeedableRng as _};
use rand_chacha::ChaCha20Rng;
use rand_core::{CryptoRng, OsRng, RngCore};
use tracing::warn;

/// Bytes drawn between two reseeds from the OS (about 43 000 relayed packets).
const RESEED_AFTER: usize = 1 << 20;

/// A ChaCha20 CSPRNG that reseeds itself from [`OsRng`] now and then.
pub(super) struct NonceRng {
    rng: ChaCha20Rng,
    /// Bytes drawn since the last (re)seed.
    drawn: usize,
}

impl NonceRng {
    /// A generator seeded from the OS. Panics, like [`OsRng`], if the OS has no randomness.
    pub(super) fn new() -> Self {
        let mut seed = [0u8; 32];
        OsRng.fill_bytes(&mut seed);
        Self {
            rng: ChaCha20Rng::from_seed(seed),
            drawn: 0,
        }
    }

    /// Counts `n` bytes drawn and reseeds when [`RESEED_AFTER`] is reached. A failing OS
    /// source leaves the current stream in use (it is still a CSPRNG) and is retried later.
    fn account(&mut self, n: usize) {
        self.drawn += n;
        if self.drawn < RESEED_AFTER {
            return;
        }
        self.drawn = 0;
        let mut seed = [0u8; 32];
        match OsRng.try_fill_bytes(&mut seed) {
            Ok(()) => self.rng = ChaCha20Rng::from_seed(seed),
            Err(e) => warn!(error = %e, "traversal: reseeding the nonce generator failed"),
        }
    }
}

impl RngCore for NonceRng {
    fn next_u32(&mut self) -> u32 {
        self.account(4);
        self.rng.next_u32()
    }

    fn next_u64(&mut self) -> u64 {
        self.account(8);
        self.rng.next_u64()
    }

    fn fill_bytes(&mut self, dest: &mut [u8]) {
        self.account(dest.len());
        self.rng.fill_bytes(dest);
    }

    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

impl CryptoRng for NonceRng {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reseeding_changes_the_stream_and_draws_differ() {
        let mut rng = NonceRng::new();
        let (mut a, mut b) = ([0u8; 24], [0u8; 24]);
        rng.fill_bytes(&mut a);
        rng.fill_bytes(&mut b);
        assert_ne!(a, b);
        let before = rng.rng.get_seed();
        rng.drawn = RESEED_AFTER - 1;
        rng.fill_bytes(&mut a);
        assert_ne!(rng.rng.get_seed(), before, "not reseeded");
        assert_eq!(rng.drawn, 0);
    }
}
