#!/usr/bin/env bash
# Install the Debian packages dsita needs, once. As root it runs apt-get; otherwise it prints the command.
set -euo pipefail

packages=(
  python3-venv cmake build-essential
  libboost-program-options-dev libboost-system-dev libboost-thread-dev libboost-test-dev
  zlib1g-dev libbz2-dev liblzma-dev
  espeak-ng festival festvox-italp16k festvox-itapc16k fortunes-it manpages-it
  sox libsox-fmt-mp3
  chromium
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -eq 0 ]; then
  echo "Installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "Missing Debian packages. Run as root, then re-run make:" >&2
  echo "  sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi
