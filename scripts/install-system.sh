#!/usr/bin/env bash
# Installs the system packages rlreason's sandbox uses, where that is possible (root + apt).
set -u
need=()
command -v bwrap >/dev/null 2>&1 || need+=(bubblewrap)
for tool in prlimit setpriv unshare; do  # all three come with util-linux
  command -v "$tool" >/dev/null 2>&1 || { need+=(util-linux); break; }
done
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "rlreason: ${need[*]} missing and cannot be installed here (needs root and apt); the code sandbox falls back to weaker isolation." >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null 2>&1 || true
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null 2>&1 \
  || echo "rlreason: could not install ${need[*]}; the code sandbox falls back to weaker isolation." >&2
exit 0
