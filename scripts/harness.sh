#!/usr/bin/env bash
# harness.sh — several real Docker hosts on one machine, for grapevine's tests.
#
# One simulated host = one network namespace with its own containerd and dockerd.
# The hosts are joined by veth pairs to a bridge that lives in its own namespace
# (the underlay), so the root namespace gets no address or route into the test
# ranges. A "LAN machine" namespace without Docker sits on the same underlay.
#
#   harness.sh up RUN N             bring up hosts h1..hN (tears down again on failure)
#   harness.sh down RUN             tear everything of RUN down (idempotent)
#   harness.sh env RUN              print shell exports describing the run
#   harness.sh docker RUN hN ARGS…  run /usr/bin/docker against host hN
#   harness.sh exec RUN hN|lan|ul CMD…   run CMD in that namespace
#   harness.sh plugin-id RUN hN     the grapevine plugin's id on hN
#   harness.sh plugin-sock RUN hN   path of hN's plugin socket in the root namespace
#   harness.sh plugin-pid RUN hN    pid of hN's running plugin process
#   harness.sh plugin-install RUN hN   (re)create, configure and enable the plugin on hN
#   harness.sh dockerd-stop RUN hN  SIGTERM hN's dockerd and wait for it to exit
#   harness.sh dockerd-start RUN hN start hN's dockerd again with the same flags
#   harness.sh dockerd-restart RUN hN
#   harness.sh status RUN hN [--json]   `grapevine status` of hN's plugin (run in hN's namespaces)
#   harness.sh forget RUN hN NODE…  `grapevine forget NODE…` against hN's plugin (the same way)
#   harness.sh doctor RUN hN [HOST] [--json]   `grapevine doctor` of hN's plugin (exit 1 when a check fails)
#   harness.sh plugin-set RUN hN K=V…    disable -f, `docker plugin set`, enable on hN
#   harness.sh partition RUN hA [hB…]    cut the listed hosts from all the others (iptables
#                                   DROP in the hosts' raw tables, comment gvtest-partition)
#   harness.sh heal RUN             remove every partition rule
#   harness.sh partition-counters RUN hN   packets dropped on hN per chain and kind
#                                   (vxlan, gossip-udp, gossip-tcp, all)
#   harness.sh kill RUN hN          SIGKILL hN's dockerd, containerd, shims, plugin and containers
#   harness.sh revive RUN hN        start a killed host's containerd and dockerd again
#   harness.sh link RUN hN up|down  cut or restore hN's underlay link
#   harness.sh swarm RUN [hN…]      swarm init on h1 (on the underlay), join the listed (default all) hosts
#   harness.sh leftovers RUN [PLUGIN-ID…]   after down: list anything left; exit 1 if any
#
# RUN is a short unique prefix (letters/digits, ≤ 8 chars) so that two runs can share
# a machine. Addresses: underlay 198.18.0.0/24, host i at 198.18.0.(10+i), the LAN
# machine at 198.18.0.200; docker0 198.19.250.1/24 and default pools in
# 100.64.0.0/10 inside each host; grapevine POOL 198.19.128.0/17.
#
# Each host has its own UTS namespace named hN, shared by its containerd and dockerd,
# so the plugin, Swarm and `docker info` all see hN.
#
# Environment for `up`: PLUGIN_DIR (default build/plugin; must hold config.json and
# rootfs/), PEERS (the plugin's PEERS on every host; unset = a mesh: each of the first
# MESH hosts (default all) lists the others, hosts beyond MESH list the mesh hosts),
# PLUGIN_SETTINGS (extra `docker plugin set` KEY=VALUE words for every host, e.g.
# "GOSSIP_KEY=… SCOPE=global"), PLUGIN_SETTINGS_hN (the same for hN only, applied
# last), SKIP_PLUGIN=1 (no plugin). Docker's side of a host: USERLAND_PROXY_hN
# (or USERLAND_PROXY for all; true|false, default false) is dockerd's
# --userland-proxy; IPTABLES_hN=legacy|nft makes hN's dockerd write its rules with
# that iptables backend (a directory of iptables* links first in its PATH; nothing
# host-wide changes; default: whatever `iptables` is on this machine).
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
DOCKER=/usr/bin/docker
BASE=${GV_HARNESS_BASE:-/run/gvtest}
UL_PREFIX=198.18.0
LAN_ADDR=$UL_PREFIX.200
UNUSED_DNS=$UL_PREFIX.254
GV_POOL=${GV_POOL:-198.19.128.0/17}

die() {
	echo "harness: $*" >&2
	exit 1
}
log() { echo "harness: $*" >&2; }

check_run() {
	[[ ${1:-} =~ ^[a-z][a-z0-9]{0,7}$ ]] || die "RUN must be 1-8 lowercase letters/digits starting with a letter, got '${1:-}'"
}

rundir() { echo "$BASE/$1"; }
host_ns() { echo "$1-$2"; } # RUN hN
host_index() {
	[[ $1 =~ ^h([0-9]+)$ ]] || die "host must be h1, h2, …; got '$1'"
	echo "${BASH_REMATCH[1]}"
}
host_addr() { echo "$UL_PREFIX.$((10 + $(host_index "$1")))"; }
host_sock() { echo "$(rundir "$1")/$2/docker.sock"; }

hdocker() { # RUN hN args…
	local run=$1 h=$2
	shift 2
	"$DOCKER" -H "unix://$(host_sock "$run" "$h")" "$@"
}

in_ns() { # NS cmd…
	local ns=$1
	shift
	nsenter --net="/run/netns/$ns" -- "$@"
}

# ---------------------------------------------------------------------------
# installation of what the harness needs (a fresh Debian has only Go)

ensure_packages() {
	local missing=()
	command -v dockerd >/dev/null || missing+=(docker.io)
	[ -x "$DOCKER" ] || missing+=(docker.io)
	command -v containerd >/dev/null || missing+=(containerd)
	command -v iptables >/dev/null || missing+=(iptables)
	command -v ip >/dev/null || missing+=(iproute2)
	if [ ${#missing[@]} -gt 0 ]; then
		log "installing ${missing[*]} with apt-get: the simulated hosts run dockerd and containerd, use ip netns and iptables"
		apt-get update -qq
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
	fi
	# the image (scripts/image.sh) installs busybox-static itself when missing
	# dockerd needs these modules' functionality; they are built in on the target kernels,
	# modprobe is best effort for kernels that have them as modules.
	modprobe -q br_netfilter 2>/dev/null || true
	modprobe -q vxlan 2>/dev/null || true
	modprobe -q overlay 2>/dev/null || true
}

# ---------------------------------------------------------------------------
# underlay

setup_underlay() { # RUN N
	local run=$1 n=$2 ul="$1-ul" i ns
	ip netns add "$ul"
	in_ns "$ul" ip link set lo up
	in_ns "$ul" ip link add br0 type bridge
	in_ns "$ul" ip link set br0 mtu 1500 up
	for i in $(seq 1 "$n"); do
		ns=$(host_ns "$run" "h$i")
		ip netns add "$ns"
		ip link add eth0 netns "$ns" mtu 1500 type veth peer name "h$i" netns "$ul" mtu 1500
		in_ns "$ul" ip link set "h$i" master br0 up
		in_ns "$ns" ip link set lo up
		in_ns "$ns" ip addr add "$UL_PREFIX.$((10 + i))/24" dev eth0
		in_ns "$ns" ip link set eth0 up
	done
	ns="$run-lan"
	ip netns add "$ns"
	ip link add eth0 netns "$ns" mtu 1500 type veth peer name lan netns "$ul" mtu 1500
	in_ns "$ul" ip link set lan master br0 up
	in_ns "$ns" ip link set lo up
	in_ns "$ns" ip addr add "$LAN_ADDR/24" dev eth0
	in_ns "$ns" ip link set eth0 up
}

# ---------------------------------------------------------------------------
# containerd + dockerd per host

write_host_config() { # RUN hN
	local run=$1 h=$2 d
	d="$(rundir "$run")/$h"
	mkdir -p "$d/containerd/root" "$d/containerd/state" "$d/data" "$d/exec" "$d/state"
	# a persistent UTS namespace (bind-mounted on $d/uts) named after the host, entered
	# by its containerd and dockerd (and so by the plugin and Swarm): it survives
	# daemon restarts and kills, and `down` unmounts it with everything under the run.
	if ! mountpoint -q "$d/uts" 2>/dev/null; then
		: >"$d/uts"
		unshare --uts="$d/uts" hostname "$h"
	fi
	# the plugin's state directory as a shared mount, as on a systemd host:
	# namespace pins grapevine makes there outlive `docker plugin disable`
	if ! mountpoint -q "$d/state" 2>/dev/null; then
		mount --bind "$d/state" "$d/state"
	fi
	mount --make-shared "$d/state"
	# dockerd's exec root shared too, as on a systemd host: the containers'
	# namespace files dockerd mounts there appear in the plugin (names tap)
	if ! mountpoint -q "$d/exec" 2>/dev/null; then
		mount --bind "$d/exec" "$d/exec"
	fi
	mount --make-shared "$d/exec"
	cat >"$d/containerd/config.toml" <<EOF
version = 2
root = "$d/containerd/root"
state = "$d/containerd/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]

[grpc]
  address = "$d/containerd/containerd.sock"

[ttrpc]
  address = "$d/containerd/containerd.sock.ttrpc"

[debug]
  address = "$d/containerd/debug.sock"

[metrics]
  address = ""
EOF
	write_dockerd_env "$run" "$h"
	local proxy
	proxy=$(userland_proxy "$h")
	# dockerd 20.10 writes its identity key to /etc/docker/key.json unless told otherwise:
	# give every host its own (own daemon ID, nothing left in /etc).
	printf '{"deprecated-key-path": "%s"}\n' "$d/key.json" >"$d/daemon.json"
	# the exact dockerd command line, reused by dockerd-start
	cat >"$d/dockerd.args" <<EOF
--config-file=$d/daemon.json
--data-root=$d/data
--exec-root=$d/exec
--pidfile=$d/dockerd.pid
-H=unix://$d/docker.sock
--containerd=$d/containerd/containerd.sock
--bip=198.19.250.1/24
--default-address-pool=base=100.64.0.0/10,size=24
--dns=$UNUSED_DNS
--cgroup-parent=/$run-$h
--userland-proxy=$proxy
--shutdown-timeout=2
EOF
}

userland_proxy() { # hN — dockerd's --userland-proxy for hN
	local own="USERLAND_PROXY_$1" v
	v=${!own:-${USERLAND_PROXY:-false}}
	[[ $v =~ ^(true|false)$ ]] || die "$own/USERLAND_PROXY must be true or false, got '$v'"
	echo "$v"
}

write_dockerd_env() { # RUN hN — dockerd's environment (dockerd.env, one VAR=VALUE a line):
	# with IPTABLES_hN=legacy|nft a directory whose iptables* name that backend's
	# binaries comes first in PATH; dockerd 20.10 runs whatever `iptables` PATH finds.
	local run=$1 h=$2 d own="IPTABLES_$2" mode bin x
	d="$(rundir "$run")/$h"
	mode=${!own:-}
	: >"$d/dockerd.env"
	[ -n "$mode" ] || return 0
	[[ $mode =~ ^(legacy|nft)$ ]] || die "$own must be legacy or nft, got '$mode'"
	bin=$(command -v "xtables-$mode-multi") || die "$own=$mode: xtables-$mode-multi not found (apt-get install iptables)"
	mkdir -p "$d/xtables"
	for x in iptables iptables-save iptables-restore ip6tables ip6tables-save ip6tables-restore; do
		ln -sfn "$bin" "$d/xtables/$x"
	done
	echo "PATH=$d/xtables:$PATH" >"$d/dockerd.env"
}

wait_for() { # DESCRIPTION SECONDS cmd…
	local what=$1 secs=$2 deadline
	shift 2
	deadline=$((SECONDS + secs))
	local rc
	while true; do
		rc=0
		"$@" >/dev/null 2>&1 || rc=$?
		[ $rc -ne 0 ] || return 0
		if [ $rc -eq 2 ] || ((SECONDS >= deadline)); then
			log "gave up waiting for $what (exit $rc after $((secs - deadline + SECONDS))s)"
			return 1
		fi
		sleep 0.1
	done
}

start_containerd() { # RUN hN
	local run=$1 h=$2 d ns
	d="$(rundir "$run")/$h"
	ns=$(host_ns "$run" "$h")
	# a stale socket from a killed containerd would satisfy the wait below at once
	rm -f "$d/containerd/containerd.sock" "$d/containerd/containerd.sock.ttrpc"
	# containerd starts the plugin's and containers' shims: they inherit its UTS
	# namespace, so the plugin sees the host's name (a plugin gets a new UTS namespace
	# that starts as a copy of its parent's).
	setsid nsenter --net="/run/netns/$ns" --uts="$d/uts" -- containerd --config "$d/containerd/config.toml" \
		</dev/null >>"$d/containerd.log" 2>&1 &
	echo $! >"$d/containerd.pid"
	wait_for "containerd of $h ($d/containerd.log)" 30 test -S "$d/containerd/containerd.sock"
}

pid_alive() { # PID — running and not a zombie (a killed daemon whose reaper has not
	# collected it yet still answers kill -0)
	local st
	[ -n "${1:-}" ] || return 1
	st=$(awk '{ print $3 }' "/proc/$1/stat" 2>/dev/null) || return 1
	[ -n "$st" ] && [ "$st" != Z ] && [ "$st" != X ]
}

dockerd_running() { # RUN hN
	local d pid
	d="$(rundir "$1")/$2"
	[ -f "$d/dockerd.pid" ] || return 1
	pid=$(cat "$d/dockerd.pid" 2>/dev/null) || return 1
	pid_alive "$pid"
}

start_dockerd() { # RUN hN
	local run=$1 h=$2 d ns args envs
	d="$(rundir "$run")/$h"
	ns=$(host_ns "$run" "$h")
	mapfile -t args <"$d/dockerd.args"
	mapfile -t envs <"$d/dockerd.env"
	# nsenter, not `ip netns exec` (that remounts /sys and dockerd loses the cgroup mounts);
	# the host's own UTS namespace (shared with its containerd) gives it its hostname.
	setsid nsenter --net="/run/netns/$ns" --uts="$d/uts" -- env "${envs[@]}" dockerd "${args[@]}" \
		</dev/null >>"$d/dockerd.log" 2>&1 &
	local pid=$!
	if ! wait_for "dockerd of $h ($d/dockerd.log)" 60 dockerd_answers "$run" "$h" "$pid"; then
		tail -n 30 "$d/dockerd.log" >&2 || true
		return 1
	fi
}

dockerd_answers() { # RUN hN PID — succeeds once dockerd answers; aborts the wait if it died
	if ! pid_alive "$3"; then
		log "dockerd of $2 exited"
		return 2
	fi
	hdocker "$1" "$2" version
}

stop_pidfile() { # PIDFILE SECONDS — SIGTERM, wait, then SIGKILL
	local pf=$1 secs=$2 pid deadline
	[ -f "$pf" ] || return 0
	pid=$(cat "$pf" 2>/dev/null || true)
	[ -n "$pid" ] || return 0
	pid_alive "$pid" || return 0
	kill -TERM "$pid" 2>/dev/null || true
	deadline=$((SECONDS + secs))
	while pid_alive "$pid"; do
		if ((SECONDS >= deadline)); then
			log "pid $pid ($pf) ignored SIGTERM for ${secs}s; killing it"
			kill -KILL "$pid" 2>/dev/null || true
			sleep 0.2
			break
		fi
		sleep 0.1
	done
}

stop_dockerd() { # RUN hN
	local d
	d="$(rundir "$1")/$2"
	stop_pidfile "$d/dockerd.pid" 30
	# dockerd removes its pidfile on a clean exit; wait for the socket to stop answering.
	wait_for "dockerd of $2 to stop answering" 10 sh -c "! $DOCKER -H unix://$d/docker.sock version" || true
}

# ---------------------------------------------------------------------------
# image and plugin

import_image() { # RUN hN
	local run=$1 h=$2 img
	img="$(rundir "$run")/image.tar"
	hdocker "$run" "$h" import --change 'CMD ["sh"]' "$img" gvtest/busybox:latest >/dev/null
}

plugin_id() { # RUN hN
	hdocker "$1" "$2" plugin inspect -f '{{.Id}}' grapevine:latest 2>/dev/null
}

peers_for() { # RUN hN — the PEERS setting for hN
	# $PEERS if set (even empty); otherwise a mesh: the first $MESH hosts (default all)
	# list each other, and hosts beyond $MESH list the mesh hosts (outsiders that try
	# to join, e.g. with a wrong GOSSIP_KEY).
	if [ -n "${PEERS+set}" ]; then
		echo "$PEERS"
		return
	fi
	local run=$1 h=$2 n mesh i me out=()
	n=$(cat "$(rundir "$run")/hosts")
	mesh=${MESH:-$n}
	me=$(host_index "$h")
	for i in $(seq 1 "$mesh"); do
		[ "$i" = "$me" ] || out+=("$(host_addr "h$i")")
	done
	local IFS=,
	echo "${out[*]}"
}

install_plugin() { # RUN hN
	local run=$1 h=$2 d pdir id peers
	d="$(rundir "$run")/$h"
	pdir=${PLUGIN_DIR:-$REPO/build/plugin}
	[ -f "$pdir/config.json" ] && [ -d "$pdir/rootfs" ] ||
		die "plugin directory $pdir lacks config.json or rootfs/ (run make plugin)"
	if id=$(plugin_id "$run" "$h"); then
		hdocker "$run" "$h" plugin disable -f grapevine:latest >/dev/null 2>&1 || true
		hdocker "$run" "$h" plugin rm -f grapevine:latest >/dev/null
		rm -rf "/run/docker/plugins/$id"
	fi
	hdocker "$run" "$h" plugin create grapevine:latest "$pdir" >/dev/null
	id=$(plugin_id "$run" "$h")
	echo "$id" >>"$(rundir "$run")/plugin-ids"
	mkdir -p "$d/state"
	peers=$(peers_for "$run" "$h")
	local own="PLUGIN_SETTINGS_$h"
	# shellcheck disable=SC2086 # PLUGIN_SETTINGS* are lists of words on purpose
	hdocker "$run" "$h" plugin set grapevine:latest "state.source=$d/state" "docker-sock.source=$d/docker.sock" "docker-exec-root.source=$d/exec" \
		"ADVERTISE=$(host_addr "$h")" "PEERS=$peers" "POOL=$GV_POOL" LOG_LEVEL=debug \
		${PLUGIN_SETTINGS:-} ${!own:-}
	if ! hdocker "$run" "$h" plugin enable --timeout 30 grapevine:latest >/dev/null; then
		log "plugin enable failed on $h; dockerd log tail:"
		tail -n 30 "$d/dockerd.log" >&2 || true
		return 1
	fi
}

# ---------------------------------------------------------------------------
# up / down

cmd_up() { # RUN N
	local run=$1 n=$2 i rd pids
	[[ $n =~ ^[1-9][0-9]?$ ]] && ((n <= 40)) || die "N must be 1..40, got '$n'"
	rd=$(rundir "$run")
	[ ! -e "$rd" ] || die "$rd exists: run '$0 down $run' first"
	ip netns list | grep -q "^$run-" && die "namespaces named $run-* exist: run '$0 down $run' first"
	ensure_packages
	mkdir -p "$rd"
	echo "$n" >"$rd/hosts"
	UP_RUN=$run
	trap 'rc=$?; if [ $rc -ne 0 ]; then log "up failed (exit $rc); tearing down $UP_RUN"; cmd_down "$UP_RUN"; fi' EXIT
	setup_underlay "$run" "$n"
	for i in $(seq 1 "$n"); do
		write_host_config "$run" "h$i"
		start_containerd "$run" "h$i"
	done
	pids=()
	for i in $(seq 1 "$n"); do
		start_dockerd "$run" "h$i" &
		pids+=($!)
	done
	wait_pids "${pids[@]}"
	# the image tarball is built once, then imported everywhere in parallel
	"$REPO/scripts/image.sh" dir "$rd/image"
	tar -C "$rd/image" -cf "$rd/image.tar" .
	pids=()
	for i in $(seq 1 "$n"); do
		import_image "$run" "h$i" &
		pids+=($!)
	done
	wait_pids "${pids[@]}"
	if [ "${SKIP_PLUGIN:-0}" != 1 ]; then
		pids=()
		for i in $(seq 1 "$n"); do
			install_plugin "$run" "h$i" &
			pids+=($!)
		done
		wait_pids "${pids[@]}"
	fi
	trap - EXIT
	log "up: $n host(s) in $rd"
}

wait_pids() { # PID… — wait for each; fail if any failed
	local rc=0 pid
	for pid in "$@"; do
		wait "$pid" || rc=1
	done
	return $rc
}

cmd_down() { # RUN — best effort, idempotent
	local run=$1 rd n i h d id ids pid ns cg mnt pids
	rd=$(rundir "$run")
	set +e
	n=$(cat "$rd/hosts" 2>/dev/null)
	[ -n "$n" ] || n=$(ip netns list | awk -v p="^$run-h[0-9]+$" '$1 ~ p' | wc -l)
	# 1. containers and plugins, while the daemons still answer
	for i in $(seq 1 "$n"); do
		h="h$i"
		d="$rd/$h"
		[ -S "$d/docker.sock" ] || continue
		if hdocker "$run" "$h" version >/dev/null 2>&1; then
			id=$(plugin_id "$run" "$h") && echo "$id" >>"$rd/plugin-ids"
			ids=$(hdocker "$run" "$h" ps -aq 2>/dev/null)
			[ -z "$ids" ] || hdocker "$run" "$h" rm -f $ids >/dev/null 2>&1
			hdocker "$run" "$h" plugin disable -f grapevine:latest >/dev/null 2>&1
		fi
	done
	# 2. daemons: dockerd first, then containerd
	pids=()
	for i in $(seq 1 "$n"); do
		stop_pidfile "$rd/h$i/dockerd.pid" 30 &
		pids+=($!)
	done
	wait_pids "${pids[@]}"
	pids=()
	for i in $(seq 1 "$n"); do
		stop_pidfile "$rd/h$i/containerd.pid" 15 &
		pids+=($!)
	done
	wait_pids "${pids[@]}"
	# 3. leftover shims (and their children) that name one of our containerd sockets
	for pid in $(pgrep -f 'containerd-shim' 2>/dev/null); do
		if tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" | grep -qF "$rd/"; then
			log "killing leftover shim $pid"
			for child in $(ps -o pid= --ppid "$pid" 2>/dev/null); do
				kill -KILL "$child" 2>/dev/null
			done
			kill -KILL "$pid" 2>/dev/null
		fi
	done
	# 4. mounts under the run directory, deepest first
	if [ -n "$rd" ] && [ -d "$rd" ]; then
		for mnt in $(awk -v p="$rd/" 'index($2, p) == 1 { print $2 }' /proc/self/mounts | sort -r); do
			umount "$mnt" 2>/dev/null || umount -l "$mnt" 2>/dev/null
		done
	fi
	# 5. namespaces
	for ns in $(ip netns list | awk -v p="^$run-(h[0-9]+|ul|lan)$" '$1 ~ p { print $1 }'); do
		ip netns del "$ns" 2>/dev/null
	done
	# 6. our plugins' socket directories in the shared /run/docker/plugins
	if [ -f "$rd/plugin-ids" ]; then
		for id in $(sort -u "$rd/plugin-ids"); do
			[[ $id =~ ^[0-9a-f]{64}$ ]] && rm -rf "/run/docker/plugins/$id"
		done
	fi
	# 7. our cgroup directories: containers live under /RUN-hN (--cgroup-parent), plugins
	# under /<plugin-id>; with cgroup v1 one of each per controller, possibly nested
	# below this process's own cgroup.
	local names=("$run-h*")
	[ -f "$rd/plugin-ids" ] && names+=($(sort -u "$rd/plugin-ids"))
	for id in "${names[@]}"; do
		find /sys/fs/cgroup -maxdepth 5 -type d -name "$id" -print 2>/dev/null
	done | while read -r cg; do
		find "$cg" -depth -type d -exec rmdir {} + 2>/dev/null
	done
	# 8. files; the shims' socket directory is shared: remove it only if empty and no
	# containerd at all is left on the machine
	rm -rf "$rd"
	if ! pgrep -x containerd >/dev/null 2>&1; then
		rmdir /run/containerd/s /run/containerd 2>/dev/null
	fi
	rmdir "$BASE" 2>/dev/null
	set -e
	return 0
}

cmd_leftovers() { # RUN [PLUGIN-ID…] — print what a torn-down run left behind; exit 1 if anything
	local run=$1 rd id found=0
	shift
	rd=$(rundir "$run")
	report() {
		found=1
		echo "$*"
	}
	[ ! -e "$rd" ] || report "directory $rd"
	for ns in $(ip netns list | awk -v p="^$run-(h[0-9]+|ul|lan)$" '$1 ~ p { print $1 }'); do report "netns $ns"; done
	for pid in $(pgrep -f "$rd/" 2>/dev/null); do report "process $pid: $(tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline")"; done
	awk -v p="$rd/" 'index($2, p) == 1 { print "mount " $2 }' /proc/self/mounts | while read -r l; do echo "$l"; done | grep . && found=1
	for id in "$@"; do
		[ ! -e "/run/docker/plugins/$id" ] || report "plugin directory /run/docker/plugins/$id"
		for cg in $(find /sys/fs/cgroup -maxdepth 5 -type d -name "$id" 2>/dev/null); do report "cgroup $cg"; done
	done
	for cg in $(find /sys/fs/cgroup -maxdepth 5 -type d -name "$run-h*" 2>/dev/null); do report "cgroup $cg"; done
	return $found
}

cmd_env() { # RUN
	local run=$1 rd n i
	rd=$(rundir "$run")
	[ -f "$rd/hosts" ] || die "run $run is not up"
	n=$(cat "$rd/hosts")
	echo "export GV_RUN=$run GV_RUNDIR=$rd GV_HOSTS=$n"
	echo "export GV_LAN_NETNS=$run-lan GV_LAN_ADDR=$LAN_ADDR GV_POOL=$GV_POOL"
	for i in $(seq 1 "$n"); do
		echo "export GV_H${i}_DOCKER_HOST=unix://$rd/h$i/docker.sock GV_H${i}_ADDR=$(host_addr "h$i") GV_H${i}_NETNS=$run-h$i"
	done
}

cmd_plugin_pid() { # RUN hN — the `/grapevine serve` process in hN's network namespace
	local run=$1 h=$2 want pid
	want=$(stat -L -c '%d:%i' "/run/netns/$(host_ns "$run" "$h")")
	for pid in $(pgrep -x grapevine 2>/dev/null); do
		[ "$(stat -L -c '%d:%i' "/proc/$pid/ns/net" 2>/dev/null)" = "$want" ] || continue
		tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" | grep -q '^/grapevine serve' || continue
		echo "$pid"
		return 0
	done
	return 1
}

# ---------------------------------------------------------------------------
# faults: partitions, abrupt host death, link cuts

PART_COMMENT=gvtest-partition

hosts_of() { # RUN — h1 … hN
	local n i
	n=$(cat "$(rundir "$1")/hosts" 2>/dev/null) || die "run $1 is not up"
	for i in $(seq 1 "$n"); do echo "h$i"; done
}

# drop_between NS ADDR — in NS, drop everything to and from ADDR. Rules go in the raw
# table (before conntrack, so established gossip TCP streams are cut too, and no other
# software there puts rules in it). Gossip and VXLAN get their own rules first, so
# their counters prove that both kinds were cut (partition-counters). The kernel's
# VXLAN encapsulation leaves through ip_local_out, so raw OUTPUT sees (and drops) it
# like any local UDP. It counts only frames that were encapsulated: once grapevine has
# removed a dead peer's FDB entries, the VXLAN device drops frames towards it itself
# (its TX dropped counter), and nothing reaches these rules.
drop_between() {
	local ns=$1 addr=$2 vx=${VXLAN_PORT:-4789} gp=${GOSSIP_PORT:-7947} kind chain dir spec
	for chain in PREROUTING OUTPUT; do
		if [ "$chain" = PREROUTING ]; then dir=-s; else dir=-d; fi
		for spec in "vxlan:-p udp --dport $vx" "gossip-udp:-p udp --dport $gp" "gossip-tcp:-p tcp --dport $gp" \
			"gossip-tcp:-p tcp --sport $gp" "all:"; do
			kind=${spec%%:*}
			# shellcheck disable=SC2086 # the match is a list of words
			in_ns "$ns" iptables -w -t raw -A "$chain" "$dir" "$addr" ${spec#*:} \
				-m comment --comment "$PART_COMMENT $kind" -j DROP
		done
	done
}

cmd_partition() { # RUN hA… — cut hA… (one side) from every other host of the run
	local run=$1 h o side=" ${*:2} "
	shift
	[ $# -gt 0 ] || die "usage: partition RUN hA [hB…] (the hosts on one side)"
	for h in "$@"; do host_index "$h" >/dev/null; done
	for h in $(hosts_of "$run"); do
		for o in $(hosts_of "$run"); do
			[ "$h" != "$o" ] || continue
			# only pairs across the cut: exactly one of them on the listed side
			local a=0 b=0
			[[ $side == *" $h "* ]] && a=1
			[[ $side == *" $o "* ]] && b=1
			[ "$a" != "$b" ] || continue
			drop_between "$(host_ns "$run" "$h")" "$(host_addr "$o")"
		done
	done
	log "partition: {$*} | {the other hosts}"
}

cmd_heal() { # RUN — remove every partition rule of the run (idempotent)
	local run=$1 h ns rule
	for h in $(hosts_of "$run"); do
		ns=$(host_ns "$run" "$h")
		[ -e "/run/netns/$ns" ] || continue
		in_ns "$ns" iptables -w -t raw -S 2>/dev/null | grep -F -- "$PART_COMMENT" | sed 's/^-A /-D /' |
			while read -r rule; do
				eval "in_ns \"\$ns\" iptables -w -t raw $rule"
			done
	done
}

cmd_partition_counters() { # RUN hN — "CHAIN KIND PACKETS" of hN's partition rules, summed per kind
	local run=$1 h=$2
	in_ns "$(host_ns "$run" "$h")" iptables -w -t raw -L -v -x -n |
		awk -v c="$PART_COMMENT" '/^Chain/ { chain = $2 } index($0, "/* " c " ") { k = $0; sub(".*/\\* " c " ", "", k); sub(" \\*/.*", "", k); n[chain " " k] += $1 }
			END { for (x in n) print x, n[x] }' | sort
}

# host_pids RUN hN — every process of hN: dockerd, containerd, their shims and all the
# shims' descendants (the plugin and the containers).
host_pids() {
	local run=$1 h=$2 d pid shims=() all=() frontier next p
	d="$(rundir "$run")/$h"
	for f in dockerd.pid containerd.pid; do
		pid=$(cat "$d/$f" 2>/dev/null) || continue
		pid_alive "$pid" && all+=("$pid")
	done
	for pid in $(pgrep -f 'containerd-shim' 2>/dev/null); do
		tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" | grep -qF "$d/containerd/" && shims+=("$pid")
	done
	frontier=("${shims[@]}")
	all+=("${shims[@]}")
	while [ ${#frontier[@]} -gt 0 ]; do
		next=()
		for p in "${frontier[@]}"; do
			for c in $(ps -o pid= --ppid "$p" 2>/dev/null); do next+=("$c"); done
		done
		all+=("${next[@]}")
		frontier=("${next[@]}")
	done
	[ ${#all[@]} -eq 0 ] || printf '%s\n' "${all[@]}"
}

cmd_kill() { # RUN hN — the host dies: SIGKILL all its processes at once (stopped first so
	# nothing reacts to the others' death); its namespace and kernel state stay, as
	# on a machine that lost power they would be gone, but nobody answers any more.
	local run=$1 h=$2 pids d
	d="$(rundir "$run")/$h"
	mapfile -t pids < <(host_pids "$run" "$h")
	[ ${#pids[@]} -gt 0 ] || die "no process of $h is running"
	kill -STOP "${pids[@]}" 2>/dev/null || true
	kill -KILL "${pids[@]}" 2>/dev/null || true
	local deadline=$((SECONDS + 10)) p alive
	while :; do
		alive=0
		for p in "${pids[@]}"; do pid_alive "$p" && alive=1; done
		[ $alive = 1 ] || break
		((SECONDS < deadline)) || die "processes of $h survive SIGKILL: ${pids[*]}"
		sleep 0.1
	done
	rm -f "$d/dockerd.pid"
	log "killed $h (${#pids[@]} processes)"
}

cmd_revive() { # RUN hN — start a killed (or stopped) host's containerd and dockerd again;
	# dockerd re-enables the plugin, which restores its state.
	local run=$1 h=$2 d pid
	d="$(rundir "$run")/$h"
	pid=$(cat "$d/containerd.pid" 2>/dev/null || true)
	if ! pid_alive "$pid"; then
		start_containerd "$run" "$h"
	fi
	dockerd_running "$run" "$h" || start_dockerd "$run" "$h"
}

cmd_link() { # RUN hN up|down — cut or restore hN's underlay link (a pulled cable)
	local run=$1 h=$2 state=$3
	[[ $state =~ ^(up|down)$ ]] || die "usage: link RUN hN up|down"
	in_ns "$run-ul" ip link set "$h" "$state"
}

cmd_plugin_set() { # RUN hN KEY=VALUE… — disable -f, set, enable
	local run=$1 h=$2
	shift 2
	hdocker "$run" "$h" plugin disable -f grapevine:latest >/dev/null
	hdocker "$run" "$h" plugin set grapevine:latest "$@"
	hdocker "$run" "$h" plugin enable --timeout 30 grapevine:latest >/dev/null
}

cmd_status() { # RUN hN [ARGS…] — `grapevine status` in hN's namespace against hN's plugin
	cmd_tool "$1" "$2" status "${@:3}"
}

cmd_doctor() { # RUN hN [ARGS…] — `grapevine doctor` in hN's namespace against hN's plugin
	cmd_tool "$1" "$2" doctor "${@:3}"
}

cmd_tool() { # RUN hN TOOL [ARGS…] — `grapevine TOOL` in hN's namespace against hN's plugin
	local run=$1 h=$2 tool=$3 id bin
	shift 3
	id=$(plugin_id "$run" "$h") || die "no grapevine plugin on $h"
	bin=${PLUGIN_DIR:-$REPO/build/plugin}/rootfs/grapevine
	nsenter --net="/run/netns/$(host_ns "$run" "$h")" --uts="$(rundir "$run")/$h/uts" -- \
		"$bin" "$tool" --socket "/run/docker/plugins/$id/grapevine.sock" "$@"
}

cmd_forget() { # RUN hN NODE… — `grapevine forget NODE…` in hN's namespace against hN's plugin
	cmd_tool "$1" "$2" forget "${@:3}"
}

# ---------------------------------------------------------------------------
# Swarm across the hosts: h1 manager, the others workers; Swarm's own gossip and
# control ports on the underlay (grapevine's gossip uses 7947, Swarm's 7946).

SWARM_POOL=${SWARM_POOL:-100.127.0.0/16}

cmd_swarm() { # RUN [hN…] — init on h1, join the other listed hosts (default: all)
	local run=$1 h token members
	shift
	if [ $# -gt 0 ]; then members=("$@"); else mapfile -t members < <(hosts_of "$run"); fi
	hdocker "$run" h1 swarm init --advertise-addr "$(host_addr h1)" --listen-addr "$(host_addr h1):2377" \
		--default-addr-pool "$SWARM_POOL" --default-addr-pool-mask-length 24 >/dev/null
	token=$(hdocker "$run" h1 swarm join-token -q worker)
	for h in "${members[@]}"; do
		[ "$h" != h1 ] || continue
		hdocker "$run" "$h" swarm join --advertise-addr "$(host_addr "$h")" --listen-addr "$(host_addr "$h"):2377" \
			--token "$token" "$(host_addr h1):2377" >/dev/null
	done
	local want=${#members[@]}
	[[ " ${members[*]} " == *" h1 "* ]] || want=$((want + 1))
	wait_for "$want nodes ready in the swarm" 60 sh -c \
		"[ \$($DOCKER -H unix://$(host_sock "$run" h1) node ls --format '{{.Status}}' | grep -c Ready) = $want ]"
}

main() {
	local cmd=${1:-} run=${2:-}
	[ -n "$cmd" ] || die "usage: $0 up|down|env|docker|exec|status|plugin-id|plugin-sock|plugin-pid|plugin-install|plugin-set|dockerd-stop|dockerd-start|dockerd-restart|partition|heal|partition-counters|kill|revive|link|swarm RUN …"
	[ "$(id -u)" = 0 ] || die "must run as root"
	check_run "$run"
	shift 2
	case $cmd in
	up) cmd_up "$run" "${1:-1}" ;;
	down) cmd_down "$run" ;;
	env) cmd_env "$run" ;;
	docker)
		local h=${1:?host}
		shift
		host_index "$h" >/dev/null
		exec "$DOCKER" -H "unix://$(host_sock "$run" "$h")" "$@"
		;;
	exec)
		local h=${1:?host}
		shift
		case $h in
		lan | ul) exec nsenter --net="/run/netns/$run-$h" -- "$@" ;;
		*)
			host_index "$h" >/dev/null
			exec nsenter --net="/run/netns/$(host_ns "$run" "$h")" -- "$@"
			;;
		esac
		;;
	plugin-id) plugin_id "$run" "${1:?host}" ;;
	plugin-sock) echo "/run/docker/plugins/$(plugin_id "$run" "${1:?host}")/grapevine.sock" ;;
	plugin-pid) cmd_plugin_pid "$run" "${1:?host}" ;;
	plugin-install) install_plugin "$run" "${1:?host}" ;;
	dockerd-stop) stop_dockerd "$run" "${1:?host}" ;;
	dockerd-start) start_dockerd "$run" "${1:?host}" ;;
	dockerd-restart)
		stop_dockerd "$run" "${1:?host}"
		start_dockerd "$run" "${1:?host}"
		;;
	partition) cmd_partition "$run" "$@" ;;
	heal) cmd_heal "$run" ;;
	partition-counters) cmd_partition_counters "$run" "${1:?host}" ;;
	kill) cmd_kill "$run" "${1:?host}" ;;
	revive) cmd_revive "$run" "${1:?host}" ;;
	link) cmd_link "$run" "${1:?host}" "${2:?up or down}" ;;
	plugin-set) cmd_plugin_set "$run" "${1:?host}" "${@:2}" ;;
	status) cmd_status "$run" "${1:?host}" "${@:2}" ;;
	forget) cmd_forget "$run" "${1:?host}" "${@:2}" ;;
	doctor) cmd_doctor "$run" "${1:?host}" "${@:2}" ;;
	swarm) cmd_swarm "$run" "$@" ;;
	leftovers) cmd_leftovers "$run" "$@" ;;
	*) die "unknown command '$cmd'" ;;
	esac
}

main "$@"
