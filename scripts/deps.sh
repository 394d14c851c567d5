#!/usr/bin/env bash
# Installs the Debian 12 packages Metrocell needs to build, test and run its demo,
# and unpacks llhttp's C sources into build/llhttp when no libllhttp is installed.
# Fast no-op when everything is already present. Arguments name extra packages.
set -euo pipefail
cd "$(dirname "$0")/.."

PKGS=(build-essential pkg-config libuv1-dev liblmdb-dev libjansson-dev libcmocka-dev
      libssl-dev libnghttp2-dev libjwt-dev python3 python3-pytest procps curl
      openssl)
# The TLS tests drive `openssl s_client`/`openssl req` and `curl --http2`;
# Debian's curl is built with nghttp2, so curl above covers HTTP/2.
# Peers and load generators of `make bench` only (`scripts/deps.sh --bench`), so that
# `make test` on a fresh machine does not need them.
BENCH_PKGS=(wrk nginx-light haproxy redis-server redis-tools varnish linux-perf)
# Extra packages for optional targets, e.g. `scripts/deps.sh clang` for make fuzz.
for a in "$@"; do
  if [ "$a" = "--bench" ]; then PKGS+=("${BENCH_PKGS[@]}"); else PKGS+=("$a"); fi
done

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

missing=()
for p in "${PKGS[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

updated=0
if [ "${#missing[@]}" -gt 0 ]; then
  echo "deps: installing missing Debian packages: ${missing[*]}"
  $SUDO apt-get update -qq
  updated=1
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# llhttp: the system library where it exists, else Debian's node-llhttp C sources.
if ! pkg-config --exists libllhttp 2>/dev/null; then
  if [ ! -f build/llhttp/llhttp.h ]; then
    echo "deps: no libllhttp on this system; unpacking llhttp C sources from Debian's node-llhttp into build/llhttp"
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    if ! (cd "$tmp" && apt-get download -q node-llhttp >/dev/null 2>&1); then
      [ "$updated" -eq 1 ] || $SUDO apt-get update -qq
      (cd "$tmp" && apt-get download -q node-llhttp >/dev/null)
    fi
    dpkg-deb -x "$tmp"/node-llhttp_*.deb "$tmp/x"
    mkdir -p build/llhttp
    cp "$tmp"/x/usr/share/llhttp/*.c build/llhttp/
    cp "$tmp"/x/usr/share/include/llhttp/llhttp.h build/llhttp/
  fi
fi
