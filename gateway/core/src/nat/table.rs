//! The session table: mappings (inside endpoint <-> external endpoint) and the sessions (flows to
//! one remote endpoint) that use them, with the indices the packet path looks them up by.
//!
//! Sizes are kept small because a gateway may hold a million sessions: a [`Session`] is 16 bytes,
//! a [`Mapping`] 24, and flow keys are three `u32`s (the flow indices are kept per protocol, so
//! the key needs no protocol tag, and an index entry is 16 bytes). Per session there is an index entry by its
//! inside 5-tuple, and one by its outside 5-tuple when its mapping's filter is
//! address-and-port-dependent (or it is a forward). Per mapping there is one more entry for
//! endpoint-independent or address-dependent mapping (by inside endpoint) and one for
//! endpoint-independent or address-dependent filtering (by external endpoint; inbound packets
//! find their session through it and the inside index). Address-dependent filtering also
//! counts, per mapping and remote address, the sessions that permit it.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::Ipv4Addr;

use super::config::Dependency;
use super::packet::Proto;

type Map<K, V> = HashMap<K, V, ahash::RandomState>;

/// An endpoint: address and port (ICMP: query id; remote ICMP endpoints have port 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Ep {
    pub(crate) addr: Ipv4Addr,
    pub(crate) port: u16,
}

impl Ep {
    pub(crate) fn new(addr: Ipv4Addr, port: u16) -> Self {
        Self { addr, port }
    }
}

/// A flow seen from one side, within one protocol's index: (local endpoint, remote endpoint).
/// The local endpoint is the inside one in the outbound index and the external one in the
/// inbound index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct FlowKey {
    local: u32,
    remote: u32,
    ports: u32,
}

impl FlowKey {
    fn new(local: Ep, remote: Ep) -> Self {
        Self {
            local: u32::from(local.addr),
            remote: u32::from(remote.addr),
            ports: u32::from(local.port) << 16 | u32::from(remote.port),
        }
    }

    /// The key a mapping is found by from the inside (`None` for address-and-port-dependent
    /// mapping, which has no such index): the inside endpoint and as much of the remote
    /// endpoint as the mapping behaviour depends on. The remote port, which neither behaviour
    /// depends on, tells the two apart (0 endpoint-independent, 1 address-dependent), so one
    /// inside endpoint can have a mapping of each kind.
    fn mapping(dep: Dependency, int: Ep, remote: Ep) -> Option<Self> {
        let remote = match dep {
            Dependency::EndpointIndependent => Ep::new(Ipv4Addr::UNSPECIFIED, 0),
            Dependency::AddressDependent => Ep::new(remote.addr, 1),
            Dependency::AddressAndPortDependent => return None,
        };
        Some(Self::new(int, remote))
    }
}

/// One index per protocol ([`Proto::index`]).
type PerProto<K> = [Map<K, u32>; 3];

/// An external endpoint: address, and protocol with port (8 bytes, 4-aligned).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct ExtKey(u32, u32);

fn ext_key(proto: Proto, ext: Ep) -> ExtKey {
    ExtKey(
        u32::from(ext.addr),
        u32::from(proto as u8) << 16 | u32::from(ext.port),
    )
}

/// A mapping and a remote address it has a session with (address-dependent filtering).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct PermitKey(u32, u32);

fn permit_key(mapping: u32, remote: Ipv4Addr) -> PermitKey {
    PermitKey(mapping, u32::from(remote))
}

/// A binding of an inside endpoint to an external endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Mapping {
    pub(crate) int_addr: u32,
    pub(crate) ext_addr: u32,
    /// The remote address this mapping depends on (address-dependent and
    /// address-and-port-dependent mapping), else 0.
    pub(crate) dep_addr: u32,
    pub(crate) int_port: u16,
    pub(crate) ext_port: u16,
    pub(crate) dep_port: u16,
    pub(crate) proto: Proto,
    flags: u8,
    /// Sessions using it; the mapping ends with the last.
    pub(crate) sessions: u32,
}

const FORWARD: u8 = 0x10;

fn dep_bits(d: Dependency) -> u8 {
    match d {
        Dependency::EndpointIndependent => 0,
        Dependency::AddressDependent => 1,
        Dependency::AddressAndPortDependent => 2,
    }
}

fn dep_from(bits: u8) -> Dependency {
    match bits & 3 {
        0 => Dependency::EndpointIndependent,
        1 => Dependency::AddressDependent,
        _ => Dependency::AddressAndPortDependent,
    }
}

impl Mapping {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        proto: Proto,
        int: Ep,
        ext: Ep,
        dep: Ep,
        mapping: Dependency,
        filtering: Dependency,
        forward: bool,
    ) -> Self {
        Self {
            int_addr: u32::from(int.addr),
            ext_addr: u32::from(ext.addr),
            dep_addr: u32::from(dep.addr),
            int_port: int.port,
            ext_port: ext.port,
            dep_port: dep.port,
            proto,
            flags: dep_bits(mapping) | dep_bits(filtering) << 2 | if forward { FORWARD } else { 0 },
            sessions: 0,
        }
    }
    pub(crate) fn int(&self) -> Ep {
        Ep::new(Ipv4Addr::from(self.int_addr), self.int_port)
    }
    pub(crate) fn ext(&self) -> Ep {
        Ep::new(Ipv4Addr::from(self.ext_addr), self.ext_port)
    }
    fn dep(&self) -> Ep {
        Ep::new(Ipv4Addr::from(self.dep_addr), self.dep_port)
    }
    pub(crate) fn mapping_dep(&self) -> Dependency {
        dep_from(self.flags)
    }
    pub(crate) fn filtering(&self) -> Dependency {
        dep_from(self.flags >> 2)
    }
    pub(crate) fn is_forward(&self) -> bool {
        self.flags & FORWARD != 0
    }
    /// Whether it is indexed by its inside endpoint (forwards and per-flow mappings are found
    /// through their sessions instead).
    fn by_int(&self) -> bool {
        !self.is_forward() && self.mapping_dep() != Dependency::AddressAndPortDependent
    }
    /// Whether it is indexed by its external endpoint (for filters that let new remotes in).
    fn by_ext(&self) -> bool {
        !self.is_forward() && self.filtering() != Dependency::AddressAndPortDependent
    }
}

/// A flow between an inside endpoint (through its mapping) and one remote endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Session {
    pub(crate) mapping: u32,
    pub(crate) rem_addr: u32,
    /// Second (since the engine's epoch) at which it expires.
    pub(crate) expires: u32,
    pub(crate) rem_port: u16,
    pub(crate) proto: Proto,
    /// [`super::session::bits`].
    pub(crate) state: u8,
}

impl Session {
    pub(crate) fn remote(&self) -> Ep {
        Ep::new(Ipv4Addr::from(self.rem_addr), self.rem_port)
    }
}

/// A vector of slots with a free list; indices stay valid until removed.
#[derive(Debug)]
pub(crate) struct Slab<T> {
    slots: Vec<Option<T>>,
    free: Vec<u32>,
    len: usize,
}

impl<T> Slab<T> {
    fn new() -> Self {
        Self {
            slots: Vec::new(),
            free: Vec::new(),
            len: 0,
        }
    }
    fn insert(&mut self, v: T) -> u32 {
        self.len += 1;
        if let Some(i) = self.free.pop() {
            self.slots[i as usize] = Some(v);
            i
        } else {
            self.slots.push(Some(v));
            // The session limit keeps this far below u32::MAX.
            (self.slots.len() - 1) as u32
        }
    }
    fn remove(&mut self, i: u32) -> Option<T> {
        let v = self.slots.get_mut(i as usize)?.take()?;
        self.free.push(i);
        self.len -= 1;
        Some(v)
    }
    pub(crate) fn get(&self, i: u32) -> Option<&T> {
        self.slots.get(i as usize)?.as_ref()
    }
    pub(crate) fn get_mut(&mut self, i: u32) -> Option<&mut T> {
        self.slots.get_mut(i as usize)?.as_mut()
    }
    pub(crate) fn len(&self) -> usize {
        self.len
    }
    /// Number of slots (occupied or free), the range of valid indices.
    pub(crate) fn slots(&self) -> usize {
        self.slots.len()
    }
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u32, &T)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.as_ref().map(|s| (i as u32, s)))
    }
    fn heap_bytes(&self) -> usize {
        self.slots.capacity() * size_of::<Option<T>>() + self.free.capacity() * 4
    }
}

/// A mapping that ended with its last session; its port goes back to the pool.
pub(crate) type Ended = Mapping;

/// Mappings, sessions and their indices.
pub(crate) struct Table {
    pub(crate) sessions: Slab<Session>,
    pub(crate) mappings: Slab<Mapping>,
    out: PerProto<FlowKey>,
    inb: PerProto<FlowKey>,
    by_int: PerProto<FlowKey>,
    by_ext: Map<ExtKey, u32>,
    permits: Map<PermitKey, u32>,
    host_ports: Map<u32, u32>,
}

impl Table {
    pub(crate) fn new(hasher: &ahash::RandomState) -> Self {
        Self {
            sessions: Slab::new(),
            mappings: Slab::new(),
            out: std::array::from_fn(|_| HashMap::with_hasher(hasher.clone())),
            inb: std::array::from_fn(|_| HashMap::with_hasher(hasher.clone())),
            by_int: std::array::from_fn(|_| HashMap::with_hasher(hasher.clone())),
            by_ext: HashMap::with_hasher(hasher.clone()),
            permits: HashMap::with_hasher(hasher.clone()),
            host_ports: HashMap::with_hasher(hasher.clone()),
        }
    }

    /// The session of an outbound flow.
    pub(crate) fn session_out(&self, proto: Proto, int: Ep, remote: Ep) -> Option<u32> {
        self.out[proto.index()]
            .get(&FlowKey::new(int, remote))
            .copied()
    }

    /// The session of an inbound flow: from the outside index, or (for mappings indexed by
    /// their external endpoint, whose sessions are not in it) through the mapping's inside
    /// endpoint.
    pub(crate) fn session_in(&self, proto: Proto, ext: Ep, remote: Ep) -> Option<u32> {
        if let Some(id) = self.inb[proto.index()].get(&FlowKey::new(ext, remote)) {
            return Some(*id);
        }
        let mapping = *self.by_ext.get(&ext_key(proto, ext))?;
        let m = self.mappings.get(mapping)?;
        let id = *self.out[proto.index()].get(&FlowKey::new(m.int(), remote))?;
        (self.sessions.get(id)?.mapping == mapping).then_some(id)
    }

    /// The mapping an inside endpoint has for `remote` under behaviour `dep`.
    pub(crate) fn mapping_by_int(
        &self,
        proto: Proto,
        dep: Dependency,
        int: Ep,
        remote: Ep,
    ) -> Option<u32> {
        let key = FlowKey::mapping(dep, int, remote)?;
        self.by_int[proto.index()].get(&key).copied()
    }

    /// The mapping holding an external endpoint, if its filter may let new remotes in.
    pub(crate) fn mapping_by_ext(&self, proto: Proto, ext: Ep) -> Option<u32> {
        self.by_ext.get(&ext_key(proto, ext)).copied()
    }

    /// Whether a session of `mapping` has `remote` as its remote address.
    pub(crate) fn permits(&self, mapping: u32, remote: Ipv4Addr) -> bool {
        self.permits.contains_key(&permit_key(mapping, remote))
    }

    /// External ports held by an inside host.
    pub(crate) fn host_ports(&self, host: Ipv4Addr) -> u32 {
        self.host_ports.get(&u32::from(host)).copied().unwrap_or(0)
    }

    /// Adds a mapping (with no session yet).
    pub(crate) fn insert_mapping(&mut self, m: Mapping) -> u32 {
        let id = self.mappings.insert(m);
        if m.by_int() {
            if let Some(key) = FlowKey::mapping(m.mapping_dep(), m.int(), m.dep()) {
                self.by_int[m.proto.index()].insert(key, id);
            }
        }
        if m.by_ext() {
            self.by_ext.insert(ext_key(m.proto, m.ext()), id);
        }
        if !m.is_forward() {
            *self.host_ports.entry(m.int_addr).or_insert(0) += 1;
        }
        id
    }

    /// Adds a session of `mapping` with `remote`. The caller has checked that neither index has
    /// the flow yet.
    pub(crate) fn insert_session(
        &mut self,
        mapping: u32,
        remote: Ep,
        state: u8,
        expires: u32,
    ) -> u32 {
        let Some(m) = self.mappings.get_mut(mapping) else {
            debug_assert!(false, "session for a missing mapping");
            return u32::MAX;
        };
        m.sessions += 1;
        let m = *m;
        let id = self.sessions.insert(Session {
            mapping,
            rem_addr: u32::from(remote.addr),
            expires,
            rem_port: remote.port,
            proto: m.proto,
            state,
        });
        let p = m.proto.index();
        self.out[p].insert(FlowKey::new(m.int(), remote), id);
        if !m.by_ext() {
            self.inb[p].insert(FlowKey::new(m.ext(), remote), id);
        }
        if m.filtering() == Dependency::AddressDependent {
            *self
                .permits
                .entry(permit_key(mapping, remote.addr))
                .or_insert(0) += 1;
        }
        id
    }

    /// Removes a session; returns it, and its mapping if that was its last session.
    pub(crate) fn remove_session(&mut self, id: u32) -> Option<(Session, Option<Ended>)> {
        let s = self.sessions.remove(id)?;
        let m = *self.mappings.get(s.mapping)?;
        let p = s.proto.index();
        self.out[p].remove(&FlowKey::new(m.int(), s.remote()));
        if !m.by_ext() {
            self.inb[p].remove(&FlowKey::new(m.ext(), s.remote()));
        }
        if m.filtering() == Dependency::AddressDependent {
            let key = permit_key(s.mapping, s.remote().addr);
            if let Some(n) = self.permits.get_mut(&key) {
                *n -= 1;
                if *n == 0 {
                    self.permits.remove(&key);
                }
            }
        }
        let left = {
            let Some(mm) = self.mappings.get_mut(s.mapping) else {
                return Some((s, None));
            };
            mm.sessions -= 1;
            mm.sessions
        };
        if left > 0 {
            return Some((s, None));
        }
        self.mappings.remove(s.mapping);
        if m.by_int() {
            if let Some(key) = FlowKey::mapping(m.mapping_dep(), m.int(), m.dep()) {
                self.by_int[p].remove(&key);
            }
        }
        if m.by_ext() {
            self.by_ext.remove(&ext_key(m.proto, m.ext()));
        }
        if !m.is_forward() {
            if let Some(n) = self.host_ports.get_mut(&m.int_addr) {
                *n -= 1;
                if *n == 0 {
                    self.host_ports.remove(&m.int_addr);
                }
            }
        }
        Some((s, Some(m)))
    }

    /// Heap bytes held by the table (slots, index buckets and control bytes).
    pub(crate) fn heap_bytes(&self) -> usize {
        fn map<K, V, S: BuildHasher>(m: &HashMap<K, V, S>) -> usize {
            // hashbrown: one bucket of (K, V) and one control byte per bucket; buckets are the
            // capacity rounded up to a power of two over 7/8.
            let cap = m.capacity();
            let buckets = if cap == 0 {
                0
            } else if cap < 8 {
                (cap + 1).next_power_of_two()
            } else {
                (cap * 8 / 7).next_power_of_two()
            };
            buckets * (size_of::<(K, V)>() + 1)
        }
        let per_proto = |ms: &PerProto<FlowKey>| ms.iter().map(map).sum::<usize>();
        self.sessions.heap_bytes()
            + self.mappings.heap_bytes()
            + per_proto(&self.out)
            + per_proto(&self.inb)
            + per_proto(&self.by_int)
            + map(&self.by_ext)
            + map(&self.permits)
            + map(&self.host_ports)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_sizes() {
        assert_eq!(size_of::<Option<Session>>(), 16);
        assert_eq!(size_of::<Option<Mapping>>(), 24);
        assert_eq!(size_of::<(FlowKey, u32)>(), 16);
    }

    /// The flow keys carry no protocol and the mapping keys no behaviour tag: the same
    /// endpoints under another protocol, or another mapping behaviour, stay apart.
    #[test]
    fn keys_apart_by_protocol_and_behaviour() {
        let mut t = Table::new(&ahash::RandomState::with_seeds(1, 2, 3, 4));
        let int = Ep::new(Ipv4Addr::new(10, 0, 0, 1), 4000);
        let rem = Ep::new(Ipv4Addr::new(198, 51, 100, 1), 53);
        let zero = Ep::new(Ipv4Addr::UNSPECIFIED, 0);
        let (eim, adm, apd) = (
            Dependency::EndpointIndependent,
            Dependency::AddressDependent,
            Dependency::AddressAndPortDependent,
        );
        let ext = |port| Ep::new(Ipv4Addr::new(203, 0, 113, 1), port);
        let udp = t.insert_mapping(Mapping::new(
            Proto::Udp,
            int,
            ext(5000),
            zero,
            eim,
            apd,
            false,
        ));
        let tcp = t.insert_mapping(Mapping::new(
            Proto::Tcp,
            int,
            ext(5000),
            zero,
            eim,
            apd,
            false,
        ));
        // An address-dependent mapping of the same endpoint to the address 0.0.0.0 (the
        // endpoint-independent key's remote part).
        let adm0 = t.insert_mapping(Mapping::new(
            Proto::Udp,
            int,
            ext(5001),
            Ep::new(Ipv4Addr::UNSPECIFIED, 0),
            adm,
            apd,
            false,
        ));
        assert_eq!(t.mapping_by_int(Proto::Udp, eim, int, rem), Some(udp));
        assert_eq!(t.mapping_by_int(Proto::Tcp, eim, int, rem), Some(tcp));
        assert_eq!(t.mapping_by_int(Proto::Icmp, eim, int, rem), None);
        assert_eq!(t.mapping_by_int(Proto::Udp, adm, int, zero), Some(adm0));
        assert_eq!(t.mapping_by_int(Proto::Udp, adm, int, rem), None);
        assert_eq!(t.mapping_by_int(Proto::Udp, apd, int, rem), None);

        let su = t.insert_session(udp, rem, 0, 10);
        let st = t.insert_session(tcp, rem, 0, 10);
        assert_ne!(su, st);
        assert_eq!(t.session_out(Proto::Udp, int, rem), Some(su));
        assert_eq!(t.session_out(Proto::Tcp, int, rem), Some(st));
        assert_eq!(t.session_in(Proto::Udp, ext(5000), rem), Some(su));
        assert_eq!(t.session_in(Proto::Tcp, ext(5000), rem), Some(st));
        assert_eq!(t.session_in(Proto::Icmp, ext(5000), rem), None);

        // Removing the UDP session ends its mapping and leaves the TCP one whole.
        let (_, ended) = t.remove_session(su).expect("there");
        assert_eq!(ended.map(|m| m.proto), Some(Proto::Udp));
        assert_eq!(t.mapping_by_int(Proto::Udp, eim, int, rem), None);
        assert_eq!(t.mapping_by_int(Proto::Tcp, eim, int, rem), Some(tcp));
        assert_eq!(t.session_out(Proto::Udp, int, rem), None);
        assert_eq!(t.session_out(Proto::Tcp, int, rem), Some(st));
        assert_eq!(t.mapping_by_int(Proto::Udp, adm, int, zero), Some(adm0));
    }
}
