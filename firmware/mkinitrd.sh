#!/usr/bin/env bash
# mkinitrd.sh BUSYBOX_DEB KERNEL_TREE KVER OUT MODULE... — a tiny initrd
# (static busybox + MODULE and their dependencies + an /init that loads them,
# waits for root= and switch_roots to systemd). About 2 MB, built in a
# second on the host, instead of running initramfs-tools under qemu-user
# (15 min per run). KERNEL_TREE is a directory holding lib/modules/KVER (an
# unpacked linux-image .deb). Handles root=/dev/X and root=LABEL=X.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
[[ $# -ge 5 ]] || die "usage: mkinitrd.sh BUSYBOX_DEB KERNEL_TREE KVER OUT MODULE..."
bbdeb=$1 ktree=$2 kver=$3 out=$4
shift 4
need depmod modprobe cpio gzip dpkg-deb

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
dpkg-deb -x "$bbdeb" "$tmp/bb"
mkdir -p "$tmp/i/bin" "$tmp/i/lib/modules" "$tmp/i/proc" "$tmp/i/sys" "$tmp/i/dev" "$tmp/i/newroot"
cp "$tmp/bb/bin/busybox" "$tmp/i/bin/busybox"
for a in sh mount umount insmod sleep cat mkdir switch_root findfs echo; do ln -s busybox "$tmp/i/bin/$a"; done

[[ -f $ktree/lib/modules/$kver/modules.dep ]] || depmod -b "$ktree" "$kver"
: >"$tmp/i/modules"
declare -A seen=()
for m in "$@"; do
	while read -r verb path _; do
		[[ $verb == insmod && -z ${seen[$path]:-} ]] || continue
		seen[$path]=1
		name=$(basename "$path")
		case $name in
		*.ko.xz) xz -dc "$path" >"$tmp/i/lib/modules/${name%.xz}"; name=${name%.xz} ;;
		*.ko.zst) zstd -qdc "$path" >"$tmp/i/lib/modules/${name%.zst}"; name=${name%.zst} ;;
		*) cp "$path" "$tmp/i/lib/modules/$name" ;;
		esac
		echo "$name" >>"$tmp/i/modules"
	done < <(modprobe -d "$ktree" -S "$kver" --show-depends "$m" 2>/dev/null || die "module $m not in $ktree ($kver)")
done

cat >"$tmp/i/init" <<'INIT'
#!/bin/sh
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in $(cat /modules); do insmod /lib/modules/$m 2>/dev/null; done
root=
for arg in $(cat /proc/cmdline); do
	case $arg in root=*) root=${arg#root=} ;; esac
done
i=0
while [ $i -lt 300 ]; do
	case $root in
	LABEL=*) dev=$(findfs "$root" 2>/dev/null) ;;
	*) dev=$root ;;
	esac
	[ -n "$dev" ] && [ -b "$dev" ] && break
	sleep 0.1
	i=$((i + 1))
done
if ! mount -o rw "$dev" /newroot; then
	echo "initrd: cannot mount root=$root ($dev); modules: $(cat /modules)"
	sleep 10
	exit 1
fi
umount /proc /sys
mount --move /dev /newroot/dev 2>/dev/null || umount /dev
exec switch_root /newroot /sbin/init
INIT
chmod 0755 "$tmp/i/init"
(cd "$tmp/i" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc --quiet | gzip -9n) >"$out"
log "initrd $(basename "$out"): $(stat -c %s "$out") bytes, modules: $(tr '\n' ' ' <"$tmp/i/modules")"
