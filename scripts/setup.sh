#!/usr/bin/env bash
# Installs the Debian packages postal needs to build, test and benchmark. Idempotent: packages already
# present are left alone, and apt is only touched when something is missing. Run as root (or with sudo).
set -euo pipefail

packages=(
  g++ cmake make ninja-build pkg-config
  libcaf-dev catch2 nlohmann-json3-dev libssl-dev openssl
  redis-server redis-tools
  clang clang-14 libclang-rt-14-dev
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  sudo=""
  [[ $(id -u) -eq 0 ]] || sudo="sudo"
  echo "setup: installing ${missing[*]}" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi
