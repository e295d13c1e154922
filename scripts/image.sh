#!/usr/bin/env bash
# image.sh — the container image of the tests, the demo and the README, made offline.
#
#   image.sh dir DIR      write the image's root filesystem into DIR (replaced)
#   image.sh import       build it and `docker import` it as gvtest/busybox:latest into
#                         the dockerd that `docker` talks to (DOCKER_HOST, or the local one)
#
# The image is this machine's static busybox (every applet linked in /bin, an
# empty /www for httpd) plus iperf3 and its libraries when iperf3 is installed
# (the throughput probe of make bench; GV_IMAGE_IPERF3=0 leaves it out). Nothing
# is pulled from a registry. busybox-static (and file, to check it) are installed
# with apt-get when missing.
set -euo pipefail

IMAGE=gvtest/busybox:latest
DOCKER=/usr/bin/docker # the Debian client; a newer one elsewhere in PATH may not match the daemon

die() {
	echo "image: $*" >&2
	exit 1
}

ensure_busybox() {
	local missing=()
	command -v file >/dev/null || missing+=(file)
	# busybox must be the static build: it is copied into the image as it is.
	if ! { [ -x /bin/busybox ] && file -L /bin/busybox 2>/dev/null | grep -q 'statically linked'; }; then
		missing+=(busybox-static)
	fi
	if [ ${#missing[@]} -gt 0 ]; then
		[ "$(id -u)" = 0 ] || die "${missing[*]} missing; install as root: apt-get install ${missing[*]}"
		echo "image: installing ${missing[*]} with apt-get: the image is made of a static busybox (checked with file)" >&2
		apt-get update -qq
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
	fi
	file -L /bin/busybox | grep -q 'statically linked' || die "/bin/busybox is not statically linked (apt-get install busybox-static)"
}

build_dir() { # DIR
	local dir=$1 a
	ensure_busybox
	rm -rf "$dir"
	mkdir -p "$dir/bin" "$dir/etc" "$dir/tmp" "$dir/root" "$dir/www"
	cp /bin/busybox "$dir/bin/busybox"
	for a in $(/bin/busybox --list); do
		[ "$a" = busybox ] || ln -s busybox "$dir/bin/$a"
	done
	mkdir -p "$dir/usr/bin" "$dir/sbin" "$dir/usr/sbin"
	if command -v iperf3 >/dev/null && [ "${GV_IMAGE_IPERF3:-1}" = 1 ]; then
		copy_with_libs "$(command -v iperf3)" "$dir"
	fi
	printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$dir/etc/passwd"
	printf 'root:x:0:\nnobody:x:65534:\n' >"$dir/etc/group"
	chmod 1777 "$dir/tmp"
}

copy_with_libs() { # BINARY DIR — copy a dynamic binary and the libraries ldd lists
	local bin=$1 dir=$2 lib
	mkdir -p "$dir$(dirname "$bin")"
	cp -L "$bin" "$dir$bin"
	ldd "$bin" | awk '/=>/ { if ($3 ~ /^\//) print $3; next } $1 ~ /^\// { print $1 }' |
		while read -r lib; do
			mkdir -p "$dir$(dirname "$lib")"
			cp -L "$lib" "$dir$lib"
		done
}

import_local() {
	TMP=$(mktemp -d)
	trap 'rm -rf "$TMP"' EXIT
	build_dir "$TMP/rootfs"
	tar -C "$TMP/rootfs" -c . | "$DOCKER" import --change 'CMD ["sh"]' - "$IMAGE" >/dev/null
	echo "image: imported $IMAGE (busybox $(/bin/busybox | head -n1 | awk '{ print $2 }'))" >&2
}

case ${1:-} in
dir) build_dir "${2:?usage: image.sh dir DIR}" ;;
import) import_local ;;
*) die "usage: $0 dir DIR | import" ;;
esac
