#!/usr/bin/env bash
# Installs what building and testing whale needs on a fresh Debian/Ubuntu machine:
# cmake and libclang (llama.cpp's build), a C++ compiler, and the CNCF distribution registry
# (docker-registry) the registry tests run against, and cargo-fuzz for scripts/fuzz.sh. Does
# nothing for what is already there.
set -euo pipefail

need=()
command -v cmake >/dev/null || need+=(cmake)
command -v c++ >/dev/null || need+=(g++)
command -v docker-registry >/dev/null || need+=(docker-registry)
command -v curl >/dev/null || need+=(curl)
command -v npm >/dev/null || need+=(npm)
ls /usr/lib/llvm-*/lib/libclang.so* /usr/lib/*/libclang.so* /usr/lib/*/libclang-[0-9]*.so* >/dev/null 2>&1 || need+=(libclang-dev)

if [ ${#need[@]} -gt 0 ]; then
  if ! command -v apt-get >/dev/null; then
    echo "error: missing ${need[*]} and no apt-get to install them" >&2
    exit 1
  fi
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "setup-deps: installing ${need[*]}" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null; then
  echo "error: cargo not found" >&2
  echo "hint: install Rust from your system's packages or with rustup" >&2
  exit 1
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "setup-deps: installing cargo-fuzz" >&2
  cargo install cargo-fuzz --locked
fi
