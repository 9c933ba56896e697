#!/usr/bin/env bash
# Installs the Azurite Blob emulator (npm package `azurite`) into .tools/azurite for the
# Azure tests and the publish benchmark. Idempotent: a second run with the same version
# does nothing. Needs Node >= 18 and npm (Debian: apt-get install -y nodejs npm);
# 3.35.0 is the last azurite release that runs on Node 20 (3.36 needs Node 21+).
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION="${AZURITE_VERSION:-3.35.0}"
PREFIX=".tools/azurite"
BIN="$PREFIX/node_modules/.bin/azurite-blob"

if ! command -v npm >/dev/null 2>&1; then
    echo "install_azurite: npm not found; install Node.js 18+ and npm (apt-get install -y nodejs npm)" >&2
    exit 1
fi
if [ -x "$BIN" ] && grep -q "\"version\": \"$VERSION\"" "$PREFIX/node_modules/azurite/package.json" 2>/dev/null; then
    exit 0
fi
mkdir -p "$PREFIX"
npm install --prefix "$PREFIX" --no-audit --no-fund --loglevel=error "azurite@$VERSION"
"$BIN" --version >/dev/null
echo "install_azurite: azurite $VERSION in $PREFIX"
