#!/usr/bin/env bash
# apt-get install PACKAGE... as root or through sudo, refreshing the package lists only when needed.
set -euo pipefail
if [ "$(id -u)" -eq 0 ]; then SUDO=(); else SUDO=(sudo -n); fi
# On a shared machine another apt or dpkg (unattended-upgrades, a colleague) may hold the lock:
# wait for it, up to APT_LOCK_TIMEOUT seconds, as apt itself offers, instead of failing at once.
LOCK=(-o "DPkg::Lock::Timeout=${APT_LOCK_TIMEOUT:-600}")
install() { "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get "${LOCK[@]}" install -y -qq --no-install-recommends "$@" >/dev/null; }
echo "apt-get install $*" >&2
install "$@" || { "${SUDO[@]}" apt-get "${LOCK[@]}" update -qq >/dev/null && install "$@"; }
