#!/usr/bin/env bash
# 10 000 peers at daemon level: start-up time, memory per idle peer, and a handshake storm
# answered while a bulk transfer keeps running (issue #6).
#
#   sudo bash benches/netns-scale.sh [--peers N] [--repeat N] [--rate R] [--only LIST]
#                                    [--baseline BIN] [--skip-build]
#
#   netns A 198.51.100.1 ── veth ── 198.51.100.2 netns B 203.0.113.1 ── veth ── 203.0.113.10-209 netns C
#           tunnel 10.204.0.1  ···  tunnel 10.204.0.2, and N more peers          wg_load (N peers)
#                                   10.220.0.1 ... (one /32 each)
#
# Phases (all by default):
#   startup  sitelink-gateway up in a namespace of its own, with 1 and with N [[peer]]s, each
#            with a /32 in allowed_ips (N routes): the time from exec until its control socket
#            answers `status` (TUN up, addresses and routes installed), --repeat times (median,
#            min and max); then, idle and after that `status`, its memory: VmRSS and private
#            bytes (Private_Clean + Private_Dirty of /proc/PID/smaps_rollup). Per idle peer =
#            (value with N peers - value with 1 peer) / (N - 1). Also the time SIGTERM takes to
#            remove the N routes and exit, and whether they are all gone.
#   clients  the same with a [pool] and N [[client]]s (remote workers allowed in, none
#            connected) instead of the N peers.
#   storm    gateways A and B with a tunnel between them; B also has the N peers. iperf3 TCP
#            from A to B through the tunnel, 1-second intervals, for PRE s (--pre), then the storm,
#            then POST s (--post). The storm: `wg_load peers` (examples/wg_load.rs) in netns C
#            acts as the N peers, each making one handshake with B, --rate new ones per second,
#            from 200 source addresses (the gateway allows 20 initiations per second per source,
#            as the Linux kernel does; the storm is not meant to measure that limit). Over 100
#            handshake messages per second B demands a cookie round trip (WireGuard's designed
#            behaviour under load); wg_load answers the cookie replies. Reported: handshakes
#            completed per second (whole storm, and the slowest full second), iperf3 throughput
#            before, during and after the storm, the slowest 1-s interval during it (a stall
#            shows as 0), B's cookie and rate-limit counters and its CPU use during the storm.
#
# Options:
#   --peers N       configured peers (default 10000)
#   --repeat N      start-ups per configuration (default 3)
#   --rate R        new handshakes per second in the storm (default 1000); the storm lasts N/R s
#   --pre S         iperf3 seconds before the storm (default 8)
#   --post S        iperf3 seconds after the storm (default 6)
#   --only LIST     comma-separated subset of startup,clients,storm
#   --baseline BIN  also run the storm with sitelink-gateway binary BIN (an earlier build) as
#                   both gateways, just before the current one: a before/after in one run
#   --busy N        N busy-looping processes run through each storm: the gateways then get only
#                   part of a CPU, as on a loaded host (default 0)
#   --skip-build    use $CARGO_TARGET_DIR/release/{sitelink-gateway,sitelink-keys,examples/wg_load}
#                   (default target/) as they are (also SKIP_BUILD=1)
#
# Needs root. Installs iperf3 and jq with apt-get when missing. Builds sitelink-gateway,
# sitelink-keys and the wg_load example in release mode unless --skip-build. Changes no host-wide
# setting: the namespaces are new and the programs size their own socket buffers. Bounded in
# time: every step has a timeout (about 2 x 2 x N x 20 s for the start-ups at worst, and
# PRE + N/R + POST + 60 s for the storm, plus the builds). Removes its namespaces, processes and
# files on exit, also when interrupted; leftovers of earlier runs that were killed are removed
# first.
#
# Read the numbers with care: both gateways, iperf3's two ends and the load generator share this
# machine's CPUs, so the storm's load generator (which does as many Diffie-Hellman operations
# per handshake as the gateway) takes CPU from the transfer too; the load average at start and
# end is printed.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD

PEERS=10000
REPEAT=3
RATE=1000
PRE=8
POST=6
ONLY=startup,clients,storm
SKIP_BUILD=${SKIP_BUILD:-0}
BASELINE=
BUSY=0
usage() { sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; }
while [[ $# -gt 0 ]]; do
    case $1 in
        --peers) PEERS=${2:?--peers needs a number}; shift 2 ;;
        --repeat) REPEAT=${2:?--repeat needs a number}; shift 2 ;;
        --rate) RATE=${2:?--rate needs a number}; shift 2 ;;
        --pre) PRE=${2:?--pre needs seconds}; shift 2 ;;
        --post) POST=${2:?--post needs seconds}; shift 2 ;;
        --only) ONLY=${2:?--only needs a list}; shift 2 ;;
        --skip-build) SKIP_BUILD=1; shift ;;
        --baseline) BASELINE=${2:?--baseline needs a sitelink-gateway binary}; shift 2 ;;
        --busy) BUSY=${2:?--busy needs a number}; shift 2 ;;
        -h | --help) usage; exit 0 ;;
        *) echo "unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
for v in PEERS REPEAT RATE PRE POST; do
    [[ ${!v} =~ ^[1-9][0-9]*$ ]] || { echo "--${v,,} must be a positive integer" >&2; exit 2; }
done
if ! [[ $BUSY =~ ^[0-9]+$ ]] || ((BUSY > 16)); then echo "--busy must be 0..16" >&2; exit 2; fi
((PEERS >= 2 && PEERS <= 60000)) || { echo "--peers must be 2..60000 (addresses come from 10.220.0.0/16)" >&2; exit 2; }
PHASES=()
for name in ${ONLY//,/ }; do
    case $name in
        startup | clients | storm) PHASES+=("$name") ;;
        *) echo "--only: unknown phase $name (startup, clients, storm)" >&2; exit 2 ;;
    esac
done
wants() { [[ " ${PHASES[*]} " == *" $1 "* ]]; }
if [[ -n $BASELINE ]]; then
    [[ -x $BASELINE ]] || { echo "--baseline: $BASELINE is not an executable" >&2; exit 2; }
    BASELINE=$(realpath "$BASELINE")
fi

if [[ $(id -u) -ne 0 ]]; then
    echo "This benchmark creates network namespaces and TUN devices: run it as root (sudo)." >&2
    exit 1
fi

say() { printf '\n\033[1m==> %s\033[0m\n' "$*" >&2; }
note() { printf '    %s\n' "$*" >&2; }
in_ns() { local ns=$1; shift; ip netns exec "$ns" "$@"; }
now_ms() { date +%s%3N; }

# --- tools ------------------------------------------------------------------------------------
missing=()
command -v iperf3 >/dev/null || missing+=(iperf3)
command -v jq >/dev/null || missing+=(jq)
command -v ping >/dev/null || missing+=(iputils-ping)
if [[ ${#missing[@]} -gt 0 ]]; then
    say "Installing ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y "${missing[@]}" >&2 || {
        timeout 300 apt-get update >&2
        DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y "${missing[@]}" >&2
    }
fi

# --- cleanup ----------------------------------------------------------------------------------
ID=$$
PREFIX=slscale-$ID
NS_S=$PREFIX-s   # start-up measurements
NS_A=$PREFIX-a
NS_B=$PREFIX-b
NS_C=$PREFIX-c   # the storm's load generator
WORK=$(mktemp -d /tmp/sitelink-scale.XXXXXX)
PIDS=()          # every long-running process this script started

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
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
}
forget_pids() { # drop stopped processes from PIDS
    local keep=() p q
    for p in "${PIDS[@]}"; do
        for q in "$@"; do [[ $p == "$q" ]] && continue 2; done
        keep+=("$p")
    done
    PIDS=("${keep[@]}")
}
cleanup() {
    local status=$?
    trap - EXIT INT TERM
    say "Cleaning up"
    stop_pids "${PIDS[@]}"
    remove_namespaces "$NS_S" "$NS_A" "$NS_B" "$NS_C"
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

for ns in $(ip netns list | awk '{print $1}' | grep '^slscale-' || true); do
    pid=${ns#slscale-}
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
LOAD=$BIN/examples/wg_load
if [[ $SKIP_BUILD != 1 ]]; then
    say "Building sitelink-gateway, sitelink-keys and wg_load (release)"
    cargo build --release -p sitelink-gateway -p sitelink-keys >&2
    cargo build --release -p sitelink --example wg_load >&2
fi
for b in "$GW" "$KEYS" "$LOAD"; do
    [[ -x $b ]] || { echo "$b missing: build it first (or drop --skip-build)" >&2; exit 1; }
done

# --- keys and configs -------------------------------------------------------------------------
PORT=51820
SEED=$((ID % 100000))
INNER_BASE=10.220.0.1
say "Deriving $PEERS peer keys (wg_load derive-keys --seed $SEED)"
timeout 120 "$LOAD" derive-keys --seed "$SEED" --peers "$PEERS" --inner-base "$INNER_BASE" >"$WORK/peers.jsonl"
[[ $(wc -l <"$WORK/peers.jsonl") -eq $PEERS ]] || { echo "derive-keys gave too few keys" >&2; exit 1; }
for k in gw a b; do
    "$KEYS" genkey --out "$WORK/$k.key" >/dev/null
done
pub_of() { "$KEYS" pubkey <"$WORK/$1.key"; }

interface_toml() { # name address
    printf '[interface]\nname = "%s"\nprivate_key_file = "%s"\nlisten_port = %s\naddress = ["%s"]\n' \
        "$1" "$3" "$PORT" "$2"
}
# The first $2 derived keys as [[peer]]s (one /32 each) or [[client]]s.
peers_toml() { # kind(peer|client) count
    head -n "$2" "$WORK/peers.jsonl" | if [[ $1 == peer ]]; then
        jq -r '"\n[[peer]]\nname = \"storm-\(.index)\"\npublic_key = \"\(.public_key)\"\nallowed_ips = [\"\(.address)/32\"]"'
    else
        jq -r '"\n[[client]]\nname = \"worker-\(.index)\"\npublic_key = \"\(.public_key)\""'
    fi
}
pool_toml() { # store
    printf '\n[pool]\nranges = ["10.221.0.0/16"]\nlease_time = 3600\nstore = "%s"\n' "$1"
}
# A config for `status` to read when polling: only its --socket matters.
interface_toml "probe0" "10.209.0.1/24" gw.key >"$WORK/probe.toml"

# --- measuring helpers ------------------------------------------------------------------------
CLK_TCK=$(getconf CLK_TCK)
declare -A RES=()   # key -> value (see the report)
declare -A NA=()    # phase -> why it has no numbers

start_bg() { # log ns argv... ; sets STARTED to the program's PID
    local log=$1 ns=$2
    shift 2
    # Not through in_ns: `ip netns exec` execs the program, which keeps this PID.
    ip netns exec "$ns" "$@" >"$log" 2>&1 &
    STARTED=$!
    PIDS+=("$STARTED")
}

answers_status() { # socket
    timeout 10 "$GW" status --json --config "$WORK/probe.toml" --socket "$1" >/dev/null 2>&1
}

stats() { # values... -> "median min max"
    printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 }
        END { m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
              printf "%s %s %s\n", m, v[1], v[NR] }'
}

cpu_ticks() { # pid -> utime + stime in clock ticks
    sed 's/.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'
}

memory_kb() { # pid -> "rss_kb private_kb"
    local rss private
    rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$1/status")
    private=$(awk '/^Private_(Clean|Dirty):/ {s += $2} END {print s}' "/proc/$1/smaps_rollup")
    echo "$rss $private"
}

# One configuration, --repeat start-ups: records RES[$label,startup] = "median min max" (ms),
# RES[$label,rss] and RES[$label,private] (kB, last run), RES[$label,routes], RES[$label,stop].
measure_startup() { # label config ifname expected-routes
    local label=$1 config=$2 ifname=$3 expected=$4 run t0 t1 pid ok times=() stops=() mem routes left
    local sock=$WORK/$label.sock
    for run in $(seq "$REPEAT"); do
        rm -f "$sock"
        t0=$(now_ms)
        start_bg "$WORK/$label-$run.log" "$NS_S" env RUST_LOG=warn "$GW" up --config "$config" --socket "$sock"
        pid=$STARTED
        ok=0
        for _ in $(seq 3000); do   # at most ~30 s
            if [[ -S $sock ]] && answers_status "$sock"; then ok=1; break; fi
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.01
        done
        t1=$(now_ms)
        if [[ $ok != 1 ]]; then
            NA[$label]="the gateway did not answer status within 30 s (run $run): $(tail -n 1 "$WORK/$label-$run.log")"
            note "${NA[$label]}"
            stop_pids "$pid"
            forget_pids "$pid"
            return 1
        fi
        times+=($((t1 - t0)))
        routes=$(in_ns "$NS_S" ip route show dev "$ifname" | wc -l)
        if [[ $run == "$REPEAT" ]]; then
            sleep 2
            mem=$(memory_kb "$pid")
            RES[$label,rss]=${mem% *}
            RES[$label,private]=${mem#* }
            RES[$label,routes]=$routes
        fi
        t0=$(now_ms)
        stop_pids "$pid"
        t1=$(now_ms)
        forget_pids "$pid"
        stops+=($((t1 - t0)))
        left=$(in_ns "$NS_S" ip -4 route show | grep -c "dev $ifname" || true)
        note "$(printf '%-10s run %d: status answered after %5d ms; %d routes on %s (expected %d); SIGTERM to exit %d ms, %d left' \
            "$label" "$run" "${times[-1]}" "$routes" "$ifname" "$expected" "${stops[-1]}" "$left")"
        if [[ $routes -lt $expected ]]; then
            NA[$label]="only $routes of $expected routes installed"
            note "${NA[$label]}"
            return 1
        fi
    done
    RES[$label,startup]=$(stats "${times[@]}")
    RES[$label,stop]=$(stats "${stops[@]}")
    note "$label: VmRSS ${RES[$label,rss]} kB, private ${RES[$label,private]} kB (idle, after one status)"
}

per_peer() { # label-N label-1 field -> bytes per peer
    local n=${RES[$1,$3]:-} one=${RES[$2,$3]:-}
    [[ -z $n || -z $one ]] && { echo ""; return; }
    awk -v n="$n" -v o="$one" -v p="$PEERS" 'BEGIN { printf "%.0f", (n - o) * 1024 / (p - 1) }'
}

# --- phases -----------------------------------------------------------------------------------
run_startup() { # kind (peer | client)
    local kind=$1 ifname=ss${ID} one many
    one=$kind-1
    many=$kind-$PEERS
    for n in 1 "$PEERS"; do
        {
            interface_toml "$ifname" "10.209.0.1/24" gw.key
            if [[ $kind == peer ]]; then
                peers_toml peer "$n"
            else
                pool_toml "leases-$n.db"
                peers_toml client "$n"
            fi
        } >"$WORK/$kind-$n.toml"
        rm -f "$WORK/leases-$n.db"
    done
    local expected_one=2 expected_many=$((PEERS + 1))   # the connected /24, and a /32 per peer
    if [[ $kind == client ]]; then expected_one=2 expected_many=2; fi   # the pool's one route
    measure_startup "$one" "$WORK/$kind-1.toml" "$ifname" "$expected_one" || return 1
    measure_startup "$many" "$WORK/$kind-$PEERS.toml" "$ifname" "$expected_many" || return 1
    RES[$kind,per_rss]=$(per_peer "$many" "$one" rss)
    RES[$kind,per_private]=$(per_peer "$many" "$one" private)
}

WAN_A=198.51.100.1
WAN_B=198.51.100.2
STORM_B=203.0.113.1
STORM_SOURCES=200   # 203.0.113.10 .. 203.0.113.209
TUN_NET=10.204.0

run_storm() { # label gateway-binary
    local label=$1 gw=$2 a_if=sa${ID} b_if=sb${ID} pids=() pid_a pid_b t_iperf iperf_pid i sources=() binds=()
    say "Storm ($label): namespaces, gateways A and B (B with $PEERS more peers), $STORM_SOURCES sources in C"
    remove_namespaces "$NS_A" "$NS_B" "$NS_C"
    for ns in "$NS_A" "$NS_B" "$NS_C"; do
        ip netns add "$ns"
        in_ns "$ns" ip link set lo up
    done
    ip link add wan netns "$NS_A" type veth peer name wan netns "$NS_B"
    ip link add storm netns "$NS_B" type veth peer name storm netns "$NS_C"
    in_ns "$NS_A" ip addr add "$WAN_A/24" dev wan
    in_ns "$NS_B" ip addr add "$WAN_B/24" dev wan
    in_ns "$NS_B" ip addr add "$STORM_B/24" dev storm
    for i in $(seq 10 $((9 + STORM_SOURCES))); do
        sources+=("203.0.113.$i")
        binds+=(--bind "203.0.113.$i")
    done
    printf 'addr add %s/24 dev storm\n' "${sources[@]}" | in_ns "$NS_C" ip -batch -
    in_ns "$NS_A" ip link set wan up
    in_ns "$NS_B" ip link set wan up
    in_ns "$NS_B" ip link set storm up
    in_ns "$NS_C" ip link set storm up

    {
        interface_toml "$a_if" "$TUN_NET.1/24" a.key
        printf '\n[[peer]]\nname = "b"\npublic_key = "%s"\nendpoint = "%s:%s"\nallowed_ips = ["%s.2/32"]\n' \
            "$(pub_of b)" "$WAN_B" "$PORT" "$TUN_NET"
    } >"$WORK/storm-a.toml"
    {
        interface_toml "$b_if" "$TUN_NET.2/24" b.key
        printf '\n[[peer]]\nname = "a"\npublic_key = "%s"\nendpoint = "%s:%s"\nallowed_ips = ["%s.1/32"]\n' \
            "$(pub_of a)" "$WAN_A" "$PORT" "$TUN_NET"
        peers_toml peer "$PEERS"
    } >"$WORK/storm-b.toml"
    local busy=()
    for _ in $(seq "$BUSY"); do
        (while :; do :; done) &
        busy+=("$!")
        PIDS+=("$!")
    done
    start_bg "$WORK/storm-gw-a.log" "$NS_A" env RUST_LOG=warn "$gw" up --config "$WORK/storm-a.toml" --socket "$WORK/storm-a.sock"
    pid_a=$STARTED
    start_bg "$WORK/storm-gw-b.log" "$NS_B" env RUST_LOG=warn "$gw" up --config "$WORK/storm-b.toml" --socket "$WORK/storm-b.sock"
    pid_b=$STARTED
    pids=("$pid_a" "$pid_b")
    for _ in $(seq 300); do
        [[ -S $WORK/storm-a.sock && -S $WORK/storm-b.sock ]] && break
        sleep 0.1
    done
    local up=0
    for _ in $(seq 20); do
        in_ns "$NS_A" ping -n -q -c 1 -W 1 "$TUN_NET.2" >/dev/null 2>&1 && { up=1; break; }
    done
    if [[ $up != 1 ]]; then
        NA[$label]="no ping reply across the tunnel A -> B within 20 s"
        note "${NA[$label]}"
        stop_pids "${pids[@]}" "${busy[@]}"
        forget_pids "${pids[@]}" "${busy[@]}"
        return 1
    fi

    start_bg "$WORK/iperf3-server.log" "$NS_B" iperf3 -s -B "$TUN_NET.2"
    pids+=("$STARTED")
    for _ in $(seq 50); do
        in_ns "$NS_B" ss -Hltn 'sport = :5201' | grep -q . && break
        sleep 0.1
    done

    local storm_secs=$(((PEERS + RATE - 1) / RATE))
    # wg_load builds its N state machines first (about a second for 10 000): allow for that.
    local total=$((PRE + storm_secs + 3 + POST))
    say "Storm ($label): iperf3 A -> B for $total s; after $PRE s, $PEERS handshakes at $RATE/s from C"
    t_iperf=$(now_ms)
    timeout $((total + 60)) ip netns exec "$NS_A" iperf3 -c "$TUN_NET.2" -t "$total" -i 1 -J \
        --connect-timeout 5000 >"$WORK/storm-iperf3.json" 2>"$WORK/storm-iperf3.log" &
    iperf_pid=$!
    PIDS+=("$iperf_pid")
    sleep "$PRE"
    local before_status after_status cpu0 cpu1 t0 t1
    before_status=$(timeout 30 "$GW" status --json --config "$WORK/probe.toml" --socket "$WORK/storm-b.sock" | jq -c .counters)
    cpu0=$(cpu_ticks "$pid_b")
    t0=$(now_ms)
    # Every 0.2 s: the bytes waiting in B's UDP socket (a backlog there delays the tunnel's own
    # packets too) and B's CPU ticks so far.
    (
        while :; do
            printf '%s %s %s\n' "$(now_ms)" \
                "$(in_ns "$NS_B" ss -Huln 'sport = :'"$PORT" 2>/dev/null | awk '{q += $2} END {print q + 0}')" \
                "$(cpu_ticks "$pid_b" 2>/dev/null || echo 0)"
            sleep 0.2
        done
    ) >"$WORK/storm-samples.txt" 2>/dev/null &
    local sampler=$!
    PIDS+=("$sampler")
    # Sends for at most PEERS/RATE + 10 s, then waits 3 s for late answers; prints one JSON line.
    timeout $((storm_secs + 40)) ip netns exec "$NS_C" "$LOAD" peers \
        --target "$STORM_B:$PORT" --server-public-key "$(pub_of b)" \
        --seed "$SEED" --peers "$PEERS" --inner-base "$INNER_BASE" \
        --rate "$RATE" --in-flight 4000 --retry-ms 3000 --attempts 3 \
        --duration $((storm_secs + 10)) --linger-ms 3000 "${binds[@]}" \
        >"$WORK/storm-load.json" 2>"$WORK/storm-load.log" || note "wg_load failed: $(tail -n 1 "$WORK/storm-load.log")"
    t1=$(now_ms)
    cpu1=$(cpu_ticks "$pid_b")
    stop_pids "$sampler"
    forget_pids "$sampler"
    RES[$label,queue_max]=$(awk 'BEGIN {m = 0} $2 > m {m = $2} END {printf "%.0f", m / 1024}' "$WORK/storm-samples.txt")
    note "B's UDP receive queue, KiB, once a second: $(awk 'NR % 5 == 1 {printf "%.0f ", $2 / 1024}' "$WORK/storm-samples.txt")"
    after_status=$(timeout 30 "$GW" status --json --config "$WORK/probe.toml" --socket "$WORK/storm-b.sock" | jq -c .counters)
    note "wg_load: $(jq -c '{handshakes, failed, initiations, retries, cookies_accepted, retried_with_mac2, handshake_ms_p50, handshake_ms_p99, storm: .storm.handshakes_per_second}' "$WORK/storm-load.json" 2>/dev/null || echo 'no summary')"
    if ! wait "$iperf_pid"; then
        note "iperf3 failed: $(jq -r '.error // "no output"' "$WORK/storm-iperf3.json" 2>/dev/null || tail -n 1 "$WORK/storm-iperf3.log")"
    fi
    forget_pids "$iperf_pid"

    # B's CPU during the storm, in % of one core.
    RES[$label,cpu_b]=$(awk -v t=$((cpu1 - cpu0)) -v hz="$CLK_TCK" -v ms=$((t1 - t0)) 'BEGIN { printf "%.0f", 100 * t / hz / (ms / 1000) }')
    RES[$label,counters]=$(jq -n -c --argjson a "$before_status" --argjson b "$after_status" \
        '{cookie_replies_sent: ($b.cookie_replies_sent - $a.cookie_replies_sent),
          handshake_rate_limited: ($b.handshake_rate_limited - $a.handshake_rate_limited)}' 2>/dev/null || echo '{}')

    # The storm window, from wg_load's clock: first initiation to last completed handshake.
    local s0 s1
    s0=$(jq '.storm.first_initiation_unix_ms // empty' "$WORK/storm-load.json" 2>/dev/null || true)
    s1=$(jq '.storm.last_handshake_unix_ms // empty' "$WORK/storm-load.json" 2>/dev/null || true)
    if [[ -z $s0 || -z $s1 ]]; then
        NA[$label]="wg_load completed no handshake (see $WORK/storm-load.log)"
        note "${NA[$label]}"
    else
        RES[$label,handshakes]=$(jq '.handshakes' "$WORK/storm-load.json")
        RES[$label,rate]=$(jq '.storm.handshakes_per_second' "$WORK/storm-load.json")
        # Full seconds only: the last one is cut short by the end of the storm.
        RES[$label,slowest_second]=$(jq '.storm.handshakes_by_second | .[0:-1] | min // 0' "$WORK/storm-load.json")
        RES[$label,cookies]=$(jq '.cookies_accepted' "$WORK/storm-load.json")
        RES[$label,p99]=$(jq '.handshake_ms_p99' "$WORK/storm-load.json")
        RES[$label,window]=$(awk -v a="$s0" -v b="$s1" 'BEGIN { printf "%.1f", (b - a) / 1000 }')
    fi
    if jq -e '.intervals | length > 0' "$WORK/storm-iperf3.json" >/dev/null 2>&1 && [[ -n $s0 ]]; then
        # Each 1-s interval by where it lies: before the storm (skipping the first second, slow
        # start), entirely inside it, or after it.
        jq -r --argjson t "$t_iperf" --argjson s0 "$s0" --argjson s1 "$s1" '
            [.intervals[].sum | {a: ($t + .start * 1000), b: ($t + .end * 1000), g: (.bits_per_second / 1e9)}] as $iv
            | def mean: if length == 0 then null else (add / length) end;
              [($iv | map(select(.a >= $t + 1000 and .b <= $s0) | .g) | mean),
               ($iv | map(select(.a >= $s0 and .b <= $s1) | .g) | mean),
               ($iv | map(select(.a >= $s0 and .b <= $s1) | .g) | min),
               ($iv | map(select(.a >= $s0 and .b <= $s1) | .g) | length),
               ($iv | map(select(.a >= $s1) | .g) | mean),
               ($iv | map(select(.g < 0.001)) | length)]
            | map(if . == null then "nan" else tostring end) | join(" ")' "$WORK/storm-iperf3.json" \
            >"$WORK/storm-iperf3.summary"
        local before during during_min during_n after stalls
        read -r before during during_min during_n after stalls <"$WORK/storm-iperf3.summary"
        RES[$label,before]=$before RES[$label,during]=$during RES[$label,during_min]=$during_min
        RES[$label,during_n]=$during_n RES[$label,after]=$after RES[$label,stalls]=$stalls
        RES[$label,retransmits]=$(jq '.end.sum_sent.retransmits // 0' "$WORK/storm-iperf3.json")
        note "iperf3 Gbit/s: before ${RES[$label,before]}, during ${RES[$label,during]} (slowest second ${RES[$label,during_min]}, ${RES[$label,during_n]} s), after ${RES[$label,after]}"
    else
        NA[$label]="${NA[$label]:-iperf3 gave no intervals (see $WORK/storm-iperf3.log)}"
        note "${NA[$label]}"
    fi
    stop_pids "${pids[@]}" "${busy[@]}"
    forget_pids "${pids[@]}" "${busy[@]}"
    remove_namespaces "$NS_A" "$NS_B" "$NS_C"
}

START_LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
if wants startup || wants clients; then
    ip netns add "$NS_S"
    in_ns "$NS_S" ip link set lo up
fi
if wants startup; then
    say "Start-up and memory: 1 and $PEERS [[peer]]s, $REPEAT start-ups each"
    run_startup peer || true
fi
if wants clients; then
    say "Start-up and memory: 1 and $PEERS [[client]]s with a [pool], $REPEAT start-ups each"
    run_startup client || true
fi
STORMS=()
if wants storm; then
    if [[ -n $BASELINE ]]; then
        STORMS+=(baseline)
        run_storm baseline "$BASELINE" || true
    fi
    STORMS+=(storm)
    run_storm storm "$GW" || true
fi
END_LOAD=$(cut -d' ' -f1-3 /proc/loadavg)

# --- report -----------------------------------------------------------------------------------
ms_cell() { # key -> "median (min–max) ms"
    local v=${RES[$1]:-}
    [[ -z $v ]] && { echo "n/a"; return; }
    read -r med min max <<<"$v"
    if [[ $REPEAT -eq 1 ]]; then printf '%s ms' "$med"; else printf '%s ms (%s–%s)' "$med" "$min" "$max"; fi
}
verdict() { # value op limit -> yes/no/n/a
    [[ -z $1 || $1 == nan || $1 == null || -z $3 ]] && { echo "n/a"; return; }
    awk -v v="$1" -v l="$3" -v op="$2" 'BEGIN { ok = (op == "<") ? v < l : v >= l; print ok ? "yes" : "**no**" }'
}
num() { local v=${RES[$1]:-}; [[ -z $v || $v == nan ]] && echo "n/a" || echo "$v"; }
gbit() { local v=${RES[$1]:-}; [[ -z $v || $v == nan ]] && echo "n/a" || printf '%.2f' "$v"; }

MODEL=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
{
    echo
    echo "## sitelink with $PEERS peers on $(hostname) ($(date -u '+%Y-%m-%d %H:%M UTC'))"
    echo
    echo "Machine: $(nproc) CPUs, ${MODEL:-unknown CPU}, Linux $(uname -r); load average $START_LOAD at start, $END_LOAD at end."
    echo "sitelink $(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo '?'), release build. Start-up: exec of \`sitelink-gateway up\` until its control socket answers \`status\`, $REPEAT runs, median (min–max)."
    echo "Memory per idle peer: (value with $PEERS - value with 1) / $((PEERS - 1)), idle, after one \`status\`."
    ((BUSY > 0)) && echo "During each storm, $BUSY busy-looping processes competed for the CPUs (--busy $BUSY)."
    echo
    echo "| measure | target | measured | met |"
    echo "|---|---|---|---|"
    if wants startup; then
        echo "| start-up, 1 peer | – | $(ms_cell peer-1,startup) | – |"
        med=${RES[peer-$PEERS,startup]:-}
        echo "| start-up, $PEERS peers (${RES[peer-$PEERS,routes]:-?} routes) | < 2 s | $(ms_cell "peer-$PEERS,startup") | $(verdict "${med%% *}" "<" 2000) |"
        echo "| memory per idle peer, VmRSS | < 4 KiB | $(num peer,per_rss) B (${RES[peer-1,rss]:-?} → ${RES[peer-$PEERS,rss]:-?} kB) | $(verdict "${RES[peer,per_rss]:-}" "<" 4096) |"
        echo "| memory per idle peer, private | < 4 KiB | $(num peer,per_private) B (${RES[peer-1,private]:-?} → ${RES[peer-$PEERS,private]:-?} kB) | $(verdict "${RES[peer,per_private]:-}" "<" 4096) |"
        echo "| SIGTERM to exit, $PEERS peers (routes removed) | – | $(ms_cell "peer-$PEERS,stop") | – |"
    fi
    if wants clients; then
        med=${RES[client-$PEERS,startup]:-}
        echo "| start-up, $PEERS clients ([pool]) | < 2 s | $(ms_cell "client-$PEERS,startup") (1 client: $(ms_cell client-1,startup)) | $(verdict "${med%% *}" "<" 2000) |"
        echo "| memory per idle client, VmRSS | < 4 KiB | $(num client,per_rss) B (${RES[client-1,rss]:-?} → ${RES[client-$PEERS,rss]:-?} kB) | $(verdict "${RES[client,per_rss]:-}" "<" 4096) |"
        echo "| memory per idle client, private | < 4 KiB | $(num client,per_private) B | $(verdict "${RES[client,per_private]:-}" "<" 4096) |"
    fi
    for l in "${STORMS[@]}"; do
        tag=""
        [[ $l == baseline ]] && tag=" (baseline)"
        echo "| handshakes answered per second$tag ($PEERS peers, offered $RATE/s) | ≥ $RATE/s | $(num "$l,rate")/s over $(num "$l,window") s; slowest full second $(num "$l,slowest_second"); $(num "$l,handshakes") of $PEERS completed | $(verdict "${RES[$l,rate]:-}" ">=" "$(awk -v r="$RATE" 'BEGIN { print r * 0.95 }')") |"
        echo "| iperf3 A → B before / after the storm$tag | – | $(gbit "$l,before") / $(gbit "$l,after") Gbit/s | – |"
        floor=$(awk -v b="${RES[$l,before]:-nan}" 'BEGIN { if (b == "nan") print ""; else print b / 10 }')
        echo "| iperf3 A → B during the storm$tag | keeps running: no second under 10% of before | $(gbit "$l,during") Gbit/s, slowest second $(gbit "$l,during_min") Gbit/s | $(verdict "${RES[$l,during_min]:-}" ">=" "$floor") |"
    done
    if [[ ${#STORMS[@]} -gt 0 ]]; then
        echo
        for l in "${STORMS[@]}"; do
            echo "Storm details ($([[ $l == baseline ]] && echo "baseline: $BASELINE" || echo "sitelink")): $(num "$l,cookies") handshakes needed a cookie round trip; p99 handshake time $(num "$l,p99") ms;" \
                "B's counters during the storm ${RES[$l,counters]:-n/a}; B used $(num "$l,cpu_b")% of a core; most bytes waiting in B's UDP socket $(num "$l,queue_max") KiB;" \
                "iperf3 1-s intervals under 1 Mbit/s in the whole run: $(num "$l,stalls"); retransmits $(num "$l,retransmits")."
            echo
        done
        echo "Handshakes answered per second = completed handshakes / (last response - first initiation); met (≥) allows 5% for the run's start and end. An iperf3 1-s interval counts as during the storm when it lies entirely inside that window; a second under 10% of the mean before the storm counts as a stall."
    fi
    for phase in "${!NA[@]}"; do
        echo "- $phase: ${NA[$phase]}"
    done
    true
}
