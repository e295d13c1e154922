#!/usr/bin/env bash
# build-plugin.sh — build the grapevine managed-plugin directory offline.
#
# Produces build/plugin/{config.json,rootfs/} ready for
#   docker plugin create grapevine:latest build/plugin
# The rootfs holds the static grapevine binary plus a working iptables
# (xtables-nft-multi and xtables-legacy-multi with their shared libraries and
# extension modules) copied from this machine. No network access is needed.
#
# Environment: OUT (default build/plugin), GO (default go).
set -euo pipefail

cd "$(dirname "$0")/.."
OUT=${OUT:-build/plugin}
GO=${GO:-go}
ROOTFS=$OUT/rootfs

need_iptables() {
	if [ ! -x /usr/sbin/xtables-nft-multi ] || [ ! -x /usr/sbin/xtables-legacy-multi ]; then
		echo "build-plugin: installing iptables with apt-get: the plugin rootfs carries this machine's iptables binaries and libraries" >&2
		apt-get update -qq
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iptables >/dev/null
	fi
}
need_iptables

rm -rf "$OUT"
mkdir -p "$ROOTFS"

# 1. the plugin binary, static.
CGO_ENABLED=0 "$GO" build -trimpath -o "$ROOTFS/grapevine" .

# 2. the manifest.
cp config.json "$OUT/config.json"

# 3. iptables and what it needs at run time.
# Debian is merged-/usr (/lib -> usr/lib, /lib64 -> usr/lib64): mirror that first so
# the loader and libraries resolve under either name.
for d in lib lib64 bin sbin; do
	if [ -L "/$d" ]; then
		mkdir -p "$ROOTFS/$(readlink "/$d")"
		ln -s "$(readlink "/$d")" "$ROOTFS/$d"
	fi
done
copy_file() { # copy a file to the same absolute path inside the rootfs, resolving symlinks
	local src=$1
	mkdir -p "$ROOTFS$(dirname "$src")"
	cp -L "$src" "$ROOTFS$src"
}
for bin in /usr/sbin/xtables-nft-multi /usr/sbin/xtables-legacy-multi; do
	copy_file "$bin"
	# ldd lines: "libx.so => /path (addr)" or "/lib64/ld-linux-x86-64.so.2 (addr)"
	ldd "$bin" | awk '/=>/ { if ($3 ~ /^\//) print $3; next } $1 ~ /^\// { print $1 }' |
		while read -r lib; do
			copy_file "$lib"
		done
done
XTLIB=/usr/lib/x86_64-linux-gnu/xtables
mkdir -p "$ROOTFS$XTLIB"
cp -a "$XTLIB/." "$ROOTFS$XTLIB/"
copy_file /etc/protocols
copy_file /etc/ethertypes

for name in iptables iptables-save iptables-restore ip6tables ip6tables-save ip6tables-restore \
	iptables-nft iptables-nft-save iptables-nft-restore ip6tables-nft ip6tables-nft-save ip6tables-nft-restore; do
	ln -sf xtables-nft-multi "$ROOTFS/usr/sbin/$name"
done
for name in iptables-legacy iptables-legacy-save iptables-legacy-restore ip6tables-legacy ip6tables-legacy-save ip6tables-legacy-restore; do
	ln -sf xtables-legacy-multi "$ROOTFS/usr/sbin/$name"
done
if [ ! -L "$ROOTFS/sbin" ]; then
	mkdir -p "$ROOTFS/sbin"
	for name in iptables iptables-save iptables-restore ip6tables ip6tables-save ip6tables-restore; do
		ln -sf "/usr/sbin/$name" "$ROOTFS/sbin/$name"
	done
fi

# 4. minimal filesystem skeleton.
mkdir -p "$ROOTFS/run/docker/plugins" "$ROOTFS/run/grapevine" "$ROOTFS/tmp" "$ROOTFS/var/lib/grapevine" \
	"$ROOTFS/var/run" "$ROOTFS/proc" "$ROOTFS/sys" "$ROOTFS/dev" "$ROOTFS/etc"
chmod 1777 "$ROOTFS/tmp"
printf 'root:x:0:0:root:/:/sbin/nologin\n' >"$ROOTFS/etc/passwd"
printf 'root:x:0:\n' >"$ROOTFS/etc/group"
: >"$ROOTFS/etc/hosts"
: >"$ROOTFS/etc/resolv.conf"

# 5. check that both iptables backends run from inside the rootfs: the plugin
# writes with whichever the host's Docker uses (docs/firewall.md).
for bin in iptables-nft iptables-nft-save iptables-nft-restore iptables-legacy iptables-legacy-save iptables-legacy-restore; do
	if ! chroot "$ROOTFS" "/usr/sbin/$bin" --version >/dev/null 2>&1 && ! chroot "$ROOTFS" "/usr/sbin/$bin" -V >/dev/null 2>&1; then
		echo "build-plugin: $bin does not run inside the rootfs" >&2
		exit 1
	fi
done
if ! out=$(chroot "$ROOTFS" /usr/sbin/iptables -V 2>&1); then
	echo "build-plugin: iptables does not run inside the rootfs: $out" >&2
	exit 1
fi
echo "build-plugin: $OUT ready ($(du -sh "$ROOTFS" | cut -f1), $out)"
