#!/usr/bin/env bash
# image.sh DEB [OUTDIR] — the arm64 image recipe: Debian 12 arm64 (debootstrap
# --foreign + qemu-user-static second stage, cached by rootfs.sh), the outpost
# .deb installed, network (networkd + resolved + timesyncd, since a Pi has no
# clock), no login console on the UART so serial sensors own it, and the
# boot-partition config step (image/outpost-boot-config.service). Outputs in
# OUTDIR (default firmware/build/image-arm64):
#
#   rootfs/           the root filesystem tree
#   vmlinuz, initrd.img  Debian's arm64 kernel and a tiny initrd (mkinitrd.sh)
#   outpost-arm64.img  SD-card image: p1 FAT "RASPIFIRM" (Pi firmware,
#                      config.txt, cmdline.txt, kernel, DTBs), p2 ext4 "RASPIROOT"
#
# Needs root, qemu-user-static, binfmt-support, debootstrap, dosfstools,
# mtools, fdisk, cpio, kmod. About 8 min cold (mostly the second stage),
# under a minute when the rootfs and packages are cached.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/.." && pwd)
. "$here/lib.sh"
deb=${1:?usage: image.sh DEB [OUTDIR]}
out=${2:-$here/build/image-arm64}
[[ -f $deb ]] || die "$deb not found"
[[ $(dpkg-deb -f "$deb" Architecture) == arm64 ]] || die "$deb is not an arm64 package"
[[ $(id -u) == 0 ]] || die "image.sh must run as root"
need mkfs.ext4 mkfs.vfat mcopy sfdisk dpkg-deb unshare
start=$(date +%s)
cache=$(fw_cache)

base=$("$here/rootfs.sh" arm64)
"$here/binfmt.sh" arm64
mapfile -t debs < <("$here/apt-download.sh" arm64 "$cache/debs-arm64" \
	linux-image-arm64 busybox-static raspi-firmware systemd-timesyncd systemd-resolved)
kdeb=${debs[0]} bbdeb=${debs[1]} fwdeb=${debs[2]}
kver=$(dpkg-deb -f "$kdeb" Package)
kver=${kver#linux-image-}

mkdir -p "$out"
R="$out/rootfs"
rm -rf "$R"
cp -a "$base" "$R"
rm -f "$R/.outpost-rootfs-ok"
inroot() { unshare --mount --pid --fork --mount-proc="$R/proc" chroot "$R" "$@"; }

log "installing ${debs[3]##*/} ${debs[4]##*/} $(basename "$deb") (qemu-user)"
cp "${debs[3]}" "${debs[4]}" "$R/tmp/"
cp "$deb" "$R/tmp/outpost.deb"
inroot sh -c 'dpkg -i /tmp/*.deb' >"$out/dpkg.log" 2>&1 || { tail -30 "$out/dpkg.log" >&2; die "dpkg -i failed"; }
rm -f "$R"/tmp/*.deb

# Kernel modules in the image (udev loads drivers at boot); the kernel and
# initrd stay outside, on the boot partition.
ktree="$cache/kernel-arm64-$kver"
if [[ ! -d $ktree/lib/modules/$kver ]]; then
	rm -rf "$ktree.tmp"
	dpkg-deb -x "$kdeb" "$ktree.tmp"
	depmod -b "$ktree.tmp" "$kver"
	mv "$ktree.tmp" "$ktree"
fi
mkdir -p "$R/usr/lib/modules" # merged /usr: /lib -> usr/lib; create it first
cp -a "$ktree/lib/modules/$kver" "$R/usr/lib/modules/"
depmod -b "$R" "$kver"
cp "$ktree/boot/vmlinuz-$kver" "$out/vmlinuz"
"$here/mkinitrd.sh" "$bbdeb" "$ktree" "$kver" "$out/initrd.img" \
	virtio_pci virtio_blk ext4 crc32c_generic sdhci-iproc bcm2835

# System configuration.
echo outpost >"$R/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\toutpost\n::1\tlocalhost ip6-localhost ip6-loopback\n' >"$R/etc/hosts"
cat >"$R/etc/fstab" <<FSTAB
LABEL=RASPIROOT  /              ext4  rw,noatime,commit=30  0 1
LABEL=RASPIFIRM  /boot/firmware vfat  rw,nofail,x-systemd.device-timeout=60s,umask=0022  0 2
FSTAB
mkdir -p "$R/boot/firmware"
install -D -m 0644 "$here/image/50-wired.network" "$R/etc/systemd/network/50-wired.network"
ln -sf /lib/systemd/system/systemd-networkd.service "$R/etc/systemd/system/multi-user.target.wants/systemd-networkd.service"
install -D -m 0755 "$here/image/apply-boot-config" "$R/usr/lib/outpost-image/apply-boot-config"
install -D -m 0644 "$here/image/outpost-boot-config.service" "$R/etc/systemd/system/outpost-boot-config.service"
ln -sf /etc/systemd/system/outpost-boot-config.service "$R/etc/systemd/system/multi-user.target.wants/outpost-boot-config.service"
# The UARTs belong to the sensors: no login prompt on them (a getty also
# hangs up the line). ttyAMA0 = PL011, ttyS1 = mini UART on Debian's kernel,
# ttyS0 = the first 8250 (a pci-serial under qemu).
for tty in ttyAMA0 ttyS0 ttyS1 serial0; do
	ln -sf /dev/null "$R/etc/systemd/system/serial-getty@$tty.service"
done
# Debian ships no gpio group rule; the .deb adds 60-outpost-gpio.rules.
rm -rf "$R"/var/lib/apt/lists/* "$R"/var/cache/apt/*.bin
: >"$R/etc/machine-id" # generated on first boot
# Extra files for tests (a probe unit): IMAGE_EXTRA=DIR is copied over the root.
if [[ -n ${IMAGE_EXTRA:-} ]]; then
	cp -a "$IMAGE_EXTRA"/. "$R"/
fi

# Boot partition contents.
B="$out/bootfs"
rm -rf "$B"
mkdir -p "$B"
fw=$(mktemp -d)
trap 'rm -rf "$fw"' EXIT
dpkg-deb -x "$fwdeb" "$fw"
cp "$fw"/usr/lib/raspi-firmware/* "$B/"
cp "$ktree/usr/lib/linux-image-$kver"/broadcom/*.dtb "$B/"
cp "$out/vmlinuz" "$out/initrd.img" "$B/"
cp "$here/image/config.txt" "$here/image/cmdline.txt" "$B/"
cp "$here/deb/outpost.yaml" "$B/outpost.yaml.example"

# SD image: 4 MiB gap, 256 MiB FAT, ext4 root.
log "assembling the SD image"
rootmb=1536
rm -f "$out/rootfs.ext4" "$out/bootfs.vfat"
mkfs.ext4 -q -F -L RASPIROOT -E root_owner=0:0 -d "$R" "$out/rootfs.ext4" "${rootmb}M"
mkfs.vfat -C -F 32 -n RASPIFIRM "$out/bootfs.vfat" $((256 * 1024)) >/dev/null
mcopy -s -i "$out/bootfs.vfat" "$B"/* ::
img="$out/outpost-arm64.img"
rm -f "$img"
truncate -s $((4 + 256 + rootmb))M "$img"
sfdisk -q "$img" <<PARTS
label: dos
start=4MiB, size=256MiB, type=c, bootable
start=260MiB, type=83
PARTS
dd if="$out/bootfs.vfat" of="$img" bs=1M seek=4 conv=notrunc,sparse status=none
dd if="$out/rootfs.ext4" of="$img" bs=1M seek=260 conv=notrunc,sparse status=none
rm -f "$out/bootfs.vfat" "$out/rootfs.ext4"
log "image ready in $(($(date +%s) - start)) s: $img ($(du -h --apparent-size "$img" | cut -f1), $(du -h "$img" | cut -f1) used)"
echo "$img"
