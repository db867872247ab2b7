//! [`StunClient`]: outstanding Binding transactions on one UDP socket, sans-IO.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand_core::RngCore;

use super::codec::{self, Change, Message, TransactionId};
use super::transaction::{RetransmitPolicy, RetransmitTimer, TimerAction};
use super::Transmit;

/// What came back for a Binding transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A success response.
    Mapped {
        /// Our address as the server saw it (XOR-MAPPED-ADDRESS).
        mapped: SocketAddr,
        /// The server's alternate address (RFC 5780 OTHER-ADDRESS), if it offers one.
        other_address: Option<SocketAddr>,
        /// Where the response came from, as the socket saw it.
        from: SocketAddr,
    },
    /// An error response, e.g. 420 (Unknown Attribute) for a CHANGE-REQUEST the server lacks.
    Error {
        /// The STUN error code.
        code: u16,
        /// The server's reason phrase.
        reason: String,
    },
    /// No response within the retransmission policy's time.
    TimedOut,
}

/// A finished transaction, from [`StunClient::poll_event`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completed {
    /// The transaction.
    pub id: TransactionId,
    /// Where its requests went.
    pub server: SocketAddr,
    /// What it asked the server to change.
    pub change: Change,
    /// The result.
    pub outcome: Outcome,
    /// The round-trip time, when the response answered the first request (Karn's rule).
    pub rtt: Option<Duration>,
}

/// What [`StunClient::handle_input`] made of a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Input {
    /// Not STUN: hand it to whoever else uses the socket (WireGuard).
    NotStun,
    /// A response to an outstanding transaction; [`StunClient::poll_event`] has it.
    Answered(TransactionId),
    /// A Binding request (a NAT hairpinning our own request back, or someone probing us).
    Request(TransactionId),
    /// STUN, but nothing we wait for: a late response to a finished transaction, a duplicate,
    /// or a malformed message. Drop it.
    Stray,
}

struct Pending {
    server: SocketAddr,
    change: Change,
    request: Vec<u8>,
    timer: RetransmitTimer,
}

/// Binding transactions on one UDP socket.
///
/// A driver starts requests with [`StunClient::send_binding`], then loops: send everything
/// [`StunClient::poll_transmit`] yields; sleep until [`StunClient::poll_timeout`] or a datagram
/// arrives; feed datagrams to [`StunClient::handle_input`] and expiries to
/// [`StunClient::handle_timeout`]; collect results from [`StunClient::poll_event`]. It reads no
/// clock and draws no randomness of its own: `now` and the RNG for transaction IDs come in.
///
/// Responses are matched by transaction ID only, not by source address: RFC 5780's
/// CHANGE-REQUEST answers come from the server's other address on purpose.
pub struct StunClient {
    policy: RetransmitPolicy,
    pending: BTreeMap<TransactionId, Pending>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Completed>,
}

impl StunClient {
    /// A client whose transactions retransmit per `policy`.
    pub fn new(policy: RetransmitPolicy) -> Self {
        Self {
            policy,
            pending: BTreeMap::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    /// Starts a Binding transaction to `server` asking for `change`; its first request is
    /// queued for [`StunClient::poll_transmit`] at once.
    pub fn send_binding<R: RngCore + ?Sized>(
        &mut self,
        server: SocketAddr,
        change: Change,
        now: Instant,
        rng: &mut R,
    ) -> TransactionId {
        let mut id = TransactionId([0; 12]);
        loop {
            rng.fill_bytes(&mut id.0);
            if !self.pending.contains_key(&id) {
                break;
            }
        }
        let request = codec::encode_request(id, change);
        tracing::debug!(%server, %id, ?change, "stun: Binding request");
        self.transmits.push_back(Transmit {
            dst: server,
            payload: request.clone(),
        });
        self.pending.insert(
            id,
            Pending {
                server,
                change,
                request,
                timer: RetransmitTimer::start(self.policy, now),
            },
        );
        id
    }

    /// Forgets transaction `id` (no event, no more retransmissions). Returns whether it was
    /// outstanding.
    pub fn cancel(&mut self, id: TransactionId) -> bool {
        self.pending.remove(&id).is_some()
    }

    /// Whether transaction `id` is still waiting for an answer.
    pub fn is_pending(&self, id: TransactionId) -> bool {
        self.pending.contains_key(&id)
    }

    /// Handles a datagram that arrived from `from` at `now`.
    pub fn handle_input(&mut self, from: SocketAddr, bytes: &[u8], now: Instant) -> Input {
        if !codec::is_stun(bytes) {
            return Input::NotStun;
        }
        let msg = match codec::decode(bytes) {
            Ok(msg) => msg,
            Err(e) => {
                tracing::debug!(%from, error = %e, "stun: dropping a message");
                return Input::Stray;
            }
        };
        let (id, outcome) = match msg {
            Message::Request { id } => return Input::Request(id),
            Message::Success {
                id,
                mapped,
                other_address,
                ..
            } => (
                id,
                Outcome::Mapped {
                    mapped,
                    other_address,
                    from,
                },
            ),
            Message::Error { id, code, reason } => (id, Outcome::Error { code, reason }),
        };
        let Some(pending) = self.pending.remove(&id) else {
            tracing::debug!(%from, %id, "stun: response to no outstanding transaction (late or duplicate)");
            return Input::Stray;
        };
        let rtt = pending.timer.rtt_sample(now);
        tracing::debug!(server = %pending.server, %from, %id, ?outcome, ?rtt, "stun: Binding response");
        self.events.push_back(Completed {
            id,
            server: pending.server,
            change: pending.change,
            outcome,
            rtt,
        });
        Input::Answered(id)
    }

    /// Retransmits or gives up on the transactions whose timers are due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        let mut failed = Vec::new();
        for (id, pending) in &mut self.pending {
            match pending.timer.on_timeout(now) {
                TimerAction::Wait => {}
                TimerAction::Retransmit => {
                    tracing::trace!(server = %pending.server, %id, sent = pending.timer.requests_sent(), "stun: retransmitting");
                    self.transmits.push_back(Transmit {
                        dst: pending.server,
                        payload: pending.request.clone(),
                    });
                }
                TimerAction::GiveUp => failed.push(*id),
            }
        }
        for id in failed {
            if let Some(pending) = self.pending.remove(&id) {
                tracing::debug!(server = %pending.server, %id, "stun: no response, giving up");
                self.events.push_back(Completed {
                    id,
                    server: pending.server,
                    change: pending.change,
                    outcome: Outcome::TimedOut,
                    rtt: None,
                });
            }
        }
    }

    /// The next datagram to send.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next finished transaction.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Completed> {
        self.events.pop_front()
    }

    /// When [`StunClient::handle_timeout`] wants to be called; `None` when nothing is
    /// outstanding.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.pending.values().map(|p| p.timer.due()).min()
    }
}

#[cfg(test)]
mod tests {
    use super::super::codec::server;
    use super::super::test_rng::TestRng;
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("test address")
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    const SERVER: &str = "198.51.100.10:3478";
    const MAPPED: &str = "203.0.113.5:40000";

    #[test]
    fn answered_first_time() {
        let t0 = Instant::now();
        let mut client = StunClient::new(RetransmitPolicy::RFC8489);
        let id = client.send_binding(addr(SERVER), Change::NONE, t0, &mut TestRng(1));
        let tx = client.poll_transmit().expect("first request");
        assert_eq!(tx.dst, addr(SERVER));
        assert_eq!(server::parse_request(&tx.payload), Some((id, Change::NONE)));
        assert_eq!(client.poll_timeout(), Some(t0 + ms(500)));

        let response = server::success(id, addr(MAPPED), None);
        assert_eq!(
            client.handle_input(addr(SERVER), &response, t0 + ms(40)),
            Input::Answered(id)
        );
        let done = client.poll_event().expect("event");
        assert_eq!(done.rtt, Some(ms(40)));
        assert_eq!(
            done.outcome,
            Outcome::Mapped {
                mapped: addr(MAPPED),
                other_address: None,
                from: addr(SERVER)
            }
        );
        assert_eq!(client.poll_timeout(), None);
        // The same response again (a duplicate, or a retransmission's answer): stray.
        assert_eq!(
            client.handle_input(addr(SERVER), &response, t0 + ms(41)),
            Input::Stray
        );
        assert_eq!(client.poll_event(), None);
    }

    #[test]
    fn lost_requests_are_retransmitted_and_a_late_answer_still_counts() {
        let t0 = Instant::now();
        let mut client = StunClient::new(RetransmitPolicy::RFC8489);
        let id = client.send_binding(addr(SERVER), Change::NONE, t0, &mut TestRng(2));
        let first = client.poll_transmit().expect("first");
        // The first two requests are lost.
        client.handle_timeout(t0 + ms(500));
        let second = client.poll_transmit().expect("retransmission");
        assert_eq!(second, first, "a retransmission is the same request");
        client.handle_timeout(t0 + ms(1000));
        assert_eq!(client.poll_transmit(), None, "not due before 1500 ms");
        client.handle_timeout(t0 + ms(1500));
        assert!(client.poll_transmit().is_some());
        // The answer to the first request arrives late, after the third went out.
        let response = server::success(id, addr(MAPPED), None);
        assert_eq!(
            client.handle_input(addr(SERVER), &response, t0 + ms(1600)),
            Input::Answered(id)
        );
        let done = client.poll_event().expect("event");
        assert_eq!(done.rtt, None, "ambiguous after a retransmission");
        assert!(matches!(done.outcome, Outcome::Mapped { .. }));
    }

    #[test]
    fn silence_times_out_after_seven_requests_and_late_answer_is_stray() {
        let t0 = Instant::now();
        let mut client = StunClient::new(RetransmitPolicy::RFC8489);
        let id = client.send_binding(addr(SERVER), Change::NONE, t0, &mut TestRng(3));
        let mut sent = 0;
        let mut now = t0;
        while let Some(due) = client.poll_timeout() {
            while client.poll_transmit().is_some() {
                sent += 1;
            }
            now = due;
            client.handle_timeout(now);
        }
        assert_eq!(sent, 7);
        assert_eq!(now - t0, ms(39_500));
        let done = client.poll_event().expect("timeout event");
        assert_eq!((done.id, done.outcome), (id, Outcome::TimedOut));
        // An answer after giving up is not an event.
        let response = server::success(id, addr(MAPPED), None);
        assert_eq!(
            client.handle_input(addr(SERVER), &response, now + ms(1)),
            Input::Stray
        );
        assert_eq!(client.poll_event(), None);
    }

    #[test]
    fn demultiplexes() {
        let t0 = Instant::now();
        let mut client = StunClient::new(RetransmitPolicy::NETCHECK);
        let mut rng = TestRng(4);
        let a = client.send_binding(addr(SERVER), Change::NONE, t0, &mut rng);
        let b = client.send_binding(addr(SERVER), Change::PORT, t0, &mut rng);
        assert_ne!(a, b);
        while client.poll_transmit().is_some() {}
        // WireGuard traffic on the same socket is left alone.
        assert_eq!(
            client.handle_input(addr(SERVER), &[4, 0, 0, 0, 1, 2, 3, 4], t0),
            Input::NotStun
        );
        // An error response for b; the answer for a comes from the other port.
        let err = server::error(b, 420, "Unknown Attribute");
        assert_eq!(
            client.handle_input(addr(SERVER), &err, t0 + ms(5)),
            Input::Answered(b)
        );
        let ok = server::success(a, addr(MAPPED), None);
        assert_eq!(
            client.handle_input(addr("198.51.100.10:3479"), &ok, t0 + ms(6)),
            Input::Answered(a)
        );
        let first = client.poll_event().expect("b");
        assert_eq!(first.id, b);
        assert_eq!(first.change, Change::PORT);
        assert!(matches!(first.outcome, Outcome::Error { code: 420, .. }));
        let second = client.poll_event().expect("a");
        assert!(
            matches!(second.outcome, Outcome::Mapped { from, .. } if from == addr("198.51.100.10:3479"))
        );
        // Our own request, hairpinned back.
        let c = client.send_binding(addr(MAPPED), Change::NONE, t0, &mut rng);
        let hairpinned = client.poll_transmit().expect("request").payload;
        assert_eq!(
            client.handle_input(addr(MAPPED), &hairpinned, t0 + ms(1)),
            Input::Request(c)
        );
        assert!(client.cancel(c));
        assert!(!client.is_pending(c));
    }

    #[test]
    fn malformed_stun_is_stray() {
        let t0 = Instant::now();
        let mut client = StunClient::new(RetransmitPolicy::NETCHECK);
        let id = client.send_binding(addr(SERVER), Change::NONE, t0, &mut TestRng(5));
        let mut response = server::success(id, addr(MAPPED), None);
        // Break the attribute's length so the codec refuses it.
        response[23] = 0x7c;
        assert_eq!(
            client.handle_input(addr(SERVER), &response, t0),
            Input::Stray
        );
        assert!(client.is_pending(id));
    }
}
