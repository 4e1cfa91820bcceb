#!/usr/bin/env bash
# Installs what Tessera needs on a fresh Debian bookworm machine (idempotent):
#   - lavapipe from Mesa 25 (bookworm-backports), so Dawn finds a WebGPU adapter without a GPU
#     (bookworm's own Mesa 22 is rejected by Dawn);
#   - Debian's chromium, for the status page's headless browser test;
#   - Deno 2.9.6 from npm;
#   - the project's npm dependencies, pinned by deno.lock.
set -euo pipefail
cd "$(dirname "$0")/.."

DENO_VERSION=2.9.6
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

mesa_major() {
  dpkg-query -W -f='${Version}' mesa-vulkan-drivers 2>/dev/null | cut -d. -f1 || true
}

if [ -f /etc/debian_version ] && [ "$(mesa_major)" != "" ] && [ "$(mesa_major)" -ge 25 ] 2>/dev/null; then
  echo "setup: mesa-vulkan-drivers $(dpkg-query -W -f='${Version}' mesa-vulkan-drivers) already installed"
elif [ -f /etc/debian_version ]; then
  echo "setup: installing lavapipe (mesa-vulkan-drivers) from bookworm-backports"
  if ! grep -rqs "bookworm-backports" /etc/apt/sources.list /etc/apt/sources.list.d/; then
    printf 'Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' |
      $SUDO tee /etc/apt/sources.list.d/bookworm-backports.sources >/dev/null
  fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq -t bookworm-backports mesa-vulkan-drivers >/dev/null
else
  echo "setup: not Debian; install a Vulkan driver (Mesa >= 25 lavapipe on CPU-only Linux) yourself"
fi

# `ip netns` for the cross-host test (two network namespaces joined by a veth pair).
if [ -f /etc/debian_version ] && ! command -v ip >/dev/null; then
  echo "setup: installing iproute2"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq iproute2 >/dev/null
fi

# Headless Chromium for the status page's browser test (tests/status_page_test.ts).
if [ -f /etc/debian_version ] && ! command -v chromium >/dev/null; then
  echo "setup: installing chromium"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
fi

if ! command -v deno >/dev/null || [ "$(deno --version | head -1 | cut -d' ' -f2)" != "$DENO_VERSION" ]; then
  echo "setup: installing deno $DENO_VERSION from npm"
  npm install -g --silent "deno@$DENO_VERSION"
fi
deno --version | head -1

deno install --frozen --quiet
echo "setup: done"
