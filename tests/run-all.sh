#!/usr/bin/env bash
# The one test command: on a fresh Debian machine, as root,
#
#   sudo bash tests/run-all.sh
#
# installs the system tools the end-to-end tests drive (only those missing; nothing is fetched
# when all are there), then runs rustfmt, clippy, the build and the whole test suite. The
# end-to-end tests (tests/*.rs at the workspace root) make their own network namespaces with
# names unique to the test process, so they run in parallel with each other and with the unit
# tests. Without root they skip with a printed reason.
set -euo pipefail
cd "$(dirname "$0")/.."

started=$SECONDS
step() { printf '\n==> %s  [%ds]\n' "$*" "$((SECONDS - started))"; }

# Debian packages the end-to-end tests (now and planned: NAT, TURN, UPnP) need.
PACKAGES=(
    iproute2 iputils-ping nftables conntrack tcpdump socat netcat-openbsd iperf3
    wireguard-go wireguard-tools coturn miniupnpd miniupnpc
)

step "System packages"
missing=()
for pkg in "${PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}\n' "$pkg" 2>/dev/null | grep -q '^install ok installed$'; then
        missing+=("$pkg")
    fi
done
if [[ ${#missing[@]} -eq 0 ]]; then
    echo "all present"
elif [[ $(id -u) -ne 0 ]]; then
    echo "warning: not root, cannot install: ${missing[*]} (the end-to-end tests needing them will skip)"
else
    echo "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # Packages with daemons (coturn, miniupnpd) must not try to start them here: the tests run
    # their own instances. policy-rc.d is Debian's switch for that; only ours is removed.
    own_policy=0
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        own_policy=1
    fi
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    [[ $own_policy -eq 1 ]] && rm -f /usr/sbin/policy-rc.d
fi

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings

step "cargo build"
# Builds the binaries too: the end-to-end tests run target/debug/sitelink-* and do not build them.
cargo build --workspace --all-targets

step "cargo test"
cargo test --workspace

step "done in $((SECONDS - started)) s"
