//! STUN client, sans-IO: learn the public endpoint of a UDP socket and classify the NAT in front
//! of it (RFC 8489 Binding, RFC 5780 behaviour discovery).
//!
//! - [`codec`]: Binding requests and responses on the wire (through `stun-rs`).
//! - [`transaction`]: RFC 8489 §6.2.1 retransmission: RTO doubling, `Rc` requests, `Rm`·RTO
//!   final wait.
//! - [`client`]: [`StunClient`], outstanding transactions on one socket.
//! - [`classify`]: [`NatCheck`], RFC 5780's mapping, filtering and hairpinning tests, and the
//!   admin's name for the result ([`NatType`]).
//!
//! Nothing here touches a socket or a clock. A driver sends each [`Transmit`] from its UDP
//! socket, passes received datagrams and `now` in, and sleeps until the `poll_timeout` instant;
//! `sitelink_io::netcheck` is that driver. Requests and WireGuard can share a socket:
//! [`codec::is_stun`] tells them apart (the magic cookie), and the client hands back what is not
//! STUN ([`client::Input::NotStun`]).

pub mod classify;
pub mod client;
pub mod codec;
pub mod transaction;

pub use classify::{FilteringBehavior, MappingBehavior, NatCheck, NatReport, NatType};
pub use client::{Completed, Input, Outcome, StunClient};
pub use codec::{Change, TransactionId};
pub use transaction::RetransmitPolicy;

use std::net::SocketAddr;

/// A datagram to send from the STUN client's socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Where to send it.
    pub dst: SocketAddr,
    /// The STUN message.
    pub payload: Vec<u8>,
}

/// A small deterministic RNG for the tests (xorshift64*; not for real transaction IDs).
#[cfg(test)]
pub(crate) mod test_rng {
    pub(crate) struct TestRng(pub(crate) u64);

    impl rand_core::RngCore for TestRng {
        fn next_u32(&mut self) -> u32 {
            (self.next_u64() >> 32) as u32
        }

        fn next_u64(&mut self) -> u64 {
            let mut x = self.0 | 1;
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            self.0 = x;
            x.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn fill_bytes(&mut self, dest: &mut [u8]) {
            for chunk in dest.chunks_mut(8) {
                let bytes = self.next_u64().to_le_bytes();
                chunk.copy_from_slice(&bytes[..chunk.len()]);
            }
        }

        fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
            self.fill_bytes(dest);
            Ok(())
        }
    }

    impl rand_core::CryptoRng for TestRng {}
}
