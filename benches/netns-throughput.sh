#!/usr/bin/env bash
# Throughput, latency and CPU cost of sitelink against stock userspace WireGuard, on this machine.
#
#   sudo bash benches/netns-throughput.sh [--repeat N] [--pings N] [--duration S] [--only LIST]
#                                         [--memory [S]] [--baseline BIN] [--ping-rounds N]
#                                         [--skip-build]
#
#   netns A: 198.51.100.1/24 ── veth ── 198.51.100.2/24 :netns B
#            tunnel .1 (MTU 1420)    ···    tunnel .2 (MTU 1420)
#
# Two namespaces joined by one veth pair. In turn, each of these carries iperf3 and ping from A
# to B (only one runs at a time; each is torn down before the next starts):
#   veth           the plain veth link, no tunnel (MTU 1500): the ceiling
#   sitelink-plain sitelink-gateway with SITELINK_DATAPATH=plain: one packet per system call,
#                  the path before batching                          10.204.0.0/24
#   sitelink       sitelink-gateway in A and in B (batched I/O, offloads) 10.201.0.0/24
#   baseline       with --baseline BIN: that sitelink-gateway, batched   10.205.0.0/24
#   wireguard-go   the distribution's wireguard-go, configured with wg 10.202.0.0/24
#   boringtun-cli  boringtun-cli (cargo install), configured with wg   10.203.0.0/24
# and measures: iperf3 TCP with 1 stream, 4 streams (-P 4) and 1 stream reversed (-R, B sends),
# each --repeat times (median, min and max); --pings pings 0.1 s apart (mean and median RTT),
# then 40 more captured with tcpdump in both namespaces to split the round trip into its 7 hops
# (where the time goes); and the CPU time (user + system, from /proc/PID/stat) that the tunnel
# processes of both ends used per gigabyte iperf3 delivered. Then, with every path up at once
# (each has its own subnet and port), pings go through the paths in turn, 20 per path per round:
# RTTs compared at the same moments, not minutes apart. It ends with Markdown tables and
# sitelink's ratio to the better of the other two.
#
# Options:
#   --repeat N      runs per iperf3 test (default 3)
#   --pings N       pings per path for the RTT columns (default 100)
#   --duration S    seconds per iperf3 run (default 10)
#   --only LIST     comma-separated subset of veth,sitelink-plain,sitelink,wireguard-go,boringtun-cli
#   --memory [S]    after the tests of each sitelink path (sitelink, sitelink-plain, baseline), one
#                   more iperf3 transfer (1 stream) of S seconds (default 60) while VmRSS and VmHWM
#                   of both gateway processes are sampled from /proc/PID/status every second; the
#                   report adds, per side, RSS once up (before any traffic), RSS at the start, max
#                   and end of that transfer, its growth, and VmHWM
#   --baseline BIN  also measure sitelink-gateway binary BIN (batched) as path "baseline", just
#                   before sitelink: an earlier build, for a before/after in one run
#   --ping-rounds N rounds of the interleaved pings (default 10; 0 skips them)
#   --skip-build    use $CARGO_TARGET_DIR/release/sitelink-{gateway,keys} (default target/) as they
#                   are (also SKIP_BUILD=1)
#
# Needs root. Installs iperf3, wireguard-go, wireguard-tools, jq and tcpdump with apt-get when missing, and
# boringtun-cli with `cargo install --locked --root target/bench-tools` (kept there for later
# runs; if it does not build or run, its row says n/a and why). Changes no host-wide setting:
# the namespaces are new and the programs size their own socket buffers. Bounded in time: every
# step has a timeout (about 4 x 3 x N x (S + 2) s in all, plus --pings / 10 s and 2 s per
# --ping-rounds round per path, --memory's S per sitelink path and the builds). Removes its
# namespaces, processes and files on exit, also when interrupted; leftovers of earlier runs that
# were killed are removed first.
#
# Read the numbers with care: client, server and both tunnel ends share this machine's CPUs, so
# a path is limited by the cost of all four; anything else running makes the numbers noisy (the
# load average at start and end is printed). CPU time counts what runs in the tunnel processes'
# context (including their system calls), not kernel work done for them in softirq context.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD

REPEAT=3
PINGS=100
DURATION=10
ONLY=veth,sitelink-plain,sitelink,wireguard-go,boringtun-cli
SKIP_BUILD=${SKIP_BUILD:-0}
BASELINE=
MEMORY=0
PING_ROUNDS=10
usage() { sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; }
while [[ $# -gt 0 ]]; do
    case $1 in
        --repeat) REPEAT=${2:?--repeat needs a number}; shift 2 ;;
        --pings) PINGS=${2:?--pings needs a number}; shift 2 ;;
        --duration) DURATION=${2:?--duration needs seconds}; shift 2 ;;
        --only) ONLY=${2:?--only needs a list}; shift 2 ;;
        --ping-rounds) PING_ROUNDS=${2:?--ping-rounds needs a number}; shift 2 ;;
        --skip-build) SKIP_BUILD=1; shift ;;
        --memory)
            if [[ ${2:-} =~ ^[0-9]+$ ]]; then MEMORY=$2; shift 2; else MEMORY=60; shift; fi
            ;;
        --baseline) BASELINE=${2:?--baseline needs a sitelink-gateway binary}; shift 2 ;;
        -h | --help) usage; exit 0 ;;
        *) echo "unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
[[ $REPEAT =~ ^[1-9][0-9]*$ ]] || { echo "--repeat must be a positive integer" >&2; exit 2; }
[[ $DURATION =~ ^[1-9][0-9]*$ ]] || { echo "--duration must be a positive integer" >&2; exit 2; }
[[ $PINGS =~ ^[1-9][0-9]*$ ]] || { echo "--pings must be a positive integer" >&2; exit 2; }
[[ $PING_ROUNDS =~ ^[0-9]+$ ]] || { echo "--ping-rounds must be a number (0 skips them)" >&2; exit 2; }
[[ $MEMORY =~ ^[0-9]+$ && ($MEMORY == 0 || $MEMORY -ge 3) ]] ||
    { echo "--memory must be a number of seconds, at least 3" >&2; exit 2; }
IMPLS=()
for name in ${ONLY//,/ }; do
    case $name in
        veth | sitelink-plain | wireguard-go) IMPLS+=("$name") ;;
        sitelink)
            [[ -n $BASELINE ]] && IMPLS+=(baseline)
            IMPLS+=(sitelink)
            ;;
        boringtun | boringtun-cli) IMPLS+=(boringtun-cli) ;;
        *) echo "--only: unknown path $name (veth, sitelink-plain, sitelink, wireguard-go, boringtun-cli)" >&2; exit 2 ;;
    esac
done
wants() { [[ " ${IMPLS[*]} " == *" $1 "* ]]; }

if [[ $(id -u) -ne 0 ]]; then
    echo "This benchmark creates network namespaces and TUN devices: run it as root (sudo)." >&2
    exit 1
fi

say() { printf '\n\033[1m==> %s\033[0m\n' "$*" >&2; }
note() { printf '    %s\n' "$*" >&2; }
in_ns() { local ns=$1; shift; ip netns exec "$ns" "$@"; }

# --- tools ------------------------------------------------------------------------------------
missing=()
command -v iperf3 >/dev/null || missing+=(iperf3)
command -v jq >/dev/null || missing+=(jq)
command -v ping >/dev/null || missing+=(iputils-ping)
command -v ss >/dev/null || missing+=(iproute2)
command -v tcpdump >/dev/null || missing+=(tcpdump)
if wants wireguard-go || wants boringtun-cli; then
    command -v wg >/dev/null || missing+=(wireguard-tools)
fi
if wants wireguard-go; then
    command -v wireguard-go >/dev/null || missing+=(wireguard-go)
fi
if [[ ${#missing[@]} -gt 0 ]]; then
    say "Installing ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y "${missing[@]}" >&2 || {
        timeout 300 apt-get update >&2
        DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y "${missing[@]}" >&2
    }
fi

# --- cleanup ----------------------------------------------------------------------------------
ID=$$
PREFIX=slbench-$ID
NS_A=$PREFIX-a
NS_B=$PREFIX-b
WORK=$(mktemp -d /tmp/sitelink-bench.XXXXXX)
PIDS=()        # every long-running process this script started
SOCKETS=()     # UAPI sockets of wireguard-go and boringtun-cli, in case they leave them behind

remove_namespaces() {
    local ns pid
    for ns in "$@"; do
        ip netns list | awk '{print $1}' | grep -qx -- "$ns" || continue
        for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null || true; done
        ip netns del "$ns" 2>/dev/null || true
    done
}
stop_pids() {
    local pid
    for pid in "$@"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "$@"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
}
cleanup() {
    local status=$?
    trap - EXIT INT TERM
    say "Cleaning up"
    stop_pids "${PIDS[@]}"
    remove_namespaces "$NS_A" "$NS_B"
    for s in "${SOCKETS[@]}"; do rm -f "$s"; done
    if [[ $status -ne 0 ]]; then
        echo "benchmark FAILED (exit $status); last lines of the logs:" >&2
        for log in "$WORK"/*.log; do
            [[ -f $log ]] && { echo "--- $log" >&2; tail -n 20 "$log" >&2; }
        done
    fi
    rm -rf "$WORK"
    note "removed namespaces $PREFIX-* and $WORK"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

for ns in $(ip netns list | awk '{print $1}' | grep '^slbench-' || true); do
    pid=${ns#slbench-}
    pid=${pid%%-*}
    if ! kill -0 "$pid" 2>/dev/null; then
        note "removing stale namespace $ns from an earlier run"
        remove_namespaces "$ns"
    fi
done

# --- builds -----------------------------------------------------------------------------------
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release
GW=$BIN/sitelink-gateway
KEYS=$BIN/sitelink-keys
TOOLS=$ROOT/target/bench-tools
BORINGTUN=$TOOLS/bin/boringtun-cli
declare -A NA=()   # path -> why it has no numbers

if wants sitelink || wants sitelink-plain; then
    if [[ $SKIP_BUILD != 1 ]]; then
        say "Building sitelink (release)"
        cargo build --release -p sitelink-gateway -p sitelink-keys >&2
    fi
    [[ -x $GW && -x $KEYS ]] || { echo "$GW or $KEYS missing: build them first" >&2; exit 1; }
fi
if wants boringtun-cli && [[ ! -x $BORINGTUN ]]; then
    say "Installing boringtun-cli into $TOOLS (once)"
    if ! timeout 1200 cargo install boringtun-cli --locked --root "$TOOLS" >"$WORK/boringtun-install.log" 2>&1; then
        NA[boringtun-cli]="cargo install failed: $(grep -m1 -E '^error' "$WORK/boringtun-install.log" || tail -n1 "$WORK/boringtun-install.log")"
        note "${NA[boringtun-cli]}"
    fi
fi

# --- network ----------------------------------------------------------------------------------
WAN_A=198.51.100.1
WAN_B=198.51.100.2
PORT=51820
say "Creating namespaces $NS_A and $NS_B joined by a veth pair"
for ns in "$NS_A" "$NS_B"; do
    ip netns add "$ns"
    in_ns "$ns" ip link set lo up
done
ip link add wan netns "$NS_A" type veth peer name wan netns "$NS_B"
in_ns "$NS_A" ip addr add "$WAN_A/24" dev wan
in_ns "$NS_B" ip addr add "$WAN_B/24" dev wan
in_ns "$NS_A" ip link set wan up
in_ns "$NS_B" ip link set wan up

ip netns exec "$NS_B" iperf3 -s >"$WORK/iperf3-server.log" 2>&1 &
PIDS+=("$!")
for _ in $(seq 50); do
    [[ -n $(in_ns "$NS_B" ss -Hltn 'sport = :5201') ]] && break
    sleep 0.1
done
[[ -n $(in_ns "$NS_B" ss -Hltn 'sport = :5201') ]] || { echo "iperf3 server did not start" >&2; exit 1; }

# --- measuring --------------------------------------------------------------------------------
CLK_TCK=$(getconf CLK_TCK)
TUNNEL_PIDS=()   # the tunnel processes of the path under test, both ends

cpu_ticks() { # utime + stime of every tunnel process, in clock ticks
    local total=0 pid t
    for pid in "${TUNNEL_PIDS[@]}"; do
        # Fields after the ")" closing the command name: state is 3, utime 14, stime 15.
        t=$(sed 's/.*) //' "/proc/$pid/stat" | awk '{print $12 + $13}') || return 1
        total=$((total + t))
    done
    echo "$total"
}

wait_ping() { # ns addr
    for _ in $(seq 20); do
        in_ns "$1" ping -n -q -c 1 -W 1 "$2" >/dev/null 2>&1 && return 0
    done
    return 1
}

declare -A RES=()  # "path,column" -> "median min max"
KINDS=(single four reverse)
kind_args() {
    case $1 in
        single) echo "" ;;
        four) echo "-P 4" ;;
        reverse) echo "-R" ;;
    esac
}

stats() { # values... -> "median min max"
    printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 }
        END { m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
              printf "%s %s %s\n", m, v[1], v[NR] }'
}

ping_rtts() { # ping's output on stdin -> one RTT (ms) per line
    sed -n 's/.*time=\([0-9.]*\) ms.*/\1/p'
}

rtt_stats() { # RTTs (ms), one per line, on stdin -> "mean p25 median p75 count" ("nan ... 0" if none)
    sort -g | awk '{ v[NR] = $1; s += $1 }
        END { if (NR == 0) { print "nan nan nan nan 0"; exit }
              m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
              printf "%.3f %.3f %.3f %.3f %d\n", s / NR, v[int((NR + 3) / 4)], m, v[int((3 * NR + 3) / 4)], NR }'
}

measure() { # path dst-address
    local impl=$1 dst=$2 kind run json gbps bytes retr t0 t1 cpu_per_gb rtt rtt_med n
    if ! wait_ping "$NS_A" "$dst"; then
        NA[$impl]="no ping reply from $dst across the tunnel within 20 s"
        note "${NA[$impl]}"
        return 1
    fi
    # One RTT per line, then their mean and median: a few slow pings (the VM's own hiccups,
    # milliseconds long, seen on every path) move the mean of a short run a lot; the median
    # shows the usual round trip.
    read -r rtt _ rtt_med _ n < <(in_ns "$NS_A" ping -n -c "$PINGS" -i 0.1 -w $((PINGS / 10 + 10)) "$dst" |
        ping_rtts | rtt_stats)
    RES[$impl,rtt]="$rtt $rtt $rtt"
    RES[$impl,rtt_med]="$rtt_med $rtt_med $rtt_med"
    note "ping: RTT mean $rtt ms, median $rtt_med ms over $n pings"
    rtt_hops "$impl" "$dst"
    for kind in "${KINDS[@]}"; do
        local tputs=() cpus=()
        for run in $(seq "$REPEAT"); do
            sleep 1
            t0=$( ((${#TUNNEL_PIDS[@]})) && cpu_ticks || echo 0)
            # shellcheck disable=SC2046  # the extra iperf3 arguments are meant to split
            json=$(timeout $((DURATION + 30)) ip netns exec "$NS_A" \
                iperf3 -c "$dst" -t "$DURATION" -J --connect-timeout 5000 $(kind_args "$kind")) || true
            t1=$( ((${#TUNNEL_PIDS[@]})) && cpu_ticks || echo 0)
            if ! jq -e '.end.sum_received.bytes > 0' >/dev/null 2>&1 <<<"$json"; then
                note "$kind run $run: iperf3 failed: $(jq -r '.error // "no output"' <<<"$json" 2>/dev/null || echo 'no JSON')"
                continue
            fi
            bytes=$(jq '.end.sum_received.bytes' <<<"$json")
            gbps=$(jq '.end.sum_received.bits_per_second / 1e9' <<<"$json")
            retr=$(jq '.end.sum_sent.retransmits // 0' <<<"$json")
            tputs+=("$gbps")
            if ((${#TUNNEL_PIDS[@]})); then
                cpu_per_gb=$(awk -v t=$((t1 - t0)) -v hz="$CLK_TCK" -v b="$bytes" 'BEGIN { printf "%.3f", t / hz / (b / 1e9) }')
                cpus+=("$cpu_per_gb")
            else
                cpu_per_gb=n/a
            fi
            note "$(printf '%-8s run %d: %6.2f Gbit/s, %s retransmits, tunnel CPU %s s/GB' "$kind" "$run" "$gbps" "$retr" "$cpu_per_gb")"
        done
        [[ ${#tputs[@]} -gt 0 ]] && RES[$impl,$kind]=$(stats "${tputs[@]}")
        [[ ${#cpus[@]} -gt 0 ]] && RES[$impl,cpu_$kind]=$(stats "${cpus[@]}")
    done
    return 0
}

# Where a ping's round trip goes: 40 more pings with tcpdump in both namespaces; each packet is
# stamped by the kernel as it crosses a tunnel interface or the veth, so a round trip splits
# into 7 hops (A tunnel -> wire: A's tunnel process wakes, encrypts, sends; the veth; B wire ->
# tunnel; B's kernel answers; B tunnel -> wire; the veth; A wire -> tunnel). Medians in µs.
rtt_hops() { # path dst-address
    local impl=$1 dst=$2 ta tb port
    port=$(path_port "$impl")
    command -v tcpdump >/dev/null && command -v python3 >/dev/null || return 0
    [[ $impl == veth ]] && return 0
    for side in a b; do
        local ns=$NS_A; [[ $side == b ]] && ns=$NS_B
        timeout 30 ip netns exec "$ns" tcpdump -i any -nn -U -w "$WORK/hops-$side.pcap" \
            "icmp or udp port $port" >/dev/null 2>&1 &
        [[ $side == a ]] && ta=$! || tb=$!
    done
    sleep 1.5
    in_ns "$NS_A" ping -n -q -c 40 -i 0.1 -w 15 "$dst" >/dev/null 2>&1 || true
    sleep 0.5
    kill "$ta" "$tb" 2>/dev/null || true
    wait "$ta" "$tb" 2>/dev/null || true
    RES[$impl,hops]=$(python3 - "$WORK/hops-a.pcap" "$WORK/hops-b.pcap" <<'PY' 2>/dev/null || true
import statistics, subprocess, sys
events = []
for side, path in (("A", sys.argv[1]), ("B", sys.argv[2])):
    out = subprocess.run(["tcpdump", "-nn", "-tt", "-r", path], capture_output=True, text=True).stdout
    events += [(float(line.split()[0]), side, line) for line in out.splitlines() if line]
events.sort()
trips, trip = [], None
for t, side, line in events:
    if side == "A" and "echo request" in line and " Out " in line:
        trip = [t]
        trips.append(trip)
    elif trip is not None:
        trip.append(t)
hops = [[(b - a) * 1e6 for a, b in zip(t, t[1:])] for t in trips if len(t) == 8]
if len(hops) >= 10:
    print(len(hops), *(round(statistics.median(h[i] for h in hops)) for i in range(7)))
PY
)
    [[ -n ${RES[$impl,hops]} ]] && note "ping hops (µs, median of ${RES[$impl,hops]%% *}): ${RES[$impl,hops]#* }"
    return 0
}

declare -A MEM=()  # "path,side" -> "start max end hwm" RSS in KiB; "path,idle_side" -> RSS in
                   # KiB once up, before any traffic; "path,gbps" -> rate of the memory run

mem_kib() { # pid -> "VmRSS VmHWM" in KiB
    awk '/^VmRSS:/ { r = $2 } /^VmHWM:/ { h = $2 } END { print r + 0, h + 0 }' "/proc/$1/status"
}

# One iperf3 transfer of $MEMORY s from A to dst while both tunnel processes' memory is sampled
# every second. A side's figures: RSS when the transfer starts, the largest sample, the last one
# (taken after iperf3 ended), and VmHWM (the peak RSS since the process started) at the end.
measure_memory() { # path dst-address
    local impl=$1 dst=$2 ipid json i side rss hwm samples=0
    local -a start=() max=() last=() peak=()
    for i in "${!TUNNEL_PIDS[@]}"; do
        read -r rss hwm < <(mem_kib "${TUNNEL_PIDS[$i]}") || return 1
        start[i]=$rss max[i]=$rss last[i]=$rss peak[i]=$hwm
    done
    timeout $((MEMORY + 30)) ip netns exec "$NS_A"         iperf3 -c "$dst" -t "$MEMORY" -J --connect-timeout 5000 >"$WORK/memory-$impl.json" 2>&1 &
    ipid=$!
    PIDS+=("$ipid")
    while kill -0 "$ipid" 2>/dev/null; do
        sleep 1
        for i in "${!TUNNEL_PIDS[@]}"; do
            read -r rss hwm < <(mem_kib "${TUNNEL_PIDS[$i]}") || return 1
            last[i]=$rss peak[i]=$hwm
            ((rss > max[i])) && max[i]=$rss
        done
        samples=$((samples + 1))
    done
    wait "$ipid" 2>/dev/null || true
    forget_pids "$ipid"
    json=$(cat "$WORK/memory-$impl.json")
    if ! jq -e '.end.sum_received.bytes > 0' >/dev/null 2>&1 <<<"$json"; then
        note "memory run: iperf3 failed: $(jq -r '.error // "no output"' <<<"$json" 2>/dev/null || echo 'no JSON')"
        return 1
    fi
    MEM[$impl,gbps]=$(jq '.end.sum_received.bits_per_second / 1e9' <<<"$json")
    MEM[$impl,samples]=$samples
    for i in "${!TUNNEL_PIDS[@]}"; do
        side=$( ((i == 0)) && echo A || echo B)
        MEM[$impl,$side]="${start[i]} ${max[i]} ${last[i]} ${peak[i]}"
        note "$(printf 'memory, gateway %s: RSS %d KiB at start, %d max, %d at end (%+d KiB); VmHWM %d KiB' \
            "$side" "${start[i]}" "${max[i]}" "${last[i]}" $((last[i] - start[i])) "${peak[i]}")"
    done
    note "$(printf 'memory run: %.2f Gbit/s over %d s, %d samples' "${MEM[$impl,gbps]}" "$MEMORY" "$samples")"
}

# --- the paths --------------------------------------------------------------------------------
start_bg() { # log ns argv... ; sets STARTED to the program's PID
    local log=$1 ns=$2
    shift 2
    # Not through in_ns: a backgrounded shell function is a subshell with a PID of its own,
    # whereas `ip netns exec` (like `env`) execs the program, which keeps this PID.
    ip netns exec "$ns" "$@" >"$log" 2>&1 &
    STARTED=$!
    PIDS+=("$STARTED")
}

forget_pids() { # drop stopped processes from PIDS
    local keep=() p q
    for p in "${PIDS[@]}"; do
        for q in "$@"; do [[ $p == "$q" ]] && continue 2; done
        keep+=("$p")
    done
    PIDS=("${keep[@]}")
}

# Each tunnel path has a subnet, a UDP port and interface names of its own, so that all of them
# can be up at once for the interleaved pings.
path_net() {
    case $1 in
        sitelink) echo 10.201.0 ;;
        wireguard-go) echo 10.202.0 ;;
        boringtun-cli) echo 10.203.0 ;;
        sitelink-plain) echo 10.204.0 ;;
        baseline) echo 10.205.0 ;;
    esac
}
path_tag() {
    case $1 in
        sitelink) echo sl ;;
        sitelink-plain) echo sp ;;
        baseline) echo bl ;;
        *) echo "${1:0:2}" ;;
    esac
}
path_port() {
    case $1 in
        sitelink) echo "$PORT" ;;
        wireguard-go) echo $((PORT + 1)) ;;
        boringtun-cli) echo $((PORT + 2)) ;;
        sitelink-plain) echo $((PORT + 3)) ;;
        baseline) echo $((PORT + 4)) ;;
    esac
}
# The address that A pings and sends iperf3 traffic to, through the path.
path_dst() { if [[ $1 == veth ]]; then echo "$WAN_B"; else echo "$(path_net "$1").2"; fi; }

declare -A UP_PIDS=()  # path -> PIDs of its tunnel processes while it is up

up_sitelink() { # path datapath-mode (batch | plain) [gateway-binary]
    local impl=$1 mode=$2 gw=${3:-$GW} side ns ip peer_ip peer_wan pub pub_a pub_b pids=()
    local net tag port
    net=$(path_net "$impl") tag=$(path_tag "$impl") port=$(path_port "$impl")
    rm -f "$WORK/$tag"-[ab].sock "$WORK/$tag"-[ab].key
    "$KEYS" genkey --out "$WORK/$tag-a.key" >/dev/null
    "$KEYS" genkey --out "$WORK/$tag-b.key" >/dev/null
    pub_a=$("$KEYS" pubkey <"$WORK/$tag-a.key")
    pub_b=$("$KEYS" pubkey <"$WORK/$tag-b.key")
    for side in a b; do
        if [[ $side == a ]]; then ip=1 peer_ip=2 peer_wan=$WAN_B pub=$pub_b ns=$NS_A
        else ip=2 peer_ip=1 peer_wan=$WAN_A pub=$pub_a ns=$NS_B; fi
        cat >"$WORK/$tag-$side.toml" <<EOF
[interface]
name = "$tag${ID}$side"
private_key_file = "$tag-$side.key"
listen_port = $port
address = ["$net.$ip/24"]
mtu = 1420

[[peer]]
name = "bench-peer"
public_key = "$pub"
endpoint = "$peer_wan:$port"
allowed_ips = ["$net.$peer_ip/32"]
EOF
        start_bg "$WORK/$impl-$side.log" "$ns" env RUST_LOG=warn SITELINK_DATAPATH="$mode" \
            "$gw" up --config "$WORK/$tag-$side.toml" --socket "$WORK/$tag-$side.sock"
        pids+=("$STARTED")
    done
    UP_PIDS[$impl]="${pids[*]}"
    for _ in $(seq 100); do
        [[ -S $WORK/$tag-a.sock && -S $WORK/$tag-b.sock ]] && break
        sleep 0.1
    done
    if ! [[ -S $WORK/$tag-a.sock && -S $WORK/$tag-b.sock ]]; then
        NA[$impl]="the gateways did not come up within 10 s (see $WORK/$impl-*.log)"
        note "${NA[$impl]}"
        tail -n 5 "$WORK/$impl"-*.log >&2 || true
        return 1
    fi
}

# wireguard-go and boringtun-cli speak the same UAPI: the daemon makes the TUN device and the
# socket /var/run/wireguard/IFACE.sock (host-wide, hence the PID in the name); wg configures it.
up_uapi() { # path daemon-argv-prefix...
    local impl=$1 side ns ip peer_ip peer_wan other iface pids=() net tag port
    shift
    net=$(path_net "$impl") tag=$(path_tag "$impl") port=$(path_port "$impl")
    (umask 077 && wg genkey >"$WORK/$tag-a.key" && wg genkey >"$WORK/$tag-b.key")
    for side in a b; do
        iface=$tag$ID$side
        ns=$([[ $side == a ]] && echo "$NS_A" || echo "$NS_B")
        SOCKETS+=("/var/run/wireguard/$iface.sock")
        start_bg "$WORK/$impl-$side.log" "$ns" env WG_PROCESS_FOREGROUND=1 "$@" "$iface"
        pids+=("$STARTED")
    done
    UP_PIDS[$impl]="${pids[*]}"
    for side in a b; do
        iface=$tag$ID$side
        if [[ $side == a ]]; then ip=1 peer_ip=2 peer_wan=$WAN_B ns=$NS_A other=b
        else ip=2 peer_ip=1 peer_wan=$WAN_A ns=$NS_B other=a; fi
        for _ in $(seq 100); do
            [[ -S /var/run/wireguard/$iface.sock ]] && break
            sleep 0.1
        done
        if ! [[ -S /var/run/wireguard/$iface.sock ]] ||
            ! in_ns "$ns" wg set "$iface" private-key "$WORK/$tag-$side.key" listen-port "$port" \
                peer "$(wg pubkey <"$WORK/$tag-$other.key")" endpoint "$peer_wan:$port" \
                allowed-ips "$net.$peer_ip/32" >>"$WORK/$impl-$side.log" 2>&1 ||
            ! in_ns "$ns" ip addr add "$net.$ip/24" dev "$iface" ||
            ! in_ns "$ns" ip link set "$iface" mtu 1420 up; then
            NA[$impl]="$* did not start or could not be configured: $(tail -n 1 "$WORK/$impl-$side.log" 2>/dev/null)"
            note "${NA[$impl]}"
            return 1
        fi
    done
}

up_path() { # path: starts its tunnel processes (veth has none)
    case $1 in
        veth) UP_PIDS[veth]="" ;;
        sitelink) up_sitelink sitelink batch ;;
        sitelink-plain) up_sitelink sitelink-plain plain ;;
        baseline) up_sitelink baseline batch "$BASELINE" ;;
        wireguard-go) up_uapi wireguard-go wireguard-go -f ;;
        boringtun-cli)
            up_uapi boringtun-cli "$BORINGTUN" -f --disable-drop-privileges \
                -l "$WORK/boringtun-cli-daemon.log"
            ;;
    esac
}

down_path() { # path
    local pids
    read -r -a pids <<<"${UP_PIDS[$1]:-}"
    unset "UP_PIDS[$1]"
    ((${#pids[@]})) || return 0
    stop_pids "${pids[@]}"
    forget_pids "${pids[@]}"
}

run_path() { # path: up, iperf3 and ping (and --memory for sitelink builds), down
    local impl=$1 ok=0
    if up_path "$impl"; then
        read -r -a TUNNEL_PIDS <<<"${UP_PIDS[$impl]}"
        # --memory watches the sitelink builds only.
        local memory=0
        [[ $MEMORY -gt 0 && ($impl == sitelink* || $impl == baseline) ]] && memory=1
        if ((memory)); then
            MEM[$impl,idle_A]=$(mem_kib "${TUNNEL_PIDS[0]}" | cut -d' ' -f1) || true
            MEM[$impl,idle_B]=$(mem_kib "${TUNNEL_PIDS[1]}" | cut -d' ' -f1) || true
        fi
        measure "$impl" "$(path_dst "$impl")" || ok=$?
        if ((memory)) && [[ $ok == 0 ]]; then
            say "Memory of $impl during a ${MEMORY} s transfer"
            measure_memory "$impl" "$(path_dst "$impl")" || note "memory run failed"
        fi
    else
        ok=1
    fi
    TUNNEL_PIDS=()
    down_path "$impl"
    return "$ok"
}

# Ping RTT with every path up at once, interleaved: --ping-rounds rounds, each a burst of 20
# pings 0.1 s apart through every path in turn. Unlike the per-path pings, taken minutes apart,
# these see the same machine: what else runs, and how busy the VM's host is, drifts during a
# run, and the per-path numbers move with it.
interleaved_pings() {
    local impl round up=() dst mean q1 med q3 n
    say "Interleaved pings: all paths up, $PING_ROUNDS rounds of 20 pings per path"
    for impl in "${IMPLS[@]}"; do
        [[ -n ${NA[$impl]:-} ]] && continue
        if up_path "$impl" && wait_ping "$NS_A" "$(path_dst "$impl")"; then
            up+=("$impl")
            : >"$WORK/rtt-$impl"
        else
            note "$impl: not up for the interleaved pings"
        fi
    done
    for round in $(seq "$PING_ROUNDS"); do
        for impl in "${up[@]}"; do
            dst=$(path_dst "$impl")
            in_ns "$NS_A" ping -n -c 20 -i 0.1 -w 12 "$dst" | ping_rtts >>"$WORK/rtt-$impl" || true
        done
    done
    for impl in "${up[@]}"; do
        read -r mean q1 med q3 n < <(rtt_stats <"$WORK/rtt-$impl")
        RES[$impl,il_n]=$n
        # As "median min max" triples, the form ratio() reads.
        RES[$impl,il_mean]="$mean $mean $mean" RES[$impl,il_p25]="$q1 $q1 $q1"
        RES[$impl,il_med]="$med $med $med" RES[$impl,il_p75]="$q3 $q3 $q3"
        note "$impl: RTT mean $mean, p25 $q1, median $med, p75 $q3 ms over $n pings"
        down_path "$impl"
    done
}

START_LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
for impl in "${IMPLS[@]}"; do
    [[ -n ${NA[$impl]:-} ]] && continue
    say "Measuring $impl: iperf3 ${REPEAT} x ${DURATION} s per test"
    run_path "$impl" || true
done
[[ $PING_ROUNDS -gt 0 ]] && interleaved_pings
END_LOAD=$(cut -d' ' -f1-3 /proc/loadavg)

# --- report -----------------------------------------------------------------------------------
cell() { # path column -> "median (min–max)" or n/a
    local v=${RES[$1,$2]:-}
    [[ -z $v ]] && { echo "n/a"; return; }
    read -r med min max <<<"$v"
    if [[ $REPEAT -eq 1 || $2 == rtt* ]]; then
        printf '%.3g' "$med"
    else
        printf '%.3g (%.3g–%.3g)' "$med" "$min" "$max"
    fi
}
ratio() { # column higher-is-better(1|0) [others...] -> sitelink / best of the others
    local col=$1 higher=$2 s best="" o v others=(wireguard-go boringtun-cli)
    [[ $# -gt 2 ]] && others=("${@:3}")
    s=${RES[sitelink,$col]:-}
    [[ -z $s ]] && { echo "n/a"; return; }
    for o in "${others[@]}"; do
        v=${RES[$o,$col]:-}
        [[ -z $v ]] && continue
        v=${v%% *}
        if [[ -z $best ]] || awk -v a="$v" -v b="$best" -v h="$higher" 'BEGIN { exit !(h ? a > b : a < b) }'; then
            best=$v
        fi
    done
    [[ -z $best ]] && { echo "n/a"; return; }
    awk -v s="${s%% *}" -v b="$best" 'BEGIN { if (b == 0) print "n/a"; else printf "%.2f×", s / b }'
}
describe() {
    case $1 in
        veth) echo "plain veth (MTU 1500)" ;;
        sitelink) echo "sitelink $(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo '?') (batched)" ;;
        sitelink-plain) echo "sitelink $(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo '?') (plain)" ;;
        baseline) echo "baseline: $BASELINE (batched)" ;;
        wireguard-go) echo "wireguard-go $(wireguard-go --version 2>/dev/null | awk 'NR==1 {print $2}')" ;;
        boringtun-cli) echo "boringtun-cli $("$BORINGTUN" --version 2>/dev/null | awk '{print $2}')" ;;
    esac
}

MODEL=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
{
    echo
    echo "## sitelink throughput on $(hostname) ($(date -u '+%Y-%m-%d %H:%M UTC'))"
    echo
    echo "Machine: $(nproc) CPUs, ${MODEL:-unknown CPU}, Linux $(uname -r); load average $START_LOAD at start, $END_LOAD at end."
    echo "iperf3 $(iperf3 --version | awk 'NR==1 {print $2}') TCP from netns A to netns B through each path, tunnel MTU 1420;"
    echo "$REPEAT run(s) of $DURATION s per test: median (min–max). Gbit/s is iperf3's receiver rate; RTT: mean and median of $PINGS pings 0.1 s apart."
    echo "CPU s/GB: user + system CPU seconds of both tunnel processes per 10^9 bytes received by iperf3 (lower is better)."
    echo
    echo "| path | 1 stream Gbit/s | 4 streams Gbit/s | reverse Gbit/s | ping RTT ms mean | ping RTT ms median | CPU s/GB 1 stream | CPU s/GB 4 streams | CPU s/GB reverse |"
    echo "|---|---|---|---|---|---|---|---|---|"
    for impl in "${IMPLS[@]}"; do
        if [[ -n ${NA[$impl]:-} && -z ${RES[$impl,rtt]:-} ]]; then
            echo "| $(describe "$impl") | n/a | n/a | n/a | n/a | n/a | n/a | n/a | n/a |"
            continue
        fi
        cpu() { if [[ $impl == veth ]]; then echo "–"; else cell "$impl" "cpu_$1"; fi; }
        echo "| $(describe "$impl") | $(cell "$impl" single) | $(cell "$impl" four) | $(cell "$impl" reverse) | $(cell "$impl" rtt) | $(cell "$impl" rtt_med) | $(cpu single) | $(cpu four) | $(cpu reverse) |"
    done
    if wants sitelink && { wants wireguard-go || wants boringtun-cli; }; then
        echo "| **sitelink ÷ best other** | $(ratio single 1) | $(ratio four 1) | $(ratio reverse 1) | $(ratio rtt 0) | $(ratio rtt_med 0) | $(ratio cpu_single 0) | $(ratio cpu_four 0) | $(ratio cpu_reverse 0) |"
        echo
        echo "Ratios compare medians with the better of wireguard-go and boringtun-cli in each column: above 1× is better for Gbit/s, below 1× is better for RTT and CPU."
    fi
    if [[ -n $(for impl in "${IMPLS[@]}"; do echo "${RES[$impl,il_n]:-}"; done) ]]; then
        echo
        echo "Ping RTT with every path up at once, interleaved: $PING_ROUNDS rounds, each 20 pings 0.1 s apart through every path in turn (ms)."
        echo
        echo "| path | pings | mean | p25 | median | p75 |"
        echo "|---|---|---|---|---|---|"
        for impl in "${IMPLS[@]}"; do
            [[ -z ${RES[$impl,il_n]:-} ]] && continue
            echo "| $(describe "$impl") | ${RES[$impl,il_n]} | ${RES[$impl,il_mean]%% *} | ${RES[$impl,il_p25]%% *} | ${RES[$impl,il_med]%% *} | ${RES[$impl,il_p75]%% *} |"
        done
        if wants sitelink && { wants wireguard-go || wants boringtun-cli; }; then
            echo "| **sitelink ÷ best other** | | $(ratio il_mean 0) | $(ratio il_p25 0) | $(ratio il_med 0) | $(ratio il_p75 0) |"
        fi
    fi
    if wants sitelink && wants sitelink-plain; then
        echo
        echo "Batched ÷ plain (the gain of batched I/O): 1 stream $(ratio single 1 sitelink-plain), 4 streams $(ratio four 1 sitelink-plain), reverse $(ratio reverse 1 sitelink-plain); CPU s/GB $(ratio cpu_single 0 sitelink-plain), $(ratio cpu_four 0 sitelink-plain), $(ratio cpu_reverse 0 sitelink-plain)."
    fi
    if wants baseline; then
        echo
        echo "sitelink ÷ baseline: 1 stream $(ratio single 1 baseline), 4 streams $(ratio four 1 baseline), reverse $(ratio reverse 1 baseline); CPU s/GB $(ratio cpu_single 0 baseline), $(ratio cpu_four 0 baseline), $(ratio cpu_reverse 0 baseline)."
    fi
    if [[ $MEMORY -gt 0 ]]; then
        echo
        echo "Memory during one ${MEMORY} s iperf3 transfer (1 stream, after the tests above), sampled every second from /proc/PID/status; MiB = 2^20 bytes."
        echo "Idle is RSS once the gateway is up, before any traffic; growth is end minus start RSS of the transfer; VmHWM is the process's peak RSS since it started."
        echo
        echo "| path | gateway | Gbit/s | RSS idle MiB | RSS start MiB | RSS max MiB | RSS end MiB | growth KiB | VmHWM MiB |"
        echo "|---|---|---|---|---|---|---|---|---|"
        for impl in "${IMPLS[@]}"; do
            for side in A B; do
                v=${MEM[$impl,$side]:-}
                [[ -z $v ]] && continue
                read -r m0 m1 m2 m3 <<<"$v"
                awk -v p="$(describe "$impl")" -v s="$side" -v g="${MEM[$impl,gbps]}" \
                    -v i="${MEM[$impl,idle_$side]:-}" -v a="$m0" -v b="$m1" -v c="$m2" -v d="$m3" \
                    'BEGIN { printf "| %s | %s | %.2f | %s | %.1f | %.1f | %.1f | %+d | %.1f |\n", p, s, g,
                             (i == "" ? "?" : sprintf("%.1f", i / 1024)), a / 1024, b / 1024, c / 1024, c - a, d / 1024 }'
            done
        done
    fi
    if [[ -n $(for impl in "${IMPLS[@]}"; do echo "${RES[$impl,hops]:-}"; done) ]]; then
        echo
        echo "Where a ping's round trip goes: 40 pings captured with tcpdump in both namespaces, split at the"
        echo "kernel's timestamps where each packet crosses a tunnel interface or the veth; median µs per hop."
        echo "The hops marked * begin with a tunnel process that was asleep (it waits for the packet)."
        echo
        echo "| path | pings | A tunnel → wire * | veth | B wire → tunnel * | B kernel replies | B tunnel → wire | veth | A wire → tunnel * | sum |"
        echo "|---|---|---|---|---|---|---|---|---|---|"
        for impl in "${IMPLS[@]}"; do
            [[ -z ${RES[$impl,hops]:-} ]] && continue
            read -r n h1 h2 h3 h4 h5 h6 h7 <<<"${RES[$impl,hops]}"
            echo "| $(describe "$impl") | $n | $h1 | $h2 | $h3 | $h4 | $h5 | $h6 | $h7 | $((h1 + h2 + h3 + h4 + h5 + h6 + h7)) |"
        done
    fi
    for impl in "${IMPLS[@]}"; do
        [[ -n ${NA[$impl]:-} ]] && echo "- $impl: ${NA[$impl]}"
    done
    true
}
