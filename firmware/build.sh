#!/usr/bin/env bash
# build.sh [TARGET...] — cross-build static, stripped outpost binaries into
# $DIST (default dist/) and print their sizes.
#
# TARGET is amd64, arm64, armv7 (GOARM=7: armhf, Pi 2/3 with a 32-bit OS) or
# armv6 (GOARM=6: armel, Pi Zero and Pi 1); default all four. Output:
# $DIST/outpost-linux-TARGET. VERSION, COMMIT and DATE are stamped into
# main.version/main.commit/main.date; DATE defaults to the commit date so
# two builds of one commit are byte-identical.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/.." && pwd)
. "$here/lib.sh"

export PATH=/usr/local/go/bin:$PATH
GO=${GO:-go}
DIST=${DIST:-$top/dist}
VERSION=${VERSION:-$(git -C "$top" describe --tags --always --dirty 2>/dev/null || echo dev)}
COMMIT=${COMMIT:-$(git -C "$top" rev-parse --short=12 HEAD 2>/dev/null || echo unknown)}
DATE=${DATE:-$(git -C "$top" log -1 --format=%cd --date=format-local:%Y-%m-%dT%H:%M:%SZ 2>/dev/null || echo unknown)}
targets=("$@")
[[ ${#targets[@]} -gt 0 ]] || targets=(amd64 arm64 armv7 armv6)

mkdir -p "$DIST"
ldflags="-s -w -X main.version=$VERSION -X main.commit=$COMMIT -X main.date=$DATE"
printf '%-28s %10s %8s\n' binary bytes MiB >&2
for t in "${targets[@]}"; do
	goarm=
	case $t in
	amd64 | arm64) goarch=$t ;;
	armv7) goarch=arm goarm=7 ;;
	armv6) goarch=arm goarm=6 ;;
	*) die "unknown target $t (amd64 arm64 armv7 armv6)" ;;
	esac
	out="$DIST/outpost-linux-$t"
	(cd "$top" && TZ=UTC CGO_ENABLED=0 GOOS=linux GOARCH=$goarch GOARM=$goarm \
		"$GO" build -trimpath -buildvcs=false -ldflags "$ldflags" -o "$out" ./cmd/outpost)
	size=$(stat -c %s "$out")
	printf '%-28s %10d %8.2f\n' "$(basename "$out")" "$size" "$(awk -v s="$size" 'BEGIN{print s/1048576}')" >&2
done
