#!/usr/bin/env bash
# bench.sh — `make bench`: grapevine against the kernel's and Docker's own data
# paths on real dockerd hosts, plus the in-process Go benchmarks.
#
#   scripts/bench.sh [gvbench run flags…]
#
# Brings up a 3-host harness (scripts/harness.sh, a unique run name, torn down
# on exit), installs the freshly built plugin on every host with PEERS naming
# all of them, runs build/gvbench (the driver in bench/), prints the report
# and writes docs/BENCHMARKS.md. Flags go to `gvbench run`, e.g.
#   scripts/bench.sh -rounds 5 -t 5          more, longer rounds
#   scripts/bench.sh -out ''                 print only
#   scripts/bench.sh -parts convergence -paths gv,overlay -out build/conv.md
#                                            a targeted re-run: only these parts
#                                            (dataplane,convergence,run,names,socket,go)
#                                            and data paths (underlay,kvx,overlay,
#                                            gv,gvenc,dmacvlan,gmacvlan); no harness is
#                                            brought up for -parts go
# Environment: BENCH_HOSTS (default 3), BENCH_SKIP_BUILD=1 (use build/ as is).
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"
[ "$(id -u)" = 0 ] || { echo "bench: must run as root (network namespaces, dockerd)" >&2; exit 1; }

n=${BENCH_HOSTS:-3}
[[ $n =~ ^[2-9]$ ]] || { echo "bench: BENCH_HOSTS must be 2..9, got '$n'" >&2; exit 1; }

# iperf3 is copied (with its libraries) into the harness image; install it if missing.
if ! command -v iperf3 >/dev/null; then
	echo "bench: installing iperf3 with apt-get: the throughput probe, copied into the simulated hosts' image" >&2
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iperf3 >/dev/null
fi

if [ "${BENCH_SKIP_BUILD:-0}" != 1 ]; then
	make build plugin
fi
CGO_ENABLED=0 go build -trimpath -o build/gvbench ./bench/

cmd="make bench"
[ $# -eq 0 ] || cmd="scripts/bench.sh $*"
rc=0
build/gvbench needs-harness "$@" || rc=$?
if [ "$rc" = 1 ]; then
	exec build/gvbench run -repo "$REPO" -command "$cmd" "$@"
fi
[ "$rc" = 0 ] || exit "$rc"

run="bn$(printf '%05x' $((RANDOM * 32 + RANDOM % 32)))"
peers=$(for i in $(seq 1 "$n"); do printf '198.18.0.%d,' $((10 + i)); done)
peers=${peers%,}
trap 'scripts/harness.sh down "$run"' EXIT
# PEERS requires a gossip key: a fresh one per run
PLUGIN_SETTINGS="GOSSIP_KEY=$(head -c32 /dev/urandom | base64) ${PLUGIN_SETTINGS:-}" PEERS=$peers scripts/harness.sh up "$run" "$n"

build/gvbench run -run "$run" -repo "$REPO" -command "$cmd" "$@"
