#!/usr/bin/env bash
# The one place that knows which Debian packages pathprobe's demo and tests need on this machine.
#
#   scripts/setup.sh demo    what `make demo` needs: the testbed's nginx, haproxy, capture, namespaces
#   scripts/setup.sh test    what `make test` needs: the above plus load tools, a browser for the
#                            report test, and a C toolchain for the NFQUEUE delay fault
#   scripts/setup.sh --print demo|test   print the package list and exit
#
# Contract: exit 0 when every package is installed (installing the missing ones with apt-get when
# run as root); when some are missing and we are not root, print ONE line naming them and the exact
# command to run, and exit 1. Usage errors exit 2. `make demo`, `make test` and `.ci/run` all call
# this script, so the list lives here only.
set -euo pipefail

# Python and its venv module (Debian splits ensurepip out); certificates for pip's HTTPS.
BASE=(python3 python3-venv ca-certificates)
# The testbed: nginx (proxy), haproxy (load balancer), tcpdump (capture), iproute2 + iptables
# (namespaces, loss and bandwidth faults), procps (sysctl, ps).
DEMO=(nginx-light haproxy tcpdump iproute2 iptables procps)
# Tests: wrk + hey (independent checks of the faults), chromium + driver (the report browser test),
# libnetfilter-queue-dev + build-essential + python3-dev (building netfilterqueue for the delay
# fault; the kernel has no netem), curl + psmisc (helpers the tests call).
TEST=(wrk hey chromium chromium-driver libnetfilter-queue-dev build-essential python3-dev curl psmisc)

usage() {
    echo "usage: scripts/setup.sh [--print] demo|test" >&2
    exit 2
}

print_only=0
if [[ "${1:-}" == "--print" ]]; then
    print_only=1
    shift
fi
case "${1:-}" in
    demo) wanted=("${BASE[@]}" "${DEMO[@]}") ;;
    test) wanted=("${BASE[@]}" "${DEMO[@]}" "${TEST[@]}") ;;
    *) usage ;;
esac
[[ $# -eq 1 ]] || usage

if ((print_only)); then
    echo "${wanted[*]}"
    exit 0
fi

if ! command -v dpkg-query >/dev/null; then
    echo "pathprobe setup: not a Debian-based system (no dpkg-query); install by hand: ${wanted[*]}" >&2
    exit 1
fi

# dpkg-query prints "install ok installed" for an installed package; anything else (not known,
# removed, config-files only, half-installed) counts as missing.
missing=()
for pkg in "${wanted[@]}"; do
    status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
    [[ "$status" == "install ok installed" ]] || missing+=("$pkg")
done

if ((${#missing[@]} == 0)); then
    exit 0
fi

if [[ $(id -u) -ne 0 ]]; then
    echo "pathprobe setup: missing Debian packages: ${missing[*]}; install them with: sudo apt-get update && sudo apt-get install -y --no-install-recommends ${missing[*]}" >&2
    exit 1
fi

echo "== installing Debian packages: ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
# Wait for a concurrent apt/dpkg (another install, unattended-upgrades) instead of failing at once.
lock=(-o DPkg::Lock::Timeout=600)
apt-get "${lock[@]}" update -qq
apt-get "${lock[@]}" install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
