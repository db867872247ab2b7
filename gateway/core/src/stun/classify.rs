//! [`NatCheck`]: what kind of NAT this socket sits behind (RFC 5780 §4), sans-IO.
//!
//! The order of the tests matters when they share one socket: every request we send opens the
//! NAT's filter towards its destination, so the filtering tests (which expect answers from
//! addresses we never wrote to) run before the mapping tests (which write to the server's other
//! address).
//!
//! 1. **Test I**: a Binding request to the first server that answers → our mapped address `M1`,
//!    and the server's OTHER-ADDRESS if it offers RFC 5780. `M1` equal to the socket's own
//!    address means no NAT. At the same time a request goes to `M1` itself: if the NAT hairpins
//!    it, it comes back to us.
//! 2. **Filtering** (only with OTHER-ADDRESS): CHANGE-REQUEST "other IP and port" and "other
//!    port", both to the primary address, at once. An answer to the first → endpoint-independent
//!    filtering; only to the second → address-dependent; neither → address-and-port-dependent.
//! 3. **Mapping**: with OTHER-ADDRESS, a request to (other IP, primary port) → `M2`; `M2 = M1` →
//!    endpoint-independent mapping; otherwise a request to (other IP, other port) → `M3`;
//!    `M3 = M2` → address-dependent, else address-and-port-dependent. Without OTHER-ADDRESS the
//!    other configured servers (on other IPs) stand in: the same mapped address from all →
//!    endpoint-independent, different → dependent (filtering then stays unknown).
//!
//! The admin's name for the NAT follows from both: no NAT → "open"; a dependent mapping →
//! "symmetric"; endpoint-independent mapping with endpoint-independent / address-dependent /
//! address-and-port-dependent filtering → "full-cone" / "restricted-cone" /
//! "port-restricted-cone"; anything not measured → "unknown".

use std::net::SocketAddr;
use std::time::Instant;

use rand_core::RngCore;
use serde::Serialize;

use super::client::{Completed, Input, Outcome, StunClient};
use super::codec::{Change, TransactionId};
use super::transaction::RetransmitPolicy;
use super::Transmit;

/// The NAT in the words admins use (the `nat_type` of `netcheck --json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum NatType {
    /// No NAT: the public endpoint is the socket's own address.
    Open,
    /// Endpoint-independent mapping and filtering: anyone may send to the mapped port.
    FullCone,
    /// Endpoint-independent mapping, address-dependent filtering.
    RestrictedCone,
    /// Endpoint-independent mapping, address-and-port-dependent filtering.
    PortRestrictedCone,
    /// The mapped port depends on the destination: STUN's answer is only good for the server.
    Symmetric,
    /// Not enough answers to tell.
    Unknown,
}

impl NatType {
    /// The `--json` spelling, e.g. `"port-restricted-cone"`.
    pub fn as_str(self) -> &'static str {
        match self {
            NatType::Open => "open",
            NatType::FullCone => "full-cone",
            NatType::RestrictedCone => "restricted-cone",
            NatType::PortRestrictedCone => "port-restricted-cone",
            NatType::Symmetric => "symmetric",
            NatType::Unknown => "unknown",
        }
    }

    /// A sentence for a person.
    pub fn describe(self) -> &'static str {
        match self {
            NatType::Open => "no NAT: this host's address is public",
            NatType::FullCone => {
                "full cone NAT: once mapped, anyone can reach this port (easy to traverse)"
            }
            NatType::RestrictedCone => {
                "restricted cone NAT: reachable from addresses we have sent to (hole punching works)"
            }
            NatType::PortRestrictedCone => {
                "port-restricted cone NAT: reachable from address:port pairs we have sent to \
                 (hole punching works)"
            }
            NatType::Symmetric => {
                "symmetric NAT: a new public port for each destination (hole punching rarely \
                 works; expect relaying unless the other side is easy)"
            }
            NatType::Unknown => "unknown: not enough answers to classify",
        }
    }
}

/// How the NAT picks the public endpoint (RFC 4787 §4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum MappingBehavior {
    /// No translation at all.
    NoNat,
    /// The same public endpoint for every destination.
    EndpointIndependent,
    /// A new public endpoint per destination address.
    AddressDependent,
    /// A new public endpoint per destination address and port.
    AddressAndPortDependent,
    /// The destination matters, but the test could not tell whether the port does (no RFC 5780
    /// server; two plain servers on different addresses disagreed).
    Dependent,
    /// Not measured.
    Unknown,
}

impl MappingBehavior {
    /// A phrase for a person.
    pub fn describe(self) -> &'static str {
        match self {
            MappingBehavior::NoNat => "none (no translation)",
            MappingBehavior::EndpointIndependent => {
                "endpoint-independent (same public port for every destination)"
            }
            MappingBehavior::AddressDependent => {
                "address-dependent (new public port per destination address)"
            }
            MappingBehavior::AddressAndPortDependent => {
                "address-and-port-dependent (new public port per destination)"
            }
            MappingBehavior::Dependent => "destination-dependent (public port changes)",
            MappingBehavior::Unknown => "not measured",
        }
    }
}

/// Which inbound packets the NAT lets through to a mapping (RFC 4787 §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FilteringBehavior {
    /// From anyone.
    EndpointIndependent,
    /// From addresses we have sent to.
    AddressDependent,
    /// From address:port pairs we have sent to.
    AddressAndPortDependent,
    /// Not measured: the server offers no RFC 5780 (OTHER-ADDRESS / CHANGE-REQUEST).
    Unknown,
}

impl FilteringBehavior {
    /// A phrase for a person.
    pub fn describe(self) -> &'static str {
        match self {
            FilteringBehavior::EndpointIndependent => "endpoint-independent (open to anyone)",
            FilteringBehavior::AddressDependent => {
                "address-dependent (only from addresses we sent to)"
            }
            FilteringBehavior::AddressAndPortDependent => {
                "address-and-port-dependent (only from address:port pairs we sent to)"
            }
            FilteringBehavior::Unknown => {
                "not measured (the STUN server does not offer RFC 5780 OTHER-ADDRESS)"
            }
        }
    }
}

/// What [`NatCheck`] found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NatReport {
    /// Our public endpoint as the first answering server saw it (`M1`).
    pub public_endpoint: Option<SocketAddr>,
    /// The admin's name for the NAT.
    pub nat_type: NatType,
    /// How the NAT maps.
    pub mapping: MappingBehavior,
    /// How the NAT filters.
    pub filtering: FilteringBehavior,
    /// Whether a packet to our own public endpoint came back to us; `None` if not tested.
    pub hairpinning: Option<bool>,
    /// The server that answered Test I.
    pub stun_server: Option<SocketAddr>,
    /// Its RFC 5780 OTHER-ADDRESS, if it has one.
    pub other_address: Option<SocketAddr>,
    /// The round-trip time to that server in milliseconds, if measured.
    pub rtt_ms: Option<u64>,
    /// Servers that never answered Test I.
    pub unreachable_servers: Vec<SocketAddr>,
}

/// Which test a transaction belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Test {
    /// Test I to the server at this index of `servers`.
    Primary(usize),
    Hairpin,
    FilterIpPort,
    FilterPort,
    /// Mapping test II: (other IP, primary port).
    MapII,
    /// Mapping test III: the other address.
    MapIII,
    /// A plain request to another configured server (no RFC 5780).
    Alternate,
}

/// Classifies the NAT in front of one UDP socket by RFC 5780's tests.
///
/// Drive it like [`StunClient`] (which it wraps): send what [`NatCheck::poll_transmit`] yields
/// from the socket, feed datagrams to [`NatCheck::handle_input`] and expiries at
/// [`NatCheck::poll_timeout`] to [`NatCheck::handle_timeout`], until [`NatCheck::report`] is
/// `Some`. With [`RetransmitPolicy::NETCHECK`] that takes at most about 3 × 3.75 s (plus
/// 3.75 s per silent server before one answers), usually under 4 s.
pub struct NatCheck<R> {
    client: StunClient,
    rng: R,
    servers: Vec<SocketAddr>,
    local: SocketAddr,
    /// Outstanding transactions and what they test.
    tests: Vec<(TransactionId, Test)>,
    primary: Option<usize>,
    mapped: Option<SocketAddr>,
    other: Option<SocketAddr>,
    rtt_ms: Option<u64>,
    unreachable: Vec<SocketAddr>,
    hairpin: Option<bool>,
    filter_ip_port: Option<bool>,
    filter_port: Option<bool>,
    /// The server does not honour CHANGE-REQUEST (error, or answered from the wrong address).
    filter_unsupported: bool,
    map_ii: Option<Option<SocketAddr>>,
    map_iii: Option<Option<SocketAddr>>,
    /// Mapped addresses from the other servers (`None`: no answer).
    alternates: Vec<Option<SocketAddr>>,
    mapping_started: bool,
    report: Option<NatReport>,
}

impl<R: RngCore> NatCheck<R> {
    /// Starts checking: `servers` in order of preference (resolved), `local` the socket's own
    /// address (its IP as routed towards the servers, and its port). Transaction IDs come from
    /// `rng`.
    pub fn new(
        servers: Vec<SocketAddr>,
        local: SocketAddr,
        policy: RetransmitPolicy,
        now: Instant,
        rng: R,
    ) -> Self {
        let mut check = Self {
            client: StunClient::new(policy),
            rng,
            servers,
            local,
            tests: Vec::new(),
            primary: None,
            mapped: None,
            other: None,
            rtt_ms: None,
            unreachable: Vec::new(),
            hairpin: None,
            filter_ip_port: None,
            filter_port: None,
            filter_unsupported: false,
            map_ii: None,
            map_iii: None,
            alternates: Vec::new(),
            mapping_started: false,
            report: None,
        };
        check.try_server(0, now);
        check
    }

    fn start(&mut self, server: SocketAddr, change: Change, test: Test, now: Instant) {
        let id = self.client.send_binding(server, change, now, &mut self.rng);
        self.tests.push((id, test));
    }

    /// Test I to `servers[index]`, or the end if there is none left.
    fn try_server(&mut self, index: usize, now: Instant) {
        match self.servers.get(index) {
            Some(&server) => self.start(server, Change::NONE, Test::Primary(index), now),
            None => self.finish(),
        }
    }

    /// Handles a datagram from `from`. Returns [`Input::NotStun`] for datagrams that belong to
    /// someone else on the socket.
    pub fn handle_input(&mut self, from: SocketAddr, bytes: &[u8], now: Instant) -> Input {
        let input = self.client.handle_input(from, bytes, now);
        if let Input::Request(id) = input {
            if self.id_of(Test::Hairpin) == Some(id) {
                self.take(id);
                tracing::debug!(%from, "netcheck: our request came back: the NAT hairpins");
                self.client.cancel(id);
                self.hairpin = Some(true);
                self.advance(now);
            }
        }
        self.drain(now);
        input
    }

    /// Handles timer expiry at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.client.handle_timeout(now);
        self.drain(now);
    }

    /// The next datagram to send from the socket.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.client.poll_transmit()
    }

    /// When to call [`NatCheck::handle_timeout`]; `None` once done.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.client.poll_timeout()
    }

    /// The result, once every test has finished.
    pub fn report(&self) -> Option<&NatReport> {
        self.report.as_ref()
    }

    fn take(&mut self, id: TransactionId) -> Option<Test> {
        let at = self.tests.iter().position(|(t, _)| *t == id)?;
        Some(self.tests.swap_remove(at).1)
    }

    fn drain(&mut self, now: Instant) {
        while let Some(done) = self.client.poll_event() {
            if let Some(test) = self.take(done.id) {
                self.record(test, &done, now);
            }
        }
    }

    fn record(&mut self, test: Test, done: &Completed, now: Instant) {
        let mapped = match &done.outcome {
            Outcome::Mapped { mapped, .. } => Some(*mapped),
            _ => None,
        };
        match test {
            Test::Primary(index) => match &done.outcome {
                Outcome::Mapped {
                    mapped,
                    other_address,
                    ..
                } => {
                    self.primary = Some(index);
                    self.mapped = Some(*mapped);
                    // An OTHER-ADDRESS on the server's own IP is no use for the IP tests.
                    self.other = other_address.filter(|o| o.ip() != done.server.ip());
                    self.rtt_ms = done
                        .rtt
                        .map(|d| d.as_millis().try_into().unwrap_or(u64::MAX));
                    tracing::debug!(server = %done.server, %mapped, other = ?self.other, "netcheck: test I");
                    self.start(*mapped, Change::NONE, Test::Hairpin, now);
                    self.start_filtering_or_mapping(now);
                }
                _ => {
                    tracing::debug!(server = %done.server, outcome = ?done.outcome, "netcheck: server did not answer test I");
                    self.unreachable.push(done.server);
                    self.try_server(index + 1, now);
                    return;
                }
            },
            Test::Hairpin => self.hairpin = Some(false),
            Test::FilterIpPort | Test::FilterPort => {
                let primary = self.primary_server();
                let answered = match &done.outcome {
                    Outcome::Mapped { from, .. } => {
                        // A server that ignores CHANGE-REQUEST answers from where we sent to.
                        let changed = match test {
                            Test::FilterIpPort => {
                                Some(from.ip()) != primary.map(|p| p.ip())
                                    && Some(from.port()) != primary.map(|p| p.port())
                            }
                            _ => {
                                Some(from.ip()) == primary.map(|p| p.ip())
                                    && Some(from.port()) != primary.map(|p| p.port())
                            }
                        };
                        if !changed {
                            tracing::debug!(%from, ?test, "netcheck: server ignored CHANGE-REQUEST");
                            self.filter_unsupported = true;
                        }
                        true
                    }
                    Outcome::Error { code, .. } => {
                        tracing::debug!(code, ?test, "netcheck: server refused CHANGE-REQUEST");
                        self.filter_unsupported = true;
                        true
                    }
                    Outcome::TimedOut => false,
                };
                if test == Test::FilterIpPort {
                    self.filter_ip_port = Some(answered);
                    if answered {
                        // Endpoint-independent (or unsupported): test III adds nothing.
                        if let Some(id) = self.id_of(Test::FilterPort) {
                            self.client.cancel(id);
                            self.take(id);
                            self.filter_port = Some(true);
                        }
                    }
                } else {
                    self.filter_port = Some(answered);
                }
            }
            Test::MapII => {
                self.map_ii = Some(mapped);
                if mapped.is_some() && mapped != self.mapped {
                    if let Some(other) = self.other {
                        self.start(other, Change::NONE, Test::MapIII, now);
                    }
                }
            }
            Test::MapIII => self.map_iii = Some(mapped),
            Test::Alternate => self.alternates.push(mapped),
        }
        self.advance(now);
    }

    fn id_of(&self, test: Test) -> Option<TransactionId> {
        self.tests
            .iter()
            .find(|(_, t)| *t == test)
            .map(|(id, _)| *id)
    }

    fn primary_server(&self) -> Option<SocketAddr> {
        self.primary.and_then(|i| self.servers.get(i).copied())
    }

    fn start_filtering_or_mapping(&mut self, now: Instant) {
        match (self.primary_server(), self.other) {
            (Some(primary), Some(_)) => {
                self.start(primary, Change::IP_AND_PORT, Test::FilterIpPort, now);
                self.start(primary, Change::PORT, Test::FilterPort, now);
            }
            _ => self.start_mapping(now),
        }
    }

    fn start_mapping(&mut self, now: Instant) {
        if self.mapping_started {
            return;
        }
        self.mapping_started = true;
        if self.mapped == Some(self.local) {
            // No NAT: nothing to map.
            return;
        }
        match (self.primary_server(), self.other) {
            (Some(primary), Some(other)) => {
                let target = SocketAddr::new(other.ip(), primary.port());
                self.start(target, Change::NONE, Test::MapII, now);
            }
            (Some(primary), None) => {
                // Other configured servers on other IPs (at most two) stand in.
                let alternates: Vec<SocketAddr> = self
                    .servers
                    .iter()
                    .filter(|s| s.ip() != primary.ip() && !self.unreachable.contains(s))
                    .take(2)
                    .copied()
                    .collect();
                for server in alternates {
                    self.start(server, Change::NONE, Test::Alternate, now);
                }
            }
            (None, _) => {}
        }
    }

    fn filtering_done(&self) -> bool {
        self.other.is_none() || (self.filter_ip_port.is_some() && self.filter_port.is_some())
    }

    /// Starts the next phase when the current one is over, and finishes when all are.
    fn advance(&mut self, now: Instant) {
        if self.report.is_some() || self.primary.is_none() {
            return;
        }
        if self.filtering_done() {
            self.start_mapping(now);
        }
        if self.tests.is_empty() {
            self.finish();
        }
    }

    fn mapping(&self) -> MappingBehavior {
        let Some(m1) = self.mapped else {
            return MappingBehavior::Unknown;
        };
        if m1 == self.local {
            return MappingBehavior::NoNat;
        }
        if self.other.is_some() {
            return match (self.map_ii, self.map_iii) {
                (Some(Some(m2)), _) if m2 == m1 => MappingBehavior::EndpointIndependent,
                (Some(Some(m2)), Some(Some(m3))) if m3 == m2 => MappingBehavior::AddressDependent,
                (Some(Some(_)), Some(Some(_))) => MappingBehavior::AddressAndPortDependent,
                _ => MappingBehavior::Unknown,
            };
        }
        let answers: Vec<SocketAddr> = self.alternates.iter().flatten().copied().collect();
        if answers.is_empty() {
            MappingBehavior::Unknown
        } else if answers.iter().all(|a| *a == m1) {
            MappingBehavior::EndpointIndependent
        } else {
            MappingBehavior::Dependent
        }
    }

    fn filtering(&self) -> FilteringBehavior {
        if self.other.is_none() || self.filter_unsupported {
            return FilteringBehavior::Unknown;
        }
        match (self.filter_ip_port, self.filter_port) {
            (Some(true), _) => FilteringBehavior::EndpointIndependent,
            (Some(false), Some(true)) => FilteringBehavior::AddressDependent,
            (Some(false), Some(false)) => FilteringBehavior::AddressAndPortDependent,
            _ => FilteringBehavior::Unknown,
        }
    }

    fn finish(&mut self) {
        let mapping = self.mapping();
        let filtering = self.filtering();
        let nat_type = match (mapping, filtering) {
            (MappingBehavior::NoNat, _) => NatType::Open,
            (
                MappingBehavior::AddressDependent
                | MappingBehavior::AddressAndPortDependent
                | MappingBehavior::Dependent,
                _,
            ) => NatType::Symmetric,
            (MappingBehavior::EndpointIndependent, FilteringBehavior::EndpointIndependent) => {
                NatType::FullCone
            }
            (MappingBehavior::EndpointIndependent, FilteringBehavior::AddressDependent) => {
                NatType::RestrictedCone
            }
            (MappingBehavior::EndpointIndependent, FilteringBehavior::AddressAndPortDependent) => {
                NatType::PortRestrictedCone
            }
            _ => NatType::Unknown,
        };
        let report = NatReport {
            public_endpoint: self.mapped,
            nat_type,
            mapping,
            filtering,
            hairpinning: self.hairpin,
            stun_server: self.primary_server(),
            other_address: self.other,
            rtt_ms: self.rtt_ms,
            unreachable_servers: self.unreachable.clone(),
        };
        tracing::debug!(?report, "netcheck: done");
        self.report = Some(report);
    }
}

#[cfg(test)]
mod tests;
