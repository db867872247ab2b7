//! NatCheck against a simulated NAT and RFC 5780 server on a hand-driven clock.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use super::super::codec::{self, server};
use super::super::test_rng::TestRng;
use super::*;

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("test address")
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

const LOCAL: &str = "192.168.1.10:51820";
const PUBLIC_IP: &str = "203.0.113.1";
const PRIMARY: &str = "198.51.100.10:3478";
const ALT_IP: &str = "198.51.100.11";
const ALT_PORT: u16 = 3479;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Map {
    /// No NAT at all: the host is public.
    None,
    Independent,
    Address,
    AddressPort,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Filter {
    Independent,
    Address,
    AddressPort,
}

/// How the simulated STUN server answers.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Server {
    /// RFC 5780: OTHER-ADDRESS, honours CHANGE-REQUEST.
    Rfc5780,
    /// RFC 5389 only: no OTHER-ADDRESS, 420 for CHANGE-REQUEST.
    Plain,
    /// Offers OTHER-ADDRESS but answers CHANGE-REQUEST from where it was asked.
    IgnoresChange,
    /// Never answers.
    Silent,
}

struct Sim {
    map: Map,
    filter: Filter,
    hairpin: bool,
    /// Server behaviour per server IP.
    servers: HashMap<IpAddr, Server>,
    /// Mapping key → public port.
    ports: HashMap<String, u16>,
    next_port: u16,
    /// (public port) → remote endpoints we have sent to.
    sent_to: HashMap<u16, HashSet<SocketAddr>>,
    /// Inbound datagrams: (arrival, sequence) → (from, bytes).
    inbound: BTreeMap<(Instant, u64), (SocketAddr, Vec<u8>)>,
    seq: u64,
    latency: Duration,
    /// Outbound packets to drop, by sequence number of transmission (0-based).
    drop_outbound: HashSet<u64>,
    sent: u64,
    /// Extra delay for responses to test I (the first request to the primary).
    response_delay: Duration,
}

impl Sim {
    fn new(map: Map, filter: Filter) -> Self {
        let mut servers = HashMap::new();
        servers.insert(addr(PRIMARY).ip(), Server::Rfc5780);
        servers.insert(ALT_IP.parse().expect("ip"), Server::Rfc5780);
        Self {
            map,
            filter,
            hairpin: false,
            servers,
            ports: HashMap::new(),
            next_port: 40000,
            sent_to: HashMap::new(),
            inbound: BTreeMap::new(),
            seq: 0,
            latency: ms(20),
            drop_outbound: HashSet::new(),
            sent: 0,
            response_delay: Duration::ZERO,
        }
    }

    fn server(mut self, ip: &str, kind: Server) -> Self {
        self.servers.insert(ip.parse().expect("ip"), kind);
        self
    }

    fn local(&self) -> SocketAddr {
        addr(LOCAL)
    }

    /// The public endpoint of a packet from LOCAL to `dst`.
    fn translate(&mut self, dst: SocketAddr) -> SocketAddr {
        if self.map == Map::None {
            return self.local();
        }
        let key = match self.map {
            Map::Independent | Map::None => String::new(),
            Map::Address => dst.ip().to_string(),
            Map::AddressPort => dst.to_string(),
        };
        let port = *self.ports.entry(key).or_insert_with(|| {
            self.next_port += 7;
            self.next_port
        });
        SocketAddr::new(PUBLIC_IP.parse().expect("ip"), port)
    }

    fn public_ip(&self) -> IpAddr {
        match self.map {
            Map::None => self.local().ip(),
            _ => PUBLIC_IP.parse().expect("ip"),
        }
    }

    /// Whether the NAT lets a packet from `from` in to public port `port`.
    fn admits(&self, port: u16, from: SocketAddr) -> bool {
        if self.map == Map::None {
            return true;
        }
        let Some(sent) = self.sent_to.get(&port) else {
            return false;
        };
        match self.filter {
            Filter::Independent => true,
            Filter::Address => sent.iter().any(|s| s.ip() == from.ip()),
            Filter::AddressPort => sent.contains(&from),
        }
    }

    fn deliver(&mut self, at: Instant, from: SocketAddr, bytes: Vec<u8>) {
        self.seq += 1;
        self.inbound.insert((at, self.seq), (from, bytes));
    }

    /// Sends one datagram from the checking socket at `now`.
    fn send(&mut self, tx: Transmit, now: Instant) {
        let n = self.sent;
        self.sent += 1;
        if self.drop_outbound.contains(&n) {
            return;
        }
        if tx.dst.ip() == self.public_ip() {
            // To our own public address: hairpinning.
            let public = self.translate(tx.dst);
            self.sent_to
                .entry(public.port())
                .or_default()
                .insert(tx.dst);
            if self.hairpin || self.map == Map::None {
                self.deliver(now + self.latency, public, tx.payload);
            }
            return;
        }
        let public = self.translate(tx.dst);
        self.sent_to
            .entry(public.port())
            .or_default()
            .insert(tx.dst);
        let Some(&kind) = self.servers.get(&tx.dst.ip()) else {
            return;
        };
        let Some((id, change)) = server::parse_request(&tx.payload) else {
            return;
        };
        let other_ip: IpAddr = if tx.dst.ip() == addr(PRIMARY).ip() {
            ALT_IP.parse().expect("ip")
        } else {
            addr(PRIMARY).ip()
        };
        let other_port = if tx.dst.port() == ALT_PORT {
            addr(PRIMARY).port()
        } else {
            ALT_PORT
        };
        let (from, response) = match kind {
            Server::Silent => return,
            Server::Plain if change != Change::NONE => {
                (tx.dst, server::error(id, 420, "Unknown Attribute"))
            }
            Server::Plain => (tx.dst, server::success(id, public, None)),
            Server::IgnoresChange => (
                tx.dst,
                server::success(id, public, Some(SocketAddr::new(other_ip, other_port))),
            ),
            Server::Rfc5780 => {
                let from = SocketAddr::new(
                    if change.ip { other_ip } else { tx.dst.ip() },
                    if change.port {
                        other_port
                    } else {
                        tx.dst.port()
                    },
                );
                (
                    from,
                    server::success(id, public, Some(SocketAddr::new(other_ip, other_port))),
                )
            }
        };
        if self.admits(public.port(), from) {
            let delay = if n == 0 {
                self.response_delay
            } else {
                Duration::ZERO
            };
            self.deliver(now + self.latency + delay, from, response);
        }
    }

    /// Runs a check to the end; returns the report and how long it took.
    fn run(&mut self, servers: &[&str]) -> (NatReport, Duration) {
        let t0 = Instant::now();
        let mut now = t0;
        let servers = servers.iter().map(|s| addr(s)).collect();
        let mut check = NatCheck::new(
            servers,
            self.local(),
            RetransmitPolicy::NETCHECK,
            now,
            TestRng(99),
        );
        for _ in 0..10_000 {
            while let Some(tx) = check.poll_transmit() {
                self.send(tx, now);
            }
            if let Some(report) = check.report() {
                return (report.clone(), now - t0);
            }
            let next_in = self.inbound.keys().next().map(|k| k.0);
            let next_timer = check.poll_timeout();
            let next = match (next_in, next_timer) {
                (Some(a), Some(b)) => a.min(b),
                (a, b) => a.or(b).expect("check neither done nor waiting"),
            };
            now = now.max(next);
            if next_in.is_some_and(|a| a <= now) {
                if let Some((_, (from, bytes))) = self.inbound.pop_first() {
                    let _ = check.handle_input(from, &bytes, now);
                }
            } else {
                check.handle_timeout(now);
            }
        }
        panic!("netcheck did not finish");
    }
}

fn classify(map: Map, filter: Filter) -> NatReport {
    Sim::new(map, filter).run(&[PRIMARY]).0
}

#[test]
fn rfc5780_matrix() {
    let cases = [
        (Map::Independent, Filter::Independent, NatType::FullCone),
        (Map::Independent, Filter::Address, NatType::RestrictedCone),
        (
            Map::Independent,
            Filter::AddressPort,
            NatType::PortRestrictedCone,
        ),
        (Map::Address, Filter::AddressPort, NatType::Symmetric),
        (Map::AddressPort, Filter::AddressPort, NatType::Symmetric),
        (Map::AddressPort, Filter::Independent, NatType::Symmetric),
    ];
    for (map, filter, want) in cases {
        let report = classify(map, filter);
        assert_eq!(report.nat_type, want, "{map:?}/{filter:?}: {report:?}");
        let mapping = match map {
            Map::None => MappingBehavior::NoNat,
            Map::Independent => MappingBehavior::EndpointIndependent,
            Map::Address => MappingBehavior::AddressDependent,
            Map::AddressPort => MappingBehavior::AddressAndPortDependent,
        };
        let filtering = match filter {
            Filter::Independent => FilteringBehavior::EndpointIndependent,
            Filter::Address => FilteringBehavior::AddressDependent,
            Filter::AddressPort => FilteringBehavior::AddressAndPortDependent,
        };
        assert_eq!(report.mapping, mapping, "{map:?}/{filter:?}");
        assert_eq!(report.filtering, filtering, "{map:?}/{filter:?}");
        let public = report.public_endpoint.expect("public endpoint");
        assert_eq!(public.ip(), PUBLIC_IP.parse::<IpAddr>().expect("ip"));
        assert_eq!(report.stun_server, Some(addr(PRIMARY)));
        assert_eq!(
            report.other_address,
            Some(SocketAddr::new(ALT_IP.parse().expect("ip"), ALT_PORT))
        );
        assert_eq!(report.rtt_ms, Some(20));
        assert_eq!(report.hairpinning, Some(false));
    }
}

#[test]
fn open_internet() {
    let report = classify(Map::None, Filter::Independent);
    assert_eq!(report.nat_type, NatType::Open);
    assert_eq!(report.mapping, MappingBehavior::NoNat);
    assert_eq!(report.public_endpoint, Some(addr(LOCAL)));
    assert_eq!(report.filtering, FilteringBehavior::EndpointIndependent);
}

#[test]
fn timing_of_a_port_restricted_nat() {
    // Test I (20 ms RTT), then both filtering tests wait the full 3.75 s, then mapping II.
    let (report, took) = Sim::new(Map::Independent, Filter::AddressPort).run(&[PRIMARY]);
    assert_eq!(report.nat_type, NatType::PortRestrictedCone);
    assert_eq!(took, ms(20 + 3750 + 20));
    // A full-cone NAT answers every test at once; only the hairpin probe (sent with test I)
    // waits for its timeout.
    let (_, took) = Sim::new(Map::Independent, Filter::Independent).run(&[PRIMARY]);
    assert_eq!(took, ms(20 + 3750));
}

#[test]
fn hairpinning() {
    let mut sim = Sim::new(Map::Independent, Filter::AddressPort);
    sim.hairpin = true;
    let (report, _) = sim.run(&[PRIMARY]);
    assert_eq!(report.hairpinning, Some(true));
    assert_eq!(report.nat_type, NatType::PortRestrictedCone);
}

#[test]
fn plain_servers_compare_mappings() {
    let second = "192.0.2.20:3478";
    let mut sim = Sim::new(Map::Independent, Filter::AddressPort)
        .server("198.51.100.10", Server::Plain)
        .server("192.0.2.20", Server::Plain);
    let (report, _) = sim.run(&[PRIMARY, second]);
    assert_eq!(report.mapping, MappingBehavior::EndpointIndependent);
    assert_eq!(report.filtering, FilteringBehavior::Unknown);
    assert_eq!(report.nat_type, NatType::Unknown);
    assert_eq!(report.other_address, None);

    let mut sim = Sim::new(Map::AddressPort, Filter::AddressPort)
        .server("198.51.100.10", Server::Plain)
        .server("192.0.2.20", Server::Plain);
    let (report, _) = sim.run(&[PRIMARY, second]);
    assert_eq!(report.mapping, MappingBehavior::Dependent);
    assert_eq!(report.nat_type, NatType::Symmetric);

    // One plain server alone: the endpoint, nothing else.
    let mut sim =
        Sim::new(Map::Independent, Filter::Independent).server("198.51.100.10", Server::Plain);
    let (report, _) = sim.run(&[PRIMARY]);
    assert!(report.public_endpoint.is_some());
    assert_eq!(report.mapping, MappingBehavior::Unknown);
    assert_eq!(report.nat_type, NatType::Unknown);
}

#[test]
fn server_ignoring_change_request_leaves_filtering_unknown() {
    let mut sim = Sim::new(Map::Independent, Filter::Independent)
        .server("198.51.100.10", Server::IgnoresChange)
        .server(ALT_IP, Server::IgnoresChange);
    let (report, _) = sim.run(&[PRIMARY]);
    assert_eq!(report.filtering, FilteringBehavior::Unknown);
    assert_eq!(report.mapping, MappingBehavior::EndpointIndependent);
    assert_eq!(report.nat_type, NatType::Unknown);
}

#[test]
fn silent_first_server_falls_back_to_the_next() {
    let second = "192.0.2.20:3478";
    let mut sim = Sim::new(Map::Independent, Filter::Address)
        .server("198.51.100.10", Server::Silent)
        .server("192.0.2.20", Server::Plain);
    let (report, took) = sim.run(&[PRIMARY, second]);
    assert_eq!(report.unreachable_servers, [addr(PRIMARY)]);
    assert_eq!(report.stun_server, Some(addr(second)));
    assert!(report.public_endpoint.is_some());
    // 3.75 s for the silent one, then a round trip, then the hairpin probe's timeout.
    assert!(took >= ms(3750) && took < ms(3750 + 3750 + 100), "{took:?}");
}

#[test]
fn nobody_answers() {
    let mut sim =
        Sim::new(Map::Independent, Filter::Address).server("198.51.100.10", Server::Silent);
    let (report, took) = sim.run(&[PRIMARY, "198.51.100.10:3479"]);
    assert_eq!(report.public_endpoint, None);
    assert_eq!(report.nat_type, NatType::Unknown);
    assert_eq!(report.hairpinning, None);
    assert_eq!(report.unreachable_servers.len(), 2);
    assert_eq!(took, ms(2 * 3750));
    // No servers at all: done at once.
    let mut sim = Sim::new(Map::Independent, Filter::Address);
    let (report, took) = sim.run(&[]);
    assert_eq!(report.nat_type, NatType::Unknown);
    assert_eq!(took, Duration::ZERO);
}

#[test]
fn lost_requests_are_retried() {
    let mut sim = Sim::new(Map::Independent, Filter::Address);
    // Lose the first test I request and its first retransmission, and the first filtering
    // request.
    sim.drop_outbound = [0, 1, 2].into_iter().collect();
    let (report, _) = sim.run(&[PRIMARY]);
    assert_eq!(report.nat_type, NatType::RestrictedCone);
    assert_eq!(report.rtt_ms, None, "no RTT sample after a retransmission");
}

#[test]
fn late_response_after_retransmission_counts_once() {
    let mut sim = Sim::new(Map::Independent, Filter::AddressPort);
    // The answer to the first request arrives after two retransmissions; the retransmissions'
    // answers follow and are strays.
    sim.response_delay = ms(1000);
    let (report, _) = sim.run(&[PRIMARY]);
    assert_eq!(report.nat_type, NatType::PortRestrictedCone);
    assert_eq!(report.rtt_ms, None);
}

#[test]
fn response_after_giving_up_is_ignored() {
    let mut sim = Sim::new(Map::Independent, Filter::Address);
    // Only the first request is answered, 5 s later: after the 3.75 s give-up, and the other
    // three requests are lost. Test I fails and there is no other server.
    sim.response_delay = ms(5000);
    sim.drop_outbound = [1, 2, 3].into_iter().collect();
    let (report, took) = sim.run(&[PRIMARY]);
    assert_eq!(report.public_endpoint, None);
    assert_eq!(took, ms(3750));
}

#[test]
fn report_serializes_in_the_contract_spelling() {
    let report = classify(Map::Independent, Filter::AddressPort);
    let json = serde_json::to_value(&report).expect("json");
    assert_eq!(json["nat_type"], "port-restricted-cone");
    assert_eq!(json["mapping"], "endpoint-independent");
    assert_eq!(json["filtering"], "address-and-port-dependent");
    assert!(json["public_endpoint"]
        .as_str()
        .is_some_and(|s| s.starts_with("203.0.113.1:")));
    for t in [
        NatType::Open,
        NatType::FullCone,
        NatType::RestrictedCone,
        NatType::PortRestrictedCone,
        NatType::Symmetric,
        NatType::Unknown,
    ] {
        assert_eq!(
            serde_json::to_value(t).expect("json"),
            serde_json::Value::from(t.as_str())
        );
    }
    // Not STUN at all is not consumed.
    let mut check = NatCheck::new(
        vec![addr(PRIMARY)],
        addr(LOCAL),
        RetransmitPolicy::NETCHECK,
        Instant::now(),
        TestRng(1),
    );
    assert_eq!(
        check.handle_input(addr(PRIMARY), b"not stun", Instant::now()),
        Input::NotStun
    );
    let _ = codec::HEADER_LEN;
}
