#!/usr/bin/env bash
# demo.sh — grapevine on three simulated hosts, start to finish (`make demo`, as root).
#
# 1. brings up hosts h1, h2, h3 with scripts/harness.sh: each a network namespace
#    with its own containerd and dockerd, on one underlay (198.18.0.0/24); the
#    image gvtest/busybox:latest is made locally from busybox-static
#    (scripts/image.sh), nothing is pulled; the plugin from build/plugin is
#    installed on each host with one fresh GOSSIP_KEY;
# 2. creates the grapevine network "demo" (198.19.77.0/24) on every host and
#    runs one web server container per host (box1 on h1, box2 on h2, box3 on h3);
# 3. has every container ping the others by address, and fetch the others' page
#    by name (names across hosts);
# 4. prints `grapevine status` of h1;
# 5. tears everything down, also when a step fails or on Ctrl-C, and checks that
#    nothing is left (scripts/harness.sh leftovers).
# Every docker command is printed as it would be typed on that host.
#
# Environment: PLUGIN_DIR (default build/plugin). GV_DEMO_RUN=RUN runs steps 2–4
# on the harness run RUN that is already up (hosts h1..h3 in one cluster, image
# imported) and then removes only what the demo made; the e2e suite uses it.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
HARNESS=$REPO/scripts/harness.sh
export PLUGIN_DIR=${PLUGIN_DIR:-$REPO/build/plugin}
RUN=${GV_DEMO_RUN:-demo}
OWN_RUN=1
[ -z "${GV_DEMO_RUN:-}" ] || OWN_RUN=0
HOSTS=(h1 h2 h3)
NET=demo
SUBNET=198.19.77.0/24
IMAGE=gvtest/busybox:latest
WAIT=60 # seconds for the cluster to form and for each reach to succeed

die() {
	echo "demo: $*" >&2
	exit 1
}
say() { printf '\n== %s\n' "$*"; }

# quoted ARG… — the words as a shell would need them typed
quoted() {
	local a out=()
	for a in "$@"; do
		if [[ $a =~ ^[A-Za-z0-9_./:=,+@%-]+$ ]]; then out+=("$a"); else out+=("'${a//\'/\'\\\'\'}'"); fi
	done
	echo "${out[*]}"
}

# on hN ARG… — print `docker ARG…` as typed on hN, then run it there
on() {
	local h=$1
	shift
	echo "$h\$ docker $(quoted "$@")"
	"$HARNESS" docker "$RUN" "$h" "$@"
}

# quiet hN ARG… — docker ARG… on hN, not printed
quiet() {
	local h=$1
	shift
	"$HARNESS" docker "$RUN" "$h" "$@"
}

# retry SECONDS CMD… — run CMD until it succeeds; its last output is printed
retry() {
	local secs=$1 deadline out rc
	shift
	deadline=$((SECONDS + secs))
	while true; do
		rc=0
		out=$("$@" 2>&1) || rc=$?
		if [ $rc -eq 0 ] || ((SECONDS >= deadline)); then
			printf '%s\n' "$out"
			return $rc
		fi
		sleep 1
	done
}

preflight() {
	[ "$(id -u)" = 0 ] || die "must run as root (network namespaces and dockerd per simulated host)"
	[ -x "$PLUGIN_DIR/rootfs/grapevine" ] || die "no plugin in $PLUGIN_DIR (run make plugin, or make demo)"
	if [ "$OWN_RUN" = 1 ]; then
		if [ -e "/run/gvtest/$RUN" ] || ip netns list 2>/dev/null | grep -q "^$RUN-"; then
			die "a demo is up already (another make demo, or one that was killed): tear it down with scripts/harness.sh down $RUN"
		fi
	else
		[ -f "/run/gvtest/$RUN/hosts" ] && (($(cat "/run/gvtest/$RUN/hosts") >= 3)) ||
			die "GV_DEMO_RUN=$RUN: no harness run with at least 3 hosts is up"
	fi
}

# teardown — the EXIT trap: everything the demo made goes, whatever the exit status
teardown() {
	local rc=$? h ids=()
	trap '' INT TERM # a second Ctrl-C must not leave half a teardown
	if [ "$OWN_RUN" = 0 ]; then
		say "removing the demo's containers and network"
		for h in "${HOSTS[@]}"; do
			quiet "$h" rm -f "box${h#h}" >/dev/null 2>&1 || true
			quiet "$h" network rm "$NET" >/dev/null 2>&1 || true
		done
		echo "demo: exit status $rc"
		exit $rc
	fi
	say "tearing down the simulated hosts"
	for h in "${HOSTS[@]}"; do
		ids+=($("$HARNESS" plugin-id "$RUN" "$h" 2>/dev/null)) || true
	done
	"$HARNESS" down "$RUN" || rc=1
	if ! "$HARNESS" leftovers "$RUN" "${ids[@]}"; then
		echo "demo: the teardown left the above behind" >&2
		rc=1
	else
		echo "demo: torn down, nothing left"
	fi
	echo "demo: exit status $rc"
	exit $rc
}

bring_up() {
	local key
	key=$(head -c 32 /dev/urandom | base64)
	say "1. three simulated hosts h1 h2 h3 (own dockerd each), the image made offline, grapevine installed with one gossip key"
	PLUGIN_SETTINGS="GOSSIP_KEY=$key" "$HARNESS" up "$RUN" ${#HOSTS[@]}
	on h1 plugin ls
	on h1 image ls "$IMAGE"
}

# alive_members hN — how many members hN's plugin sees alive; fails unless all hosts
alive_members() {
	local n
	n=$("$HARNESS" status "$RUN" "$1" --json | grep -oE '"state": ?"alive"' | wc -l)
	echo "$n"
	[ "$n" = ${#HOSTS[@]} ]
}

# wait_cluster — every host sees all three members alive
wait_cluster() {
	local h n
	for h in "${HOSTS[@]}"; do
		n=$(retry "$WAIT" alive_members "$h") || die "$h sees ${n:-no} members alive after ${WAIT}s, not ${#HOSTS[@]}"
		echo "$h: $n members alive"
	done
}

start_boxes() {
	local h i
	say "2. one network on every host (the same command: the subnet is the network's identity), one container per host"
	for h in "${HOSTS[@]}"; do
		on "$h" network create -d grapevine:latest --ipam-driver grapevine:latest --subnet "$SUBNET" "$NET" >/dev/null
	done
	for h in "${HOSTS[@]}"; do
		i=${h#h}
		on "$h" run -d --name "box$i" --network "$NET" "$IMAGE" \
			sh -c "echo hello from box$i on $h >/www/index.html && exec httpd -f -p 80 -h /www" >/dev/null
	done
}

addr_of() { # hN — the address of hN's box on the demo network
	quiet "$1" inspect -f "{{(index .NetworkSettings.Networks \"$NET\").IPAddress}}" "box${1#h}"
}

# reach_all — every box pings every other box's address, then fetches its page by name
reach_all() {
	local h o ip out
	declare -A addr
	for h in "${HOSTS[@]}"; do
		addr[$h]=$(addr_of "$h")
		[ -n "${addr[$h]}" ] || die "box${h#h} on $h has no address on $NET"
		echo "box${h#h} on $h: ${addr[$h]}"
	done
	say "3a. every container pings the others by address, across hosts"
	for h in "${HOSTS[@]}"; do
		for o in "${HOSTS[@]}"; do
			[ "$h" != "$o" ] || continue
			ip=${addr[$o]}
			echo "$h\$ docker $(quoted exec "box${h#h}" ping -c1 -W1 "$ip")"
			out=$(retry "$WAIT" quiet "$h" exec "box${h#h}" ping -c1 -W1 "$ip") || die "box${h#h} on $h cannot reach $ip (box${o#h} on $o):"$'\n'"$out"
			grep -m1 'bytes from' <<<"$out" | sed 's/^/    /'
		done
	done
	say "3b. every container fetches the others' page by name (names across hosts)"
	for h in "${HOSTS[@]}"; do
		for o in "${HOSTS[@]}"; do
			[ "$h" != "$o" ] || continue
			echo "$h\$ docker $(quoted exec "box${h#h}" wget -qO- "http://box${o#h}/")"
			out=$(retry "$WAIT" quiet "$h" exec "box${h#h}" timeout 5 wget -qO- "http://box${o#h}/") ||
				die "box${h#h} on $h cannot fetch http://box${o#h}/:"$'\n'"$out"
			[ "$out" = "hello from box${o#h} on $o" ] || die "box${h#h} on $h got $(quoted "$out") from http://box${o#h}/, not box${o#h}'s page"
			echo "    $out"
		done
	done
}

show_status() {
	say "4. grapevine status on h1 (peers, networks, remote endpoints, names, address blocks)"
	echo "h1\$ grapevine status"
	"$HARNESS" status "$RUN" h1
}

main() {
	preflight
	trap teardown EXIT
	trap 'exit 130' INT
	trap 'exit 143' TERM
	if [ "$OWN_RUN" = 1 ]; then bring_up; fi
	wait_cluster
	start_boxes
	reach_all
	show_status
	say "done: three hosts, one network, containers reaching each other by address and by name"
}

main "$@"
