#!/usr/bin/env bash
# install.sh — install grapevine on this machine as the managed plugin grapevine:latest.
#
# Installs docker.io and iptables if missing (and busybox-static and file, for the image
# of make demo and make image), starts a local dockerd in the background
# if none answers on /var/run/docker.sock (log: /var/log/grapevine-dockerd.log),
# builds the plugin offline, (re)creates and enables it, and copies the binary to
# /usr/local/bin/grapevine (for `grapevine status`).
#
# Environment: DOCKER_SOCK (default /var/run/docker.sock; a dockerd is started only
# when it is the default), PLUGIN_NAME (default grapevine:latest), STATE_DIR (default
# /var/lib/grapevine), PLUGIN_SETTINGS (extra `docker plugin set` KEY=VALUE words,
# e.g. "PEERS=10.0.0.2,10.0.0.3 ADVERTISE=eth0").
set -euo pipefail

cd "$(dirname "$0")/.."
DOCKER=/usr/bin/docker # the Debian client; a newer one elsewhere in PATH may not match the daemon
SOCK=${DOCKER_SOCK:-/var/run/docker.sock}
NAME=${PLUGIN_NAME:-grapevine:latest}
STATE_DIR=${STATE_DIR:-/var/lib/grapevine}

[ "$(id -u)" = 0 ] || {
	echo "install: must run as root" >&2
	exit 1
}

missing=()
command -v dockerd >/dev/null && [ -x "$DOCKER" ] || missing+=(docker.io)
command -v iptables >/dev/null || missing+=(iptables)
# not for the plugin: `make demo` and `make image` make their image from the static
# busybox (checked with file), so that they work offline after make install
dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q 'install ok installed' || missing+=(busybox-static)
command -v file >/dev/null || missing+=(file)
if [ ${#missing[@]} -gt 0 ]; then
	echo "install: installing ${missing[*]} with apt-get: grapevine runs as a plugin of dockerd and programs iptables; make demo and make image build their image from busybox-static" >&2
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if ! "$DOCKER" -H "unix://$SOCK" version >/dev/null 2>&1; then
	if command -v systemctl >/dev/null && systemctl is-system-running >/dev/null 2>&1; then
		systemctl start docker || true
	fi
fi
if ! "$DOCKER" -H "unix://$SOCK" version >/dev/null 2>&1; then
	if [ "$SOCK" != /var/run/docker.sock ]; then
		echo "install: no dockerd answers on $SOCK" >&2
		exit 1
	fi
	echo "install: no dockerd answers on $SOCK; starting one (log /var/log/grapevine-dockerd.log)" >&2
	setsid dockerd </dev/null >>/var/log/grapevine-dockerd.log 2>&1 &
	deadline=$((SECONDS + 60))
	until "$DOCKER" -H "unix://$SOCK" version >/dev/null 2>&1; do
		if ((SECONDS >= deadline)); then
			echo "install: dockerd did not answer within 60s; last log lines:" >&2
			tail -n 20 /var/log/grapevine-dockerd.log >&2
			exit 1
		fi
		sleep 0.2
	done
fi
docker_() { "$DOCKER" -H "unix://$SOCK" "$@"; }

scripts/build-plugin.sh

if id=$(docker_ plugin inspect -f '{{.Id}}' "$NAME" 2>/dev/null); then
	echo "install: replacing the installed $NAME ($id)" >&2
	docker_ plugin disable -f "$NAME" >/dev/null 2>&1 || true
	docker_ plugin rm -f "$NAME" >/dev/null
fi
docker_ plugin create "$NAME" build/plugin >/dev/null
mkdir -p "$STATE_DIR"
# Pins of the networks' namespaces live in the state directory too; on a shared
# mount they reach the host and outlive `docker plugin disable`, so running
# containers keep their links. systemd hosts share / already; elsewhere make the
# directory a shared mount of its own (until reboot, when no container runs).
if ! findmnt -n -o PROPAGATION --target "$STATE_DIR" | grep -q shared; then
	mountpoint -q "$STATE_DIR" || mount --bind "$STATE_DIR" "$STATE_DIR"
	mount --make-shared "$STATE_DIR"
	echo "install: made $STATE_DIR a shared mount" >&2
fi
# Docker's exec root holds the containers' namespaces, in which grapevine answers
# cross-host names (docs/names.md); shared, so that new ones appear in the plugin.
EXEC_ROOT=${EXEC_ROOT:-/var/run/docker}
if ! findmnt -n -o PROPAGATION --target "$EXEC_ROOT" | grep -q shared; then
	mountpoint -q "$EXEC_ROOT" || mount --bind "$EXEC_ROOT" "$EXEC_ROOT"
	mount --make-shared "$EXEC_ROOT"
	echo "install: made $EXEC_ROOT a shared mount" >&2
fi
# shellcheck disable=SC2086 # PLUGIN_SETTINGS is a list of words on purpose
docker_ plugin set "$NAME" "state.source=$STATE_DIR" "docker-sock.source=$SOCK" "docker-exec-root.source=$EXEC_ROOT" ${PLUGIN_SETTINGS:-}
docker_ plugin enable --timeout 30 "$NAME" >/dev/null
install -m 0755 build/plugin/rootfs/grapevine /usr/local/bin/grapevine
echo "install: $NAME enabled; state in $STATE_DIR; binary at /usr/local/bin/grapevine" >&2
docker_ plugin ls
