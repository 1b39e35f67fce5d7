#!/usr/bin/env bash
# binfmt.sh ARCH — make foreign ARCH binaries (arm64, armhf, armel) run on
# this host through qemu-user-static: mounts binfmt_misc when it is not
# mounted and enables the interpreter. Idempotent. Needs root.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
arch=${1:?usage: binfmt.sh ARCH}
case $arch in
arm64) q=qemu-aarch64 ;;
armhf | armel) q=qemu-arm ;;
*) exit 0 ;;
esac
need update-binfmts
[[ -x /usr/bin/$q-static || -x /usr/libexec/qemu-binfmt/$q-binfmt-P ]] || die "$q-static missing (apt-get install qemu-user-static)"
if ! mountpoint -q /proc/sys/fs/binfmt_misc; then
	mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
fi
if [[ ! -e /proc/sys/fs/binfmt_misc/$q ]]; then
	update-binfmts --enable "$q"
fi
[[ -e /proc/sys/fs/binfmt_misc/$q ]] || die "could not register $q in binfmt_misc"
