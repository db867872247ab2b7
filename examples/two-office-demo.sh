#!/usr/bin/env bash
# Two offices joined by sitelink, on this one machine, in network namespaces.
#
#   sudo bash examples/two-office-demo.sh
#
#   lan-a host             gw-a (sitelink)        inet (router)         gw-b (sitelink)        lan-b host
#   192.168.10.10 ── 192.168.10.1 | 198.51.100.1 ── 198.51.100.254 ── 198.51.100.2 | 192.168.20.1 ── 192.168.20.10
#
# It builds the release binaries, creates the namespaces, starts both gateways with
# examples/office-a.toml and examples/office-b.toml (DEMO-ONLY committed keys), shows their
# status, pings across, sends 50 MB over TCP and compares SHA-256, shows status again, and
# removes everything it made, also when interrupted. Safe to run again: namespaces carry this
# run's PID, and leftovers of earlier runs that were killed are removed first.
#
# Environment: SKIP_BUILD=1 uses the binaries already in target/release (or SITELINK_BIN_DIR);
# DEMO_MB sets the transfer size (default 50).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
EX=$ROOT/examples
MB=${DEMO_MB:-50}
PREFIX=sldemo-$$
NS_LAN_A=$PREFIX-lana
NS_GW_A=$PREFIX-gwa
NS_INET=$PREFIX-inet
NS_GW_B=$PREFIX-gwb
NS_LAN_B=$PREFIX-lanb
ALL_NS=("$NS_LAN_A" "$NS_GW_A" "$NS_INET" "$NS_GW_B" "$NS_LAN_B")

say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
run() { printf '    $ %s\n' "$*"; "$@"; }
in_ns() { local ns=$1; shift; ip netns exec "$ns" "$@"; }

if [[ $(id -u) -ne 0 ]]; then
    echo "This demo creates network namespaces and TUN devices: run it as root (sudo)." >&2
    exit 1
fi
for tool in ip ping socat sha256sum; do
    command -v "$tool" >/dev/null || {
        echo "missing $tool: apt-get install iproute2 iputils-ping socat coreutils" >&2
        exit 1
    }
done

# --- cleanup --------------------------------------------------------------------------------
WORK=$(mktemp -d /tmp/sitelink-demo.XXXXXX)
PIDS=()
cleanup() {
    local status=$?
    trap - EXIT INT TERM
    say "Cleaning up"
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
    done
    remove_namespaces "${ALL_NS[@]}"
    if [[ $status -ne 0 ]]; then
        echo "demo FAILED (exit $status); gateway logs:"
        for log in "$WORK"/gw-*.log; do
            [[ -f $log ]] && { echo "--- $log"; tail -n 30 "$log"; }
        done
    fi
    rm -rf "$WORK"
    echo "    removed namespaces ${PREFIX}-* and $WORK"
    exit "$status"
}
remove_namespaces() {
    local ns pid
    for ns in "$@"; do
        ip netns list | awk '{print $1}' | grep -qx "$ns" || continue
        for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null || true; done
        ip netns del "$ns" 2>/dev/null || true
    done
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Leftovers of earlier runs that died without cleaning up (their PID is gone).
for ns in $(ip netns list | awk '{print $1}' | grep '^sldemo-' || true); do
    pid=${ns#sldemo-}
    pid=${pid%%-*}
    if ! kill -0 "$pid" 2>/dev/null; then
        echo "removing stale namespace $ns from an earlier run"
        remove_namespaces "$ns"
    fi
done

# --- build --------------------------------------------------------------------------------
if [[ ${SKIP_BUILD:-0} != 1 ]]; then
    say "Building release binaries"
    run cargo build --release --workspace
fi
BIN=${SITELINK_BIN_DIR:-$ROOT/target/release}
GW=$BIN/sitelink-gateway
[[ -x $GW ]] || { echo "$GW missing: run cargo build --release --workspace" >&2; exit 1; }

say "Checking the configs (the keys are DEMO ONLY; git does not keep file modes, so chmod 600)"
run chmod 600 "$EX/office-a.key" "$EX/office-b.key" "$EX/ab.psk"
run "$GW" check --config "$EX/office-a.toml"
run "$GW" check --config "$EX/office-b.toml"

# --- network --------------------------------------------------------------------------------
say "Creating namespaces ${ALL_NS[*]}"
for ns in "${ALL_NS[@]}"; do
    ip netns add "$ns"
    in_ns "$ns" ip link set lo up
done
in_ns "$NS_INET" ip link add br0 type bridge
in_ns "$NS_INET" ip addr add 198.51.100.254/24 dev br0
in_ns "$NS_INET" ip link set br0 up
wire_office() { # gw-ns lan-ns bridge-port wan-addr lan-net-prefix
    local gw=$1 lan=$2 port=$3 wan=$4 net=$5
    ip link add wan netns "$gw" type veth peer name "$port" netns "$NS_INET"
    in_ns "$NS_INET" ip link set "$port" master br0 up
    in_ns "$gw" ip addr add "$wan/24" dev wan
    in_ns "$gw" ip link set wan up
    in_ns "$gw" ip route add default via 198.51.100.254
    in_ns "$gw" sh -c 'echo 1 > /proc/sys/net/ipv4/ip_forward'
    ip link add eth0 netns "$lan" type veth peer name lan netns "$gw"
    in_ns "$gw" ip addr add "$net.1/24" dev lan
    in_ns "$gw" ip link set lan up
    in_ns "$lan" ip addr add "$net.10/24" dev eth0
    in_ns "$lan" ip link set eth0 up
    in_ns "$lan" ip route add default via "$net.1"
}
wire_office "$NS_GW_A" "$NS_LAN_A" to-a 198.51.100.1 192.168.10
wire_office "$NS_GW_B" "$NS_LAN_B" to-b 198.51.100.2 192.168.20
echo "    lan-a 192.168.10.10 -> gw-a 198.51.100.1 -> inet 198.51.100.254 <- gw-b 198.51.100.2 <- lan-b 192.168.20.10"
echo "    (the internet router knows nothing of 192.168.x: LAN-to-LAN only works through the tunnel)"

# --- gateways --------------------------------------------------------------------------------
start_gateway() { # ns config log
    ip netns exec "$1" env RUST_LOG="${RUST_LOG:-info}" "$GW" up --config "$2" 2>"$3" &
    PIDS+=("$!")
    printf '    $ ip netns exec %s sitelink-gateway up --config %s   (pid %s, log %s)\n' "$1" "$2" "$!" "$3"
}
wait_status() { # ns config
    for _ in $(seq 100); do
        in_ns "$1" "$GW" status --config "$2" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    echo "gateway in $1 did not answer status within 10 s" >&2
    return 1
}
say "Starting both gateways"
start_gateway "$NS_GW_A" "$EX/office-a.toml" "$WORK/gw-a.log"
start_gateway "$NS_GW_B" "$EX/office-b.toml" "$WORK/gw-b.log"
wait_status "$NS_GW_A" "$EX/office-a.toml"
wait_status "$NS_GW_B" "$EX/office-b.toml"

say "Status of gateway A before any traffic"
in_ns "$NS_GW_A" "$GW" status --config "$EX/office-a.toml"

# --- traffic --------------------------------------------------------------------------------
wait_ping() { # ns addr
    for _ in $(seq 10); do
        in_ns "$1" ping -n -q -c 1 -W 1 "$2" >/dev/null 2>&1 && return 0
    done
    echo "no answer from $2 in $1 within 10 tries" >&2
    return 1
}
say "Ping LAN A host -> LAN B host (the first packet triggers the handshake)"
wait_ping "$NS_LAN_A" 192.168.20.10
run in_ns "$NS_LAN_A" ping -n -c 3 -i 0.2 192.168.20.10
say "Ping LAN B host -> LAN A host"
run in_ns "$NS_LAN_B" ping -n -c 3 -i 0.2 192.168.10.10

say "Sending $MB MB over TCP from LAN A to LAN B and comparing SHA-256"
head -c "$((MB * 1024 * 1024))" /dev/urandom >"$WORK/send.bin"
in_ns "$NS_LAN_B" socat -u -T 30 TCP-LISTEN:5001,reuseaddr "OPEN:$WORK/recv.bin,creat,trunc" &
RECV=$!
PIDS+=("$RECV")
for _ in $(seq 50); do
    [[ -n $(in_ns "$NS_LAN_B" ss -Hltn 'sport = :5001') ]] && break
    sleep 0.1
done
t0=$(date +%s.%N)
in_ns "$NS_LAN_A" socat -u -T 30 "OPEN:$WORK/send.bin" TCP:192.168.20.10:5001,connect-timeout=10
wait "$RECV"
t1=$(date +%s.%N)
sent=$(sha256sum <"$WORK/send.bin" | cut -d' ' -f1)
got=$(sha256sum <"$WORK/recv.bin" | cut -d' ' -f1)
echo "    sent     $sent"
echo "    received $got"
awk -v a="$t0" -v b="$t1" -v mb="$MB" \
    'BEGIN { printf "    %d MB in %.2f s on this machine (one run, not a benchmark)\n", mb, b - a }'
if [[ $sent != "$got" ]]; then
    echo "SHA-256 mismatch!" >&2
    exit 1
fi
echo "    identical"

say "Status of both gateways after the transfer"
in_ns "$NS_GW_A" "$GW" status --config "$EX/office-a.toml"
echo
in_ns "$NS_GW_B" "$GW" status --config "$EX/office-b.toml"

say "Demo finished: ping both ways and a $MB MB transfer with matching SHA-256"
