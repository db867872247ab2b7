//! Arbitrary bytes into the STUN client's receive path (`sitelink_core::stun`): the quick
//! `is_stun` test, the `stun-rs` decoder behind `codec::decode`, and a `StunClient` with an
//! outstanding transaction whose ID the input carries (so responses reach the matching code).
//! Must not panic; whatever decodes passed `is_stun`, and a decoded message keeps the
//! transaction ID of its header.
#![no_main]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use sitelink_core::stun::client::{Input, StunClient};
use sitelink_core::stun::codec::{self, Change, Message, TransactionId};
use sitelink_core::stun::RetransmitPolicy;

/// Hands out the fuzz input's transaction ID (bytes 8..20) as the "random" one.
struct FixedId([u8; 12]);

impl rand_core::RngCore for FixedId {
    fn next_u32(&mut self) -> u32 {
        0
    }
    fn next_u64(&mut self) -> u64 {
        0
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        for (d, s) in dest.iter_mut().zip(self.0.iter().cycle()) {
            *d = *s;
        }
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let decoded = codec::decode(data);
    if decoded.is_ok() {
        assert!(codec::is_stun(data));
        let id = match &decoded {
            Ok(
                Message::Success { id, .. } | Message::Error { id, .. } | Message::Request { id },
            ) => *id,
            Err(_) => unreachable!(),
        };
        assert_eq!(&id.0[..], &data[8..20]);
    }

    let mut id = [0u8; 12];
    if let Some(header_id) = data.get(8..20) {
        id.copy_from_slice(header_id);
    }
    let server: SocketAddr = "198.51.100.10:3478".parse().expect("literal");
    let now = Instant::now();
    let mut client = StunClient::new(RetransmitPolicy::NETCHECK);
    let sent = client.send_binding(server, Change::NONE, now, &mut FixedId(id));
    assert_eq!(sent, TransactionId(id));
    let input = client.handle_input(server, data, now + Duration::from_millis(1));
    match input {
        Input::Answered(answered) => {
            assert_eq!(answered, sent);
            assert!(client.poll_event().is_some());
        }
        Input::NotStun => assert!(!codec::is_stun(data)),
        Input::Request(_) | Input::Stray => {}
    }
    client.handle_timeout(now + Duration::from_secs(10));
});
