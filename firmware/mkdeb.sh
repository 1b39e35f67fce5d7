#!/usr/bin/env bash
# mkdeb.sh DEBARCH BINARY [OUTDIR] — pack one outpost binary into
# OUTDIR/outpost_VERSION_DEBARCH.deb (default OUTDIR dist/) with dpkg-deb.
#
# DEBARCH is amd64, arm64, armhf or armel. The package holds:
#   /usr/bin/outpost                          the binary
#   /lib/systemd/system/outpost.service       the unit (systemd/)
#   /usr/lib/sysusers.d/outpost.conf          user outpost, group gpio
#   /usr/lib/tmpfiles.d/outpost.conf          /var/lib/outpost
#   /lib/udev/rules.d/60-outpost-gpio.rules   gpiochip -> group gpio
#   /etc/outpost/outpost.yaml                 default config (conffile)
# and the maintainer scripts in firmware/deb/. The build is reproducible:
# SOURCE_DATE_EPOCH (default: the commit time) fixes every timestamp.
# Prints the path of the .deb.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/.." && pwd)
. "$here/lib.sh"

arch=${1:?usage: mkdeb.sh DEBARCH BINARY [OUTDIR]}
bin=${2:?usage: mkdeb.sh DEBARCH BINARY [OUTDIR]}
out=${3:-${DIST:-$top/dist}}
need dpkg-deb
[[ -x $bin ]] || die "$bin is not an executable"
case $arch in amd64 | arm64 | armhf | armel) ;; *) die "unknown Debian architecture $arch" ;; esac

VERSION=${VERSION:-$(git -C "$top" describe --tags --always --dirty 2>/dev/null || echo dev)}
debver=$("$here/debversion.sh" "$VERSION")
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git -C "$top" log -1 --format=%ct 2>/dev/null || echo 1700000000)}

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
chmod 0755 "$root" # mktemp makes it 0700, which would ship as ./ drwx------
install -D -m 0755 "$bin" "$root/usr/bin/outpost"
install -D -m 0644 "$top/systemd/outpost.service" "$root/lib/systemd/system/outpost.service"
install -D -m 0644 "$top/systemd/outpost.sysusers" "$root/usr/lib/sysusers.d/outpost.conf"
install -D -m 0644 "$top/systemd/outpost.tmpfiles" "$root/usr/lib/tmpfiles.d/outpost.conf"
install -D -m 0644 "$here/deb/60-outpost-gpio.rules" "$root/lib/udev/rules.d/60-outpost-gpio.rules"
install -D -m 0644 "$here/deb/outpost.yaml" "$root/etc/outpost/outpost.yaml"
install -d -m 0755 "$root/DEBIAN"
for s in postinst prerm postrm; do
	install -m 0755 "$here/deb/$s" "$root/DEBIAN/$s"
done
echo /etc/outpost/outpost.yaml >"$root/DEBIAN/conffiles"
size_kib=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
cat >"$root/DEBIAN/control" <<CONTROL
Package: outpost
Version: $debver
Architecture: $arch
Maintainer: Outpost developers <outpost@localhost>
Installed-Size: $size_kib
Depends: systemd (>= 247), init-system-helpers (>= 1.52), procps
Section: net
Priority: optional
Description: edge gateway: field devices to the cloud, no message lost
 Outpost bridges Modbus, serial and GPIO devices and MQTT leaf devices into
 a local MQTT hub, keeps every device-to-cloud message on disk until the
 cloud has acknowledged it, and carries cloud-to-device commands back down.
 It runs as the systemd service outpost.service under its own user.
CONTROL
(cd "$root" && find . -type f ! -path './DEBIAN/*' -printf '%P\0' | LC_ALL=C sort -z | xargs -0 md5sum) >"$root/DEBIAN/md5sums"
chmod 0644 "$root/DEBIAN/md5sums" "$root/DEBIAN/control" "$root/DEBIAN/conffiles"
find "$root" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +

mkdir -p "$out"
deb="$out/outpost_${debver}_$arch.deb"
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
log "$(basename "$deb"): $(stat -c %s "$deb") bytes"
echo "$deb"
