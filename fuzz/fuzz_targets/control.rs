//! Arbitrary bytes into the control protocol's decoders (`sitelink_core::control`): as a
//! datagram on the gateway's shared port (`wire::classify` and the typed packet views, every
//! accessor read) and as a decrypted control message (`message::Message::parse`). Must not
//! panic; a message that decodes must encode again, to bytes that decode to the same message.
//!
//! The decoders take no keys or clock, so this target needs no corpus to get deep: any byte
//! string is a candidate message. Handshake and transport decryption are covered by the unit
//! tests in `gateway/core/src/control/` (tampered, replayed and garbage packets of every length).
#![no_main]

use sitelink_core::control::message::{Message, MessagePacket};
use sitelink_core::control::wire::{self, HandshakeInit, HandshakeResponse, PacketKind, Transport};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    // The outer layer, as the gateway sees a datagram.
    let is_control = wire::is_control_packet(data);
    if let Ok(kind) = wire::classify(data) {
        assert!(is_control, "a classified packet passes is_control_packet");
        match kind {
            PacketKind::HandshakeInit => {
                if let Ok(p) = HandshakeInit::new_checked(data) {
                    let _ = (p.sender_index(), p.header(), p.noise());
                    assert_eq!(data.len(), wire::INIT_LEN);
                }
            }
            PacketKind::HandshakeResponse => {
                if let Ok(p) = HandshakeResponse::new_checked(data) {
                    let _ = (p.receiver_index(), p.noise());
                    assert_eq!(data.len(), wire::RESPONSE_LEN);
                }
            }
            PacketKind::Transport => {
                if let Ok(p) = Transport::new_checked(data) {
                    let _ = (p.receiver_index(), p.nonce());
                    assert!(p.ciphertext().len() >= wire::TAG_LEN);
                    assert!(data.len() <= wire::MAX_DATAGRAM_LEN);
                }
            }
        }
    }

    // The inner layer, as a decrypted message.
    if let Ok(view) = MessagePacket::new_checked(data) {
        let _ = (view.message_type(), view.xid());
        for option in view.options() {
            if option.is_err() {
                break;
            }
        }
    }
    if let Ok(message) = Message::parse(data) {
        let bytes = message.emit().expect("a decoded message encodes again");
        assert!(
            bytes.len() <= data.len(),
            "re-encoding never grows a message"
        );
        assert_eq!(Message::parse(&bytes).as_ref(), Ok(&message));
    }
});
