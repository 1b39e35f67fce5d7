#!/usr/bin/env bash
# tools.sh — install the host tools the boot tests and the image recipe call,
# as root, with apt-get --no-install-recommends and an explicit list: nothing
# is left to Recommends (qemu-system-arm only Recommends ipxe-qemu, whose
# efi-virtio.rom the virtio NIC needs). Without root it lists what is missing
# and fails. Called by `make firmware-test*`, `make image` and .ci/run; set
# OUTPOST_APT_UPDATED=1 when `apt-get update` already ran.
#
# package            what calls it
# debootstrap        rootfs.sh (its Depends bring wget)
# debian-archive-keyring, gpgv   debootstrap's Release signature check
# systemd-container  systemd-nspawn (TestBootNspawn)
# util-linux         unshare, nsenter, mountpoint
# qemu-system-arm    qemu-system-aarch64 (TestBootQemuArm64)
# ipxe-qemu          efi-virtio.rom for -nic ...,model=virtio-net-pci
# qemu-user-static   qemu-aarch64-static, qemu-arm-static: foreign second
#                    stages, dpkg -i and `outpost run` in arm chroots
# binfmt-support     update-binfmts (binfmt.sh)
# kmod               depmod, modprobe --show-depends (image.sh, mkinitrd.sh)
# cpio gzip xz-utils zstd   mkinitrd.sh
# e2fsprogs          mkfs.ext4 -d (image.sh)
# dosfstools         mkfs.vfat; mtools: mcopy, mdir; fdisk: sfdisk
# socat              port forwards into the container and the guest
# mosquitto, mosquitto-clients   the upstream broker and the test leaf
#
# Not needed: qemu-efi-aarch64 (the kernel is passed with -kernel, no UEFI),
# qemu-system-x86 (the amd64 boot test uses nspawn), a host busybox-static
# (mkinitrd.sh takes the arm64 one from apt-download.sh).
set -euo pipefail
pkgs=(debootstrap debian-archive-keyring gpgv systemd-container util-linux
	qemu-system-arm ipxe-qemu qemu-user-static binfmt-support
	kmod cpio gzip xz-utils zstd e2fsprogs dosfstools mtools fdisk
	socat mosquitto mosquitto-clients)
missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[[ ${#missing[@]} -eq 0 ]] && exit 0
if [[ $(id -u) -ne 0 ]]; then
	echo "firmware: missing ${missing[*]}; as root: apt-get install --no-install-recommends ${missing[*]}" >&2
	exit 1
fi
echo "firmware: installing ${missing[*]}" >&2
if [[ ${OUTPOST_APT_UPDATED:-} != 1 ]]; then apt-get update -q >&2; fi
DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
# The installed ones must also be usable: the file each test looks for.
for f in /usr/sbin/debootstrap /usr/bin/systemd-nspawn /usr/bin/qemu-system-aarch64 \
	/usr/lib/ipxe/qemu/efi-virtio.rom /usr/bin/qemu-aarch64-static /usr/bin/qemu-arm-static \
	/usr/sbin/update-binfmts /usr/bin/mcopy /sbin/mkfs.vfat /sbin/sfdisk /usr/bin/socat; do
	[[ -e $f ]] || { echo "firmware: $f missing after apt-get install" >&2; exit 1; }
done
