#!/usr/bin/env bash
# apt-download.sh ARCH DEST PKG... — download Debian 12 packages for ARCH
# into DEST without touching the host's dpkg architectures or apt state: a
# private apt state under the firmware cache, components main and
# non-free-firmware (for raspi-firmware). A PKG that is a metapackage with
# one dependency (linux-image-arm64) is resolved to that dependency.
# Prints the downloaded .deb paths.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
arch=${1:?usage: apt-download.sh ARCH DEST PKG...}
dest=${2:?usage: apt-download.sh ARCH DEST PKG...}
shift 2
need apt-get
A="$(fw_cache)/apt-$arch"
mkdir -p "$A/state/lists/partial" "$A/cache/archives/partial" "$dest"
touch "$A/status"
mirror=$(fw_mirror)
echo "deb [arch=$arch] $mirror bookworm main non-free-firmware" >"$A/sources.list"
apt_() { aptx apt-get "$@"; }
aptc() { aptx apt-cache "$@"; }
aptx() {
	local tool=$1
	shift
	"$tool" -q -o Dir::Etc::SourceList="$A/sources.list" -o Dir::Etc::SourceParts=/nonexistent \
		-o Dir::State="$A/state" -o Dir::State::status="$A/status" -o Dir::Cache="$A/cache" \
		-o APT::Architecture="$arch" -o APT::Architectures::="$arch" \
		-o Debug::NoLocking=1 -o APT::Sandbox::User=root "$@"
}
# Refresh the lists at most once a day.
if [[ -z $(find "$A/state/lists" -maxdepth 1 -name '*Packages*' -mtime -1 -print -quit) ]]; then
	apt_ update >&2
fi
for p in "$@"; do
	real=$p
	if [[ $p == linux-image-$arch ]]; then
		real=$(aptc depends "$p" 2>/dev/null | awk '/Depends: linux-image-[0-9]/ && !r {r=$2} END {print r}' || true)
		[[ -n $real ]] || die "cannot resolve $p"
	fi
	existing=$(ls "$dest/${real}_"*"_$arch.deb" "$dest/${real}_"*"_all.deb" 2>/dev/null | head -1 || true)
	if [[ -z $existing ]]; then
		(cd "$dest" && apt_ download "$real" >&2)
		existing=$(ls "$dest/${real}_"*".deb" | head -1)
	fi
	echo "$existing"
done
