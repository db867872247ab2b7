#!/usr/bin/env bash
# Remote workers at home reach two offices joined by sitelink, on this one machine, in network
# namespaces.
#
#   sudo bash examples/remote-worker-demo.sh
#
#   lan-a 192.168.10.10 ── gw-a 198.51.100.1 ──┐                ┌── 198.51.100.2 gw-b ── lan-b 192.168.20.10
#                          (pool 10.77.100.0/24) inet 198.51.100.254
#                                                   203.0.113.254
#                                                        │
#                                   home router 203.0.113.2 (NAT: nftables masquerade)
#                                          192.168.77.1
#                                   alice 192.168.77.11   bob 192.168.77.12
#
# It builds the release binaries, creates the namespaces, starts both gateways with
# examples/remote-worker/office-{a,b}.toml and the clients of alice and bob with
# examples/remote-worker/{alice,bob}.toml (DEMO-ONLY committed keys), then shows: the leased
# addresses (`sitelink-gateway leases`, `sitelink-client status`), pings from alice to both
# offices, the address office B's host sees, bob's wg-quick export for a stock WireGuard app, and
# alice leaving cleanly (her lease is released). Everything it made is removed at the end, also
# when interrupted; the configs are copied to a temporary directory, so the lease database and
# the clients' state stay out of the repository.
#
# Environment: SKIP_BUILD=1 uses the binaries already in target/release (or SITELINK_BIN_DIR).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
PREFIX=slrw-$$
NS_LAN_A=$PREFIX-lana
NS_GW_A=$PREFIX-gwa
NS_INET=$PREFIX-inet
NS_GW_B=$PREFIX-gwb
NS_LAN_B=$PREFIX-lanb
NS_HOME=$PREFIX-home
NS_ALICE=$PREFIX-alice
NS_BOB=$PREFIX-bob
ALL_NS=("$NS_LAN_A" "$NS_GW_A" "$NS_INET" "$NS_GW_B" "$NS_LAN_B" "$NS_HOME" "$NS_ALICE" "$NS_BOB")

say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
run() { printf '    $ %s\n' "$*"; "$@"; }
in_ns() { local ns=$1; shift; ip netns exec "$ns" "$@"; }

if [[ $(id -u) -ne 0 ]]; then
    echo "This demo creates network namespaces and TUN devices: run it as root (sudo)." >&2
    exit 1
fi
for tool in ip ping socat nft; do
    command -v "$tool" >/dev/null || {
        echo "missing $tool: apt-get install iproute2 iputils-ping socat nftables" >&2
        exit 1
    }
done

# --- cleanup --------------------------------------------------------------------------------
WORK=$(mktemp -d /tmp/sitelink-rw-demo.XXXXXX)
PIDS=()
cleanup() {
    local status=$?
    trap - EXIT INT TERM
    say "Cleaning up"
    # Clients first (they release their leases with the gateway still up), then the rest.
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
    done
    remove_namespaces "${ALL_NS[@]}"
    if [[ $status -ne 0 ]]; then
        echo "demo FAILED (exit $status); logs:"
        for log in "$WORK"/*.log; do
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
for ns in $(ip netns list | awk '{print $1}' | grep '^slrw-' || true); do
    pid=${ns#slrw-}
    pid=${pid%%-*}
    if ! kill -0 "$pid" 2>/dev/null; then
        echo "removing stale namespace $ns from an earlier run"
        remove_namespaces "$ns"
    fi
done

# --- build and configs ---------------------------------------------------------------------
if [[ ${SKIP_BUILD:-0} != 1 ]]; then
    say "Building release binaries"
    run cargo build --release --workspace
fi
BIN=${SITELINK_BIN_DIR:-$ROOT/target/release}
GW=$BIN/sitelink-gateway
CL=$BIN/sitelink-client
for b in "$GW" "$CL"; do
    [[ -x $b ]] || { echo "$b missing: run cargo build --release --workspace" >&2; exit 1; }
done

say "Copying the configs to $WORK (the keys are DEMO ONLY; git does not keep modes, so chmod 600)"
mkdir -p "$WORK/examples/remote-worker"
cp examples/office-a.key examples/office-b.key examples/ab.psk "$WORK/examples/"
cp examples/remote-worker/*.toml examples/remote-worker/*.key "$WORK/examples/remote-worker/"
chmod 600 "$WORK"/examples/*.key "$WORK"/examples/ab.psk "$WORK"/examples/remote-worker/*.key
CFG=$WORK/examples/remote-worker
run "$GW" check --config "$CFG/office-a.toml"
run "$GW" check --config "$CFG/office-b.toml"
run "$CL" check --config "$CFG/alice.toml"
run "$CL" check --config "$CFG/bob.toml"

# --- network --------------------------------------------------------------------------------
say "Creating namespaces ${ALL_NS[*]}"
for ns in "${ALL_NS[@]}"; do
    ip netns add "$ns"
    in_ns "$ns" ip link set lo up
done
in_ns "$NS_INET" ip link add br0 type bridge
in_ns "$NS_INET" ip addr add 198.51.100.254/24 dev br0
in_ns "$NS_INET" ip link set br0 up
in_ns "$NS_INET" sh -c 'echo 1 > /proc/sys/net/ipv4/ip_forward'
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

# The home router: WAN on the internet router, a LAN bridge, masquerade out of the WAN.
ip link add wan netns "$NS_HOME" type veth peer name to-home netns "$NS_INET"
in_ns "$NS_INET" ip addr add 203.0.113.254/24 dev to-home
in_ns "$NS_INET" ip link set to-home up
in_ns "$NS_HOME" ip addr add 203.0.113.2/24 dev wan
in_ns "$NS_HOME" ip link set wan up
in_ns "$NS_HOME" ip route add default via 203.0.113.254
in_ns "$NS_HOME" ip link add br-lan type bridge
in_ns "$NS_HOME" ip addr add 192.168.77.1/24 dev br-lan
in_ns "$NS_HOME" ip link set br-lan up
in_ns "$NS_HOME" sh -c 'echo 1 > /proc/sys/net/ipv4/ip_forward'
in_ns "$NS_HOME" nft -f - <<'NFT'
table ip home {
    chain postrouting {
        type nat hook postrouting priority srcnat; policy accept;
        oifname "wan" masquerade
    }
}
NFT
i=0
for ns in "$NS_ALICE" "$NS_BOB"; do
    ip link add eth0 netns "$ns" type veth peer name "lan$i" netns "$NS_HOME"
    in_ns "$NS_HOME" ip link set "lan$i" master br-lan up
    in_ns "$ns" ip addr add "192.168.77.$((11 + i))/24" dev eth0
    in_ns "$ns" ip link set eth0 up
    in_ns "$ns" ip route add default via 192.168.77.1
    i=$((i + 1))
done
echo "    offices: lan-a 192.168.10.10 - gw-a 198.51.100.1 - inet - gw-b 198.51.100.2 - lan-b 192.168.20.10"
echo "    home:    alice 192.168.77.11, bob 192.168.77.12 - home router 203.0.113.2 (NAT) - inet"

# --- gateways --------------------------------------------------------------------------------
start() { # ns log command...
    local ns=$1 log=$2
    shift 2
    ip netns exec "$ns" env RUST_LOG="${RUST_LOG:-info}" "$@" 2>"$log" &
    LAST_PID=$!
    PIDS=("$!" "${PIDS[@]}") # stopped in reverse order of starting
    printf '    $ ip netns exec %s %s   (pid %s, log %s)\n' "$ns" "$*" "$!" "$log"
}
wait_for() { # what command...
    local what=$1
    shift
    for _ in $(seq 150); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.2
    done
    echo "timed out waiting for $what" >&2
    return 1
}
say "Starting both gateways"
start "$NS_GW_A" "$WORK/gw-a.log" "$GW" up --config "$CFG/office-a.toml"
start "$NS_GW_B" "$WORK/gw-b.log" "$GW" up --config "$CFG/office-b.toml"
wait_for "gateway A" in_ns "$NS_GW_A" "$GW" status --config "$CFG/office-a.toml"
wait_for "gateway B" in_ns "$NS_GW_B" "$GW" status --config "$CFG/office-b.toml"

# --- clients --------------------------------------------------------------------------------
bound() { # ns config
    in_ns "$1" "$CL" status --json --config "$2" | grep -q '"address": *"10\.'
}
say "Starting alice's and bob's clients (both behind the same home NAT)"
start "$NS_ALICE" "$WORK/alice.log" "$CL" up --config "$CFG/alice.toml"
ALICE_PID=$LAST_PID
start "$NS_BOB" "$WORK/bob.log" "$CL" up --config "$CFG/bob.toml"
wait_for "alice's lease" bound "$NS_ALICE" "$CFG/alice.toml"
wait_for "bob's lease" bound "$NS_BOB" "$CFG/bob.toml"
grep -h 'lease bound' "$WORK/alice.log" "$WORK/bob.log" | sed 's/^/    /'

say "Leases on gateway A (bob has his fixed address; both came from the home router's address)"
run in_ns "$NS_GW_A" "$GW" leases --config "$CFG/office-a.toml"

say "alice's client"
run in_ns "$NS_ALICE" "$CL" status --config "$CFG/alice.toml"
run in_ns "$NS_ALICE" ip -4 route show dev slc0

# --- traffic --------------------------------------------------------------------------------
wait_ping() { # ns addr
    for _ in $(seq 10); do
        in_ns "$1" ping -n -q -c 1 -W 1 "$2" >/dev/null 2>&1 && return 0
    done
    echo "no answer from $2 in $1 within 10 tries" >&2
    return 1
}
say "alice pings the host in office A, then the host in office B (through A's site-to-site tunnel)"
wait_ping "$NS_ALICE" 192.168.10.10
run in_ns "$NS_ALICE" ping -n -c 3 -i 0.2 192.168.10.10
wait_ping "$NS_ALICE" 192.168.20.10
run in_ns "$NS_ALICE" ping -n -c 3 -i 0.2 192.168.20.10

say "Which address does office B's host see? (a TCP server there answers with the peer address)"
in_ns "$NS_LAN_B" socat TCP-LISTEN:7000,reuseaddr,fork 'SYSTEM:echo $SOCAT_PEERADDR' &
PIDS=("$!" "${PIDS[@]}")
wait_for "the TCP server in office B" in_ns "$NS_LAN_B" sh -c '[ -n "$(ss -Hltn "sport = :7000")" ]'
for ns in "$NS_ALICE" "$NS_BOB"; do
    seen=$(in_ns "$ns" socat -T 5 -u TCP:192.168.20.10:7000,connect-timeout=5 STDOUT)
    echo "    from ${ns#"$PREFIX"-}: office B saw $seen"
done

say "bob's settings for a stock WireGuard app (his fixed address; the private key is pasted in)"
run in_ns "$NS_GW_A" "$GW" export-client bob --config "$CFG/office-a.toml" --endpoint 198.51.100.1:51820

say "alice leaves cleanly: her client releases the lease and restores her routes"
run kill -TERM "$ALICE_PID"
wait_for "alice's client to exit" sh -c "! kill -0 $ALICE_PID"
if in_ns "$NS_ALICE" ip link show slc0 >/dev/null 2>&1; then
    echo "alice's slc0 is still there after her client exited" >&2
    exit 1
fi
echo "    alice's client exited; her slc0 and its routes are gone"
run in_ns "$NS_GW_A" "$GW" leases --config "$CFG/office-a.toml"

say "Demo finished: two workers behind one NAT leased addresses and reached both offices"
