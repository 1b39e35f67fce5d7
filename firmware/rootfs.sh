#!/usr/bin/env bash
# rootfs.sh ARCH — print the path of a pristine Debian 12 (bookworm) minbase
# root filesystem for ARCH (amd64 | arm64 | armhf), building and caching it
# on first use. The cache is never modified after it is built: callers copy it
# (cp -a) before installing anything.
#
# Cache: $OUTPOST_FW_CACHE, default /var/cache/outpost-firmware when writable,
# else firmware/cache/ (git-ignored). Foreign arches need qemu-user-static and
# binfmt_misc; binfmt.sh mounts and registers it.
# Needs root (debootstrap, chroot).
set -euo pipefail

arch=${1:?usage: rootfs.sh ARCH}
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"

cache=$(fw_cache)
suite=bookworm
base="$cache/rootfs-$suite-$arch"
# systemd as PID 1, udev for devices, iproute2 + networkd for the qemu NIC,
# dbus so systemctl/timedatectl behave as on a real image; procps for
# /bin/kill (ExecReload) and ps.
include=systemd,systemd-sysv,udev,kmod,iproute2,dbus,procps,ca-certificates
stamp="$base/.outpost-rootfs-ok"

if [[ -f $stamp && $(cat "$stamp") == "$include" ]]; then
	echo "$base"
	exit 0
fi

need debootstrap
[[ $(id -u) == 0 ]] || die "rootfs.sh must run as root (debootstrap)"
mirror=$(fw_mirror)
tmp="$base.tmp.$$"
rm -rf "$tmp"
trap 'rm -rf "$tmp"' EXIT
start=$(date +%s)
if [[ $arch == "$(dpkg --print-architecture)" ]]; then
	log "debootstrap $suite $arch (about 70 s) -> $base"
	debootstrap --variant=minbase --include="$include" "$suite" "$tmp" "$mirror" >"$tmp.log" 2>&1 ||
		{ tail -30 "$tmp.log" >&2; die "debootstrap failed (log: $tmp.log)"; }
else
	"$here/binfmt.sh" "$arch"
	log "debootstrap --foreign $suite $arch, second stage under qemu-user (about 6 min) -> $base"
	debootstrap --arch="$arch" --foreign --variant=minbase --include="$include" "$suite" "$tmp" "$mirror" >"$tmp.log" 2>&1 ||
		{ tail -30 "$tmp.log" >&2; die "debootstrap (first stage) failed (log: $tmp.log)"; }
	# No fsync per unpacked file: the tree is a cache, moved into place only
	# once complete, and emulated dpkg pays for every sync it waits on.
	mkdir -p "$tmp/etc/dpkg/dpkg.cfg.d"
	echo force-unsafe-io >"$tmp/etc/dpkg/dpkg.cfg.d/outpost-rootfs-build"
	chroot "$tmp" /debootstrap/debootstrap --second-stage >>"$tmp.log" 2>&1 ||
		{ tail -30 "$tmp.log" >&2; die "debootstrap second stage failed (log: $tmp.log)"; }
	rm -f "$tmp/etc/dpkg/dpkg.cfg.d/outpost-rootfs-build"
fi
# Slim the cache: downloaded archives and package lists are not needed to
# install a local .deb whose dependencies (adduser, systemd) are present.
chroot "$tmp" apt-get clean
rm -rf "$tmp"/var/lib/apt/lists/*
echo "$include" >"$tmp/.outpost-rootfs-ok"
mv "$tmp.log" "$cache/rootfs-$suite-$arch.log"
rm -rf "$base"
mv "$tmp" "$base"
trap - EXIT
log "rootfs $arch ready in $(($(date +%s) - start)) s ($(du -sh "$base" | cut -f1))"
echo "$base"
