#!/usr/bin/env bash
# debversion.sh VERSION — print the Debian package version for a
# `git describe` VERSION: v1.2.0 -> 1.2.0; v1.2.0-3-gabc -> 1.2.0+3.gabc;
# abc1234-dirty (no tag) -> 0~git.abc1234.dirty. Debian versions must start
# with a digit and may not contain '-' without a revision.
set -euo pipefail
v=${1:?usage: debversion.sh VERSION}
v=${v#v}
v=${v//_/.}
if [[ $v =~ ^[0-9]+(\.[0-9]+)+ ]]; then
	sed -E 's/-/+/; s/-/./g' <<<"$v"
else
	echo "0~git.${v//-/.}"
fi
