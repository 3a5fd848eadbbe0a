#!/usr/bin/env bash
# apt-get install PACKAGE... as root or through sudo, refreshing the package lists only when needed.
set -euo pipefail
if [ "$(id -u)" -eq 0 ]; then SUDO=(); else SUDO=(sudo -n); fi
install() { "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null; }
echo "apt-get install $*" >&2
install "$@" || { "${SUDO[@]}" apt-get update -qq >/dev/null && install "$@"; }
