#!/usr/bin/env bash
# playwright-core from npm, for the page test of `dsita serve` (tests/serve/test_page.py), which drives
# Debian's chromium with it (no browser download: playwright-core ships none). Test tool only.
# Idempotent: a folder that already holds this version is left alone.
#   usage: tools/setup_node.sh DEST        (the Makefile passes .cache/node)
set -euo pipefail

dest=${1:?usage: tools/setup_node.sh DEST}
version=1.65.1
manifest="$dest/node_modules/playwright-core/package.json"

if [ -f "$manifest" ] && grep -q "\"version\": \"$version\"" "$manifest"; then
  exit 0
fi
if ! command -v npm >/dev/null; then
  echo "setup_node: npm not found; install Node.js 18 or newer with npm" >&2
  exit 1
fi
mkdir -p "$dest"
npm install --no-save --no-audit --no-fund --loglevel=error --prefix "$dest" "playwright-core@$version"
