# lib.sh — helpers sourced by the firmware scripts (not executable on its own).

log() { printf 'firmware: %s\n' "$*" >&2; }
die() { printf 'firmware: error: %s\n' "$*" >&2; exit 1; }

# need PROG... — fail with a hint when a tool is missing.
need() {
	local p
	for p in "$@"; do
		command -v "$p" >/dev/null 2>&1 || die "$p not found (as root: firmware/tools.sh, or make firmware-tools, installs every tool these scripts call)"
	done
}

# fw_cache prints the cache directory for root filesystems and kernels.
fw_cache() {
	local d=${OUTPOST_FW_CACHE:-}
	if [[ -z $d ]]; then
		if mkdir -p /var/cache/outpost-firmware 2>/dev/null && [[ -w /var/cache/outpost-firmware ]]; then
			d=/var/cache/outpost-firmware
		else
			d=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/cache
		fi
	fi
	mkdir -p "$d"
	echo "$d"
}

# fw_mirror prints the Debian mirror this machine's apt uses.
fw_mirror() {
	local m=${OUTPOST_MIRROR:-}
	if [[ -z $m && -f /etc/apt/sources.list.d/debian.sources ]]; then
		m=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources)
	fi
	if [[ -z $m && -f /etc/apt/sources.list ]]; then
		m=$(awk '$1=="deb"{print $2; exit}' /etc/apt/sources.list)
	fi
	[[ -n $m ]] || die "no Debian mirror configured; set OUTPOST_MIRROR"
	echo "$m"
}

# deb_arch GOARCH[/GOARM] prints the Debian architecture name.
deb_arch() {
	case $1 in
	amd64) echo amd64 ;;
	arm64) echo arm64 ;;
	arm/7 | armv7) echo armhf ;;
	arm/6 | armv6) echo armel ;;
	*) die "unknown target $1" ;;
	esac
}
