#!/usr/bin/env bash
# Installs the system packages rlreason's sandbox uses, where that is possible (root + apt).
set -u
need=()
command -v bwrap >/dev/null 2>&1 || need+=(bubblewrap)
for tool in setpriv unshare; do  # both come with util-linux
  command -v "$tool" >/dev/null 2>&1 || { need+=(util-linux); break; }
done
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "rlreason: ${need[*]} missing and cannot be installed here (needs root and apt); code rewards then need an explicit opt-in (sandbox: rlimits)." >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null 2>&1 || true
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null 2>&1 \
  || echo "rlreason: could not install ${need[*]}; code rewards then need an explicit opt-in (sandbox: rlimits)." >&2
exit 0
