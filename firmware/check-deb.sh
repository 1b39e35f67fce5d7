#!/usr/bin/env bash
# check-deb.sh DEB... — cheap checks of built packages (no root, no chroot):
# the file list and modes, the conffile, control fields, the maintainer
# scripts' syntax, that the unit and config are the ones in the tree, and
# that the binary is a static ELF for the package's architecture.
# Exits 1 on the first package with a problem, listing every problem in it.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/.." && pwd)
. "$here/lib.sh"
need dpkg-deb
[[ $# -gt 0 ]] || die "usage: check-deb.sh DEB..."

want=(
	"-rw-r--r-- root/root ./etc/outpost/outpost.yaml"
	"-rw-r--r-- root/root ./lib/systemd/system/outpost.service"
	"-rw-r--r-- root/root ./lib/udev/rules.d/60-outpost-gpio.rules"
	"-rwxr-xr-x root/root ./usr/bin/outpost"
	"-rw-r--r-- root/root ./usr/lib/sysusers.d/outpost.conf"
	"-rw-r--r-- root/root ./usr/lib/tmpfiles.d/outpost.conf"
)

fails=0
for deb in "$@"; do
	problems=()
	p() { problems+=("$*"); }
	tmp=$(mktemp -d)
	arch=$(dpkg-deb -f "$deb" Architecture)
	[[ $(dpkg-deb -f "$deb" Package) == outpost ]] || p "Package is not outpost"
	dpkg-deb -f "$deb" Depends | grep -q 'systemd' || p "Depends lacks systemd"
	dpkg-deb -f "$deb" Depends | grep -q 'procps' || p "Depends lacks procps (ExecReload=/bin/kill)"
	# The list: files only, "mode owner path".
	got=$(dpkg-deb -c "$deb" | awk '$1 !~ /^d/ {print $1, $2, $6}' | sort)
	exp=$(printf '%s\n' "${want[@]}" | sort)
	[[ $got == "$exp" ]] || p "file list differs:"$'\n'"$(diff <(echo "$exp") <(echo "$got") || true)"
	dpkg-deb -c "$deb" | awk '$6 == "./" && $1 != "drwxr-xr-x" {bad=1} END {exit bad}' || p "package root is not drwxr-xr-x"
	dpkg-deb -e "$deb" "$tmp/DEBIAN"
	dpkg-deb -x "$deb" "$tmp/root"
	[[ $(cat "$tmp/DEBIAN/conffiles") == /etc/outpost/outpost.yaml ]] || p "conffiles is not exactly /etc/outpost/outpost.yaml"
	for s in postinst prerm postrm; do
		[[ -x $tmp/DEBIAN/$s ]] || { p "$s missing or not executable"; continue; }
		sh -n "$tmp/DEBIAN/$s" || p "$s: syntax error"
	done
	grep -q 'systemd-sysusers' "$tmp/DEBIAN/postinst" || p "postinst does not create the user"
	grep -q 'deb-systemd-helper enable outpost.service' "$tmp/DEBIAN/postinst" || p "postinst does not enable the unit"
	cmp -s "$tmp/root/lib/systemd/system/outpost.service" "$top/systemd/outpost.service" || p "unit differs from systemd/outpost.service"
	cmp -s "$tmp/root/etc/outpost/outpost.yaml" "$here/deb/outpost.yaml" || p "config differs from firmware/deb/outpost.yaml"
	(cd "$tmp/root" && md5sum --quiet -c "$tmp/DEBIAN/md5sums") >/dev/null || p "md5sums do not match"
	# ELF: class (byte 5), machine (bytes 19-20), no PT_INTERP (static).
	bin="$tmp/root/usr/bin/outpost"
	class=$(od -An -tu1 -j4 -N1 "$bin" | tr -d ' ')
	machine=$(od -An -tu2 -j18 -N2 "$bin" | tr -d ' ')
	case $arch in
	amd64) wc=2 wm=62 ;; arm64) wc=2 wm=183 ;; armhf | armel) wc=1 wm=40 ;; *) wc=0 wm=0 ;;
	esac
	[[ $class == "$wc" && $machine == "$wm" ]] || p "binary is ELF class $class machine $machine, want $wc/$wm for $arch"
	! grep -qa '/lib/ld-linux\|/lib64/ld-linux' "$bin" || p "binary looks dynamically linked"
	rm -rf "$tmp"
	if [[ ${#problems[@]} -gt 0 ]]; then
		printf 'check-deb: %s:\n' "$deb" >&2
		printf '  %s\n' "${problems[@]}" >&2
		fails=1
	else
		printf 'check-deb: %s: ok (%s, %d bytes)\n' "$(basename "$deb")" "$arch" "$(stat -c %s "$deb")" >&2
	fi
done
exit $fails
