//! GRO for writes to an offloading TUN device: in-order TCP segments of one flow are coalesced
//! in place into one super-packet with a `virtio_net_hdr`, as a NIC's GRO would, so the kernel
//! takes a whole batch of a flow in one `write`.
//!
//! The rules follow the kernel's `tcp_gro_receive` and wireguard-go's `tcpGRO`: same addresses,
//! ports and acknowledgment number; only ACK (and PSH) set; same IP header fields that must
//! survive segmentation (TOS/traffic class, TTL/hop limit, DF, flow label), same TCP options and
//! window; the next segment starts where the last ended; all but the last segment have the first
//! one's payload size; a PSH segment ends the run; every segment's checksum is verified (the
//! coalesced packet goes in with a partial checksum that the kernel trusts). Unlike tun-rs's
//! `GROTable` it allocates nothing per packet (that one copies each packet into a new `Vec`);
//! unlike wireguard-go it only appends (an out-of-order segment starts a new run) and leaves UDP
//! alone.

/// Bytes of the `virtio_net_hdr` before every packet.
pub(crate) const VNET_HDR_LEN: usize = 10;
/// The largest IP packet: the IPv4 total length (and, conservatively, the IPv6 payload length).
const MAX_PACKET: usize = 65_535;

const VIRTIO_NET_HDR_F_NEEDS_CSUM: u8 = 1;
const VIRTIO_NET_HDR_GSO_TCPV4: u8 = 1;
const VIRTIO_NET_HDR_GSO_TCPV6: u8 = 4;
const TCP_FLAG_PSH: u8 = 0x08;
const TCP_FLAG_ACK: u8 = 0x10;
const IPPROTO_TCP: u8 = 6;

/// Identifies the segments that may be merged: addresses, ports, acknowledgment number.
#[derive(Clone, Copy, PartialEq, Eq)]
struct FlowKey {
    addrs: [u8; 32],
    ports: [u8; 4],
    ack: [u8; 4],
}

/// A TCP segment with payload that may take part in GRO.
#[derive(Clone, Copy)]
struct Segment {
    key: FlowKey,
    v6: bool,
    iph_len: usize,
    tcph_len: usize,
    payload: usize,
    seq: u32,
    psh: bool,
}

/// An open run: the slot it grows in and what the next segment must match.
#[derive(Clone, Copy)]
struct Run {
    slot: usize,
    seg: Segment,
    /// Payload size of each segment but the last.
    gso_size: usize,
    next_seq: u32,
    merged: usize,
    /// No more segments may join (PSH seen, or a short segment).
    closed: bool,
    head_checksum_ok: bool,
}

/// The coalescer's state, reserved once and reused for every batch.
#[derive(Debug)]
pub(crate) struct TcpGro {
    runs: Vec<Run>,
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Run")
            .field("slot", &self.slot)
            .field("merged", &self.merged)
            .finish_non_exhaustive()
    }
}

impl TcpGro {
    /// Room for `flows` distinct open runs per batch (more are written uncoalesced).
    pub(crate) fn new(flows: usize) -> Self {
        Self {
            runs: Vec::with_capacity(flows),
        }
    }

    /// Coalesces the packets in `slots` (each `VNET_HDR_LEN` bytes of headroom, then an IP
    /// packet). Afterwards `packets[i]` is the number of packets slot `i` carries: 0 for a slot
    /// merged into an earlier one (not to be written), 1 for one left as it was, more for a
    /// coalesced super-packet; every slot with a count has its virtio header written. A slot
    /// grows only within its capacity.
    pub(crate) fn coalesce(&mut self, slots: &mut [Vec<u8>], packets: &mut [u16]) {
        self.runs.clear();
        for i in 0..slots.len() {
            packets[i] = 1;
            let Some(seg) = parse(&slots[i][VNET_HDR_LEN..]) else {
                continue;
            };
            let Some(r) = self.runs.iter().position(|run| run.seg.key == seg.key) else {
                if self.runs.len() < self.runs.capacity() {
                    self.runs.push(Run::new(i, seg));
                }
                continue;
            };
            let (head, tail) = slots.split_at_mut(i);
            let run = &mut self.runs[r];
            if run.try_append(&mut head[run.slot], &tail[0], seg) {
                packets[run.slot] += 1;
                packets[i] = 0;
            } else {
                if run.merged > 0 {
                    finish(&mut head[run.slot], run);
                }
                *run = Run::new(i, seg);
            }
        }
        for i in 0..slots.len() {
            if packets[i] == 1 {
                write_plain_header(&mut slots[i]);
            }
        }
        for run in &self.runs {
            if run.merged > 0 {
                finish(&mut slots[run.slot], run);
            }
        }
    }
}

impl Run {
    fn new(slot: usize, seg: Segment) -> Self {
        Self {
            slot,
            seg,
            gso_size: seg.payload,
            next_seq: seg.seq.wrapping_add(seg.payload as u32),
            merged: 0,
            closed: seg.psh,
            head_checksum_ok: false,
        }
    }

    /// Appends `seg` (the packet in `from`) to the run growing in `into` if the rules allow.
    fn try_append(&mut self, into: &mut Vec<u8>, from: &[u8], seg: Segment) -> bool {
        let head = &into[VNET_HDR_LEN..];
        let pkt = &from[VNET_HDR_LEN..];
        let h = &self.seg;
        let headers = seg.iph_len + seg.tcph_len;
        if self.closed
            || seg.seq != self.next_seq
            || seg.v6 != h.v6
            || seg.iph_len != h.iph_len
            || seg.tcph_len != h.tcph_len
            || seg.payload > self.gso_size
            || head.len() + seg.payload > MAX_PACKET
            || into.capacity() < into.len() + seg.payload
            || !ip_headers_match(head, pkt, seg.v6, self.merged)
            // TCP window and options, bytes 14.. of the header.
            || head[h.iph_len + 14..h.iph_len + 16] != pkt[seg.iph_len + 14..seg.iph_len + 16]
            || head[h.iph_len + 20..headers] != pkt[seg.iph_len + 20..headers]
        {
            return false;
        }
        if self.merged == 0 {
            self.head_checksum_ok = tcp_checksum_ok(head, h.iph_len, h.v6);
        }
        if !self.head_checksum_ok || !tcp_checksum_ok(pkt, seg.iph_len, seg.v6) {
            return false;
        }
        into.extend_from_slice(&pkt[headers..]);
        self.next_seq = self.next_seq.wrapping_add(seg.payload as u32);
        self.merged += 1;
        if seg.psh {
            into[VNET_HDR_LEN + h.iph_len + 13] |= TCP_FLAG_PSH;
            self.closed = true;
        }
        if seg.payload < self.gso_size {
            self.closed = true;
        }
        true
    }
}

/// The segment in `p` if it is a GRO candidate: IPv4 without options or fragmentation, or IPv6
/// without extension headers; TCP with only ACK (and PSH) set and a payload.
fn parse(p: &[u8]) -> Option<Segment> {
    let mut key = FlowKey {
        addrs: [0; 32],
        ports: [0; 4],
        ack: [0; 4],
    };
    let (v6, iph_len) = match p.first()? >> 4 {
        4 => {
            if p.len() < 40
                || p[0] & 0x0f != 5
                || p[9] != IPPROTO_TCP
                || usize::from(u16::from_be_bytes([p[2], p[3]])) != p.len()
                // More fragments, or a fragment offset.
                || u16::from_be_bytes([p[6], p[7]]) & 0x3fff != 0
            {
                return None;
            }
            key.addrs[..8].copy_from_slice(&p[12..20]);
            (false, 20)
        }
        6 => {
            if p.len() < 60
                || p[6] != IPPROTO_TCP
                || usize::from(u16::from_be_bytes([p[4], p[5]])) != p.len() - 40
            {
                return None;
            }
            key.addrs.copy_from_slice(&p[8..40]);
            (true, 40)
        }
        _ => return None,
    };
    let tcp = &p[iph_len..];
    let tcph_len = usize::from(tcp[12] >> 4) * 4;
    let flags = tcp[13];
    if !(20..=60).contains(&tcph_len)
        || tcp.len() <= tcph_len
        || flags & !(TCP_FLAG_ACK | TCP_FLAG_PSH) != 0
        || flags & TCP_FLAG_ACK == 0
    {
        return None;
    }
    key.ports.copy_from_slice(&tcp[0..4]);
    key.ack.copy_from_slice(&tcp[8..12]);
    Some(Segment {
        key,
        v6,
        iph_len,
        tcph_len,
        payload: tcp.len() - tcph_len,
        seq: u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]),
        psh: flags & TCP_FLAG_PSH != 0,
    })
}

/// The IP header fields that segmentation copies to every segment are equal, and an IPv4 ID
/// is what segmentation would give the `merged + 1`th segment after the head (IDs may be anything
/// with DF set: such a datagram is atomic and its ID meaningless, RFC 6864).
fn ip_headers_match(head: &[u8], b: &[u8], v6: bool, merged: usize) -> bool {
    if v6 {
        // Version, traffic class, flow label; hop limit.
        head[..4] == b[..4] && head[7] == b[7]
    } else {
        let df = head[6] & 0x40 != 0;
        let id = u16::from_be_bytes([head[4], head[5]]).wrapping_add(merged as u16 + 1);
        // TOS; DF (and the reserved bit); TTL; ID.
        head[1] == b[1]
            && head[6] & 0xc0 == b[6] & 0xc0
            && head[8] == b[8]
            && (df || b[4..6] == id.to_be_bytes())
    }
}

fn tcp_checksum_ok(p: &[u8], iph_len: usize, v6: bool) -> bool {
    let tcp_len = p.len() - iph_len;
    let pseudo = pseudo_header_sum(p, v6, tcp_len);
    fold(sum(&p[iph_len..], pseudo)) == 0xffff
}

/// Sum of the TCP pseudo-header: addresses, protocol, TCP length.
fn pseudo_header_sum(p: &[u8], v6: bool, tcp_len: usize) -> u64 {
    let addrs = if v6 { &p[8..40] } else { &p[12..20] };
    sum(addrs, u64::from(IPPROTO_TCP) + tcp_len as u64)
}

/// Virtio header of a packet passed as it is: no GSO, checksum complete.
fn write_plain_header(slot: &mut [u8]) {
    slot[..VNET_HDR_LEN].fill(0);
}

/// Fixes the IP length (and IPv4 header checksum) of a coalesced packet, leaves the partial
/// (pseudo-header) TCP checksum the kernel completes, and writes the GSO virtio header.
fn finish(slot: &mut [u8], run: &Run) {
    let (hdr, p) = slot.split_at_mut(VNET_HDR_LEN);
    let (iph_len, v6) = (run.seg.iph_len, run.seg.v6);
    let len = p.len();
    let tcp_len = len - iph_len;
    if v6 {
        p[4..6].copy_from_slice(&((len - 40) as u16).to_be_bytes());
    } else {
        p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        p[10..12].fill(0);
        let csum = !fold(sum(&p[..20], 0));
        p[10..12].copy_from_slice(&csum.to_be_bytes());
    }
    let partial = fold(pseudo_header_sum(p, v6, tcp_len));
    p[iph_len + 16..iph_len + 18].copy_from_slice(&partial.to_be_bytes());
    hdr[0] = VIRTIO_NET_HDR_F_NEEDS_CSUM;
    hdr[1] = if v6 {
        VIRTIO_NET_HDR_GSO_TCPV6
    } else {
        VIRTIO_NET_HDR_GSO_TCPV4
    };
    // The kernel reads the legacy virtio header in native byte order.
    let fields = [
        (iph_len + run.seg.tcph_len) as u16, // hdr_len
        run.gso_size as u16,                 // gso_size
        iph_len as u16,                      // csum_start
        16,                                  // csum_offset: TCP checksum
    ];
    for (k, v) in fields.into_iter().enumerate() {
        hdr[2 + 2 * k..4 + 2 * k].copy_from_slice(&v.to_ne_bytes());
    }
}

/// One's-complement sum of `bytes` as big-endian 16-bit words, added to `initial`, unfolded.
/// `tun-rs`'s sum: AVX2 or SSE4.1 when the CPU has them, else the same big-endian 32-bit words
/// in scalar code (verifying every segment before coalescing was 6% of the receiving gateway's
/// CPU time in a profile with a scalar sum).
fn sum(bytes: &[u8], initial: u64) -> u64 {
    tun_rs::checksum_no_fold(bytes, initial)
}

fn fold(mut acc: u64) -> u16 {
    while acc >> 16 != 0 {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An IPv4 (or IPv6) TCP segment with valid checksums.
    fn segment(v6: bool, seq: u32, payload: &[u8], flags: u8) -> Vec<u8> {
        segment_with_id(v6, seq, payload, flags, (seq / 7) as u16)
    }

    fn segment_with_id(v6: bool, seq: u32, payload: &[u8], flags: u8, id: u16) -> Vec<u8> {
        let iph = if v6 { 40 } else { 20 };
        let tcph = 32; // with 12 bytes of options (timestamps)
        let len = iph + tcph + payload.len();
        let mut p = vec![0u8; len];
        if v6 {
            p[0] = 0x60;
            p[4..6].copy_from_slice(&((len - 40) as u16).to_be_bytes());
            p[6] = IPPROTO_TCP;
            p[7] = 64;
            p[8..24].copy_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
            p[24..40].copy_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
        } else {
            p[0] = 0x45;
            p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
            p[4..6].copy_from_slice(&id.to_be_bytes());
            p[6] = 0x40;
            p[8] = 64;
            p[9] = IPPROTO_TCP;
            p[12..16].copy_from_slice(&[10, 0, 0, 1]);
            p[16..20].copy_from_slice(&[10, 0, 0, 2]);
        }
        let t = &mut p[iph..];
        t[0..4].copy_from_slice(&[0x1f, 0x90, 0xc3, 0x50]);
        t[4..8].copy_from_slice(&seq.to_be_bytes());
        t[8..12].copy_from_slice(&777u32.to_be_bytes());
        t[12] = (tcph as u8 / 4) << 4;
        t[13] = flags;
        t[14..16].copy_from_slice(&512u16.to_be_bytes());
        t[20..32].copy_from_slice(&[1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2]);
        t[32..].copy_from_slice(payload);
        fix_checksums(&mut p, v6);
        p
    }

    fn fix_checksums(p: &mut [u8], v6: bool) {
        let iph = if v6 { 40 } else { 20 };
        if !v6 {
            p[10..12].fill(0);
            let c = !fold(sum(&p[..20], 0));
            p[10..12].copy_from_slice(&c.to_be_bytes());
        }
        p[iph + 16..iph + 18].fill(0);
        let c = !fold(pseudo_header_sum(p, v6, p.len() - iph) + sum(&p[iph..], 0));
        p[iph + 16..iph + 18].copy_from_slice(&c.to_be_bytes());
    }

    fn slots_of(packets: &[Vec<u8>]) -> Vec<Vec<u8>> {
        packets
            .iter()
            .map(|p| {
                let mut s = Vec::with_capacity(2 * VNET_HDR_LEN + MAX_PACKET);
                s.resize(VNET_HDR_LEN, 0xee);
                s.extend_from_slice(p);
                s
            })
            .collect()
    }

    fn run(packets: &[Vec<u8>]) -> (Vec<Vec<u8>>, Vec<u16>) {
        let mut slots = slots_of(packets);
        let mut counts = vec![0; slots.len()];
        TcpGro::new(8).coalesce(&mut slots, &mut counts);
        (slots, counts)
    }

    /// Splits `slot` back with tun-rs's segmenter (what the kernel does with a GSO write).
    fn split(slot: &[u8], v6: bool) -> Vec<Vec<u8>> {
        let hdr = tun_rs::VirtioNetHdr::decode(&slot[..VNET_HDR_LEN]).expect("header");
        let mut input = slot[VNET_HDR_LEN..].to_vec();
        let mut out = vec![vec![0u8; 2000]; 64];
        let mut sizes = vec![0; 64];
        let n = tun_rs::gso_split(&mut input, hdr, &mut out, &mut sizes, 0, v6).expect("split");
        out.into_iter()
            .zip(sizes)
            .take(n)
            .map(|(mut b, s)| {
                b.truncate(s);
                b
            })
            .collect()
    }

    /// What `TunTx::push` and `BatchTun::send` do to a batch short of the `write` itself (which
    /// needs a device): copy each packet into its reserved slot behind the header room, coalesce
    /// the batch per flow, empty the slots. None of it allocates once the slots exist.
    #[test]
    fn refilling_and_coalescing_allocate_nothing() {
        // Three interleaved flows (IPv4, IPv4, IPv6) of 1,368-byte segments, 64 packets: a
        // batch of decrypted packets as the sink gathers it.
        let payload = [0x5au8; 1368];
        let packets: Vec<Vec<u8>> = (0..64u32)
            .map(|i| {
                let seq = 1 + (i / 3) * 1368;
                let mut p = segment(i % 3 == 2, seq, &payload, TCP_FLAG_ACK);
                if i % 3 == 1 {
                    // The second IPv4 flow: another source port.
                    p[21] ^= 1;
                    fix_checksums(&mut p, false);
                }
                p
            })
            .collect();
        let mut slots: Vec<Vec<u8>> = (0..packets.len())
            .map(|_| Vec::with_capacity(VNET_HDR_LEN + MAX_PACKET))
            .collect();
        let mut counts = vec![0u16; packets.len()];
        let mut gro = TcpGro::new(packets.len());
        let mut batch = || {
            for (slot, p) in slots.iter_mut().zip(&packets) {
                slot.clear();
                slot.resize(VNET_HDR_LEN, 0);
                slot.extend_from_slice(p);
            }
            gro.coalesce(&mut slots, &mut counts);
            let writes = counts.iter().filter(|&&c| c > 0).count();
            for slot in &mut slots {
                slot.clear();
            }
            writes
        };
        assert_eq!(batch(), 3, "one write per flow");
        let (writes, n) = crate::batch::counting_alloc::allocations_in(|| {
            (0..1000).map(|_| batch()).sum::<usize>()
        });
        assert_eq!(writes, 3000);
        assert_eq!(n, 0, "{n} allocations in 1000 batches of 64 packets");
    }

    #[test]
    fn in_order_segments_coalesce_and_split_back_to_the_originals() {
        for v6 in [false, true] {
            let mut packets = Vec::new();
            let mut seq = 1000u32;
            for k in 0..20u8 {
                let payload = vec![k; if k == 19 { 300 } else { 1000 }];
                // Segmentation numbers IPv4 IDs up from the head's.
                let id = 4000 + u16::from(k);
                packets.push(segment_with_id(v6, seq, &payload, TCP_FLAG_ACK, id));
                seq += payload.len() as u32;
            }
            let (slots, counts) = run(&packets);
            assert_eq!(counts[0], 20);
            assert!(counts[1..].iter().all(|&c| c == 0));
            let hdr = &slots[0][..VNET_HDR_LEN];
            assert_eq!(hdr[0], VIRTIO_NET_HDR_F_NEEDS_CSUM);
            assert_eq!(
                hdr[1],
                if v6 {
                    VIRTIO_NET_HDR_GSO_TCPV6
                } else {
                    VIRTIO_NET_HDR_GSO_TCPV4
                }
            );
            assert_eq!(u16::from_ne_bytes([hdr[4], hdr[5]]), 1000);
            assert_eq!(split(&slots[0], v6), packets, "v6={v6}");
        }
    }

    #[test]
    fn what_may_not_merge_is_left_alone_with_a_plain_header() {
        let a = segment(false, 0, &[1; 100], TCP_FLAG_ACK);
        let gap = segment(false, 150, &[2; 100], TCP_FLAG_ACK);
        let syn = segment(false, 250, &[3; 100], TCP_FLAG_ACK | 0x02);
        let mut bad = segment(false, 250, &[4; 100], TCP_FLAG_ACK);
        bad[60] ^= 1;
        let pure_ack = segment(false, 250, &[], TCP_FLAG_ACK);
        let packets = [a, gap, syn, bad, pure_ack];
        let (slots, counts) = run(&packets);
        assert_eq!(counts, [1, 1, 1, 1, 1]);
        for (slot, p) in slots.iter().zip(&packets) {
            assert_eq!(&slot[..VNET_HDR_LEN], &[0; VNET_HDR_LEN]);
            assert_eq!(&slot[VNET_HDR_LEN..], &p[..]);
        }
    }

    #[test]
    fn psh_and_short_segments_end_a_run_and_flows_are_kept_apart() {
        let mut other = segment(false, 0, &[9; 100], TCP_FLAG_ACK);
        other[19] = 3; // another destination
        fix_checksums(&mut other, false);
        let ack = TCP_FLAG_ACK;
        let packets = [
            segment_with_id(false, 0, &[1; 100], ack, 1),
            other.clone(),
            segment_with_id(false, 100, &[2; 100], ack | TCP_FLAG_PSH, 2),
            segment_with_id(false, 200, &[3; 100], ack, 3),
            segment_with_id(false, 300, &[4; 50], ack, 4),
            segment_with_id(false, 350, &[5; 50], ack, 5),
            segment_with_id(false, 100, &[6; 100], ack, 6),
        ];
        let (slots, counts) = run(&packets);
        // 0+2 (PSH closes), 1 alone, 3+4 (short closes), 5 starts anew, 6 is out of order.
        assert_eq!(counts, [2, 1, 0, 2, 0, 1, 1]);
        assert_eq!(slots[0][VNET_HDR_LEN + 33] & TCP_FLAG_PSH, TCP_FLAG_PSH);
        assert_eq!(
            split(&slots[0], false),
            [packets[0].clone(), packets[2].clone()]
        );
        assert_eq!(
            split(&slots[3], false),
            [packets[3].clone(), packets[4].clone()]
        );
    }

    #[test]
    fn without_df_ipv4_ids_must_count_up() {
        let mut packets = [
            segment_with_id(false, 0, &[1; 100], TCP_FLAG_ACK, 10),
            segment_with_id(false, 100, &[2; 100], TCP_FLAG_ACK, 11),
            segment_with_id(false, 200, &[3; 100], TCP_FLAG_ACK, 11),
        ];
        for p in &mut packets {
            p[6] = 0;
            fix_checksums(p, false);
        }
        let (_, counts) = run(&packets);
        assert_eq!(counts, [2, 0, 1]);
    }

    #[test]
    fn checksum_matches_a_naive_sum() {
        let data: Vec<u8> = (0..1001u32).map(|i| (i * 7 + 3) as u8).collect();
        // Around the 16- and 32-byte chunks of the SIMD sums too.
        for len in [
            0, 1, 2, 3, 4, 5, 15, 16, 17, 31, 32, 33, 63, 64, 65, 1000, 1001,
        ] {
            let naive: u64 = data[..len]
                .chunks(2)
                .map(|c| u64::from(c[0]) << 8 | c.get(1).map_or(0, |&b| u64::from(b)))
                .sum();
            assert_eq!(fold(sum(&data[..len], 5)), fold(naive + 5), "len {len}");
        }
    }
}
