#!/usr/bin/env bash
# Builds whale from this checkout and installs `whale` and `whaled` into a prefix.
#
# From a fresh Debian/Ubuntu machine (or macOS with Homebrew): installs the build dependencies
# that are missing, installs Rust with rustup only when there is no cargo at all, builds the
# release binaries (with a GPU backend when one is found or asked for), and replaces the
# installed binaries atomically, so running it again upgrades in place.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: ./install.sh [--prefix DIR] [--gpu auto|cuda|metal|vulkan|none] [--systemd]

Builds whale and whaled in release mode and installs them.

Options:
  --prefix DIR   Install the binaries into DIR (default: ~/.local/bin)
  --gpu KIND     GPU backend for whaled: auto (default), cuda, metal, vulkan, or none (CPU only).
                 auto picks cuda when nvcc is found, metal on Apple silicon, vulkan when glslc
                 and the Vulkan headers are found, and the CPU otherwise.
  --systemd      Also install a systemd user unit for whaled
                 (~/.config/systemd/user/whaled.service); it is not enabled for you.
  -h, --help     Show this help

Environment:
  CARGO_TARGET_DIR   Where cargo builds (default: ./target)
EOF
}

say() { printf 'install: %s\n' "$*" >&2; }
die() {
  printf 'error: %s\n' "$1" >&2
  [ $# -lt 2 ] || printf 'hint: %s\n' "$2" >&2
  exit 1
}

prefix="${HOME}/.local/bin"
gpu="auto"
systemd=0
while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) [ $# -ge 2 ] || die "--prefix needs a directory"; prefix="$2"; shift 2 ;;
    --prefix=*) prefix="${1#*=}"; shift ;;
    --gpu) [ $# -ge 2 ] || die "--gpu needs a value"; gpu="$2"; shift 2 ;;
    --gpu=*) gpu="${1#*=}"; shift ;;
    --systemd) systemd=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument '$1'" ;;
  esac
done
case "$gpu" in
  auto|cuda|metal|vulkan|none) ;;
  *) die "unknown GPU backend '$gpu'" "use one of auto, cuda, metal, vulkan, none" ;;
esac
case "$prefix" in
  /*) ;;
  *) prefix="$(pwd)/${prefix}" ;;
esac

cd "$(dirname "$0")"
os="$(uname -s)"
arch="$(uname -m)"

# --- build dependencies -------------------------------------------------------------------

have() { command -v "$1" >/dev/null 2>&1; }

has_libclang() {
  ls /usr/lib/llvm-*/lib/libclang.so* >/dev/null 2>&1 ||
    ls /usr/lib/*/libclang*.so* /usr/lib64/libclang*.so* /usr/local/lib/libclang*.so* >/dev/null 2>&1
}

install_linux_deps() {
  local need=()
  have cmake || need+=(cmake)
  have make || need+=(make)
  have c++ || need+=(g++)
  have cc || need+=(gcc)
  have pkg-config || need+=(pkg-config)
  have git || need+=(git)
  have curl || need+=(curl ca-certificates)
  has_libclang || need+=(libclang-dev)
  [ ${#need[@]} -gt 0 ] || return 0
  apt_install "${need[@]}"
}

# Installs Debian/Ubuntu packages, through sudo when not root.
apt_install() {
  have apt-get || die "missing $* and no apt-get to install them" \
    "install them with your package manager, then run ./install.sh again"
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    have sudo || die "missing $*; installing them needs root" \
      "run: apt-get install $* as root, then ./install.sh again"
    sudo="sudo"
  fi
  say "installing build dependencies: $*"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

install_macos_deps() {
  xcode-select -p >/dev/null 2>&1 || die "the Xcode command line tools are missing" \
    "run: xcode-select --install, then ./install.sh again"
  local need=()
  have cmake || need+=(cmake)
  have pkg-config || need+=(pkg-config)
  have git || need+=(git)
  [ ${#need[@]} -gt 0 ] || return 0
  have brew || die "missing ${need[*]} and no Homebrew to install them" "install Homebrew from https://brew.sh"
  say "installing build dependencies: ${need[*]}"
  brew install "${need[@]}"
}

case "$os" in
  Linux) install_linux_deps ;;
  Darwin) install_macos_deps ;;
  *) die "unsupported system '$os'" "whale builds on Linux and macOS" ;;
esac

# --- Rust ---------------------------------------------------------------------------------

# A rustup installed earlier but not yet on this shell's PATH.
if ! have cargo && [ -x "${CARGO_HOME:-$HOME/.cargo}/bin/cargo" ]; then
  export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
fi
if ! have cargo; then
  say "no cargo found: installing Rust with rustup"
  curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal --no-modify-path
  export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
fi

required_rust="$(sed -n 's/^rust-version *= *"\(.*\)"/\1/p' Cargo.toml | head -n 1)"
rust_version="$(rustc --version | awk '{print $2}')"
version_at_least() { [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n 1)" = "$2" ]; }
if [ -n "$required_rust" ] && ! version_at_least "$rust_version" "$required_rust"; then
  if have rustup; then
    say "Rust $rust_version is older than $required_rust: updating the stable toolchain"
    rustup update stable
  else
    die "Rust $rust_version is older than the $required_rust whale needs" \
      "remove the system's cargo and rustc and run ./install.sh again (it then uses rustup)"
  fi
fi

# --- GPU backend --------------------------------------------------------------------------

has_vulkan() {
  have glslc && { [ -f /usr/include/vulkan/vulkan.h ] || pkg-config --exists vulkan 2>/dev/null; }
}

if [ "$gpu" = auto ]; then
  if have nvcc || [ -x /usr/local/cuda/bin/nvcc ]; then
    gpu=cuda
  elif [ "$os" = Darwin ] && [ "$arch" = arm64 ]; then
    gpu=metal
  elif has_vulkan; then
    gpu=vulkan
  else
    gpu=none
  fi
  say "GPU backend: $gpu (choose with --gpu)"
  explicit_gpu=0
else
  explicit_gpu=1
fi

# llama.cpp's Vulkan backend compiles its shaders with glslc and needs the SPIR-V headers.
if [ "$gpu" = vulkan ] && [ "$os" = Linux ]; then
  need=()
  have glslc || need+=(glslc)
  [ -f /usr/include/vulkan/vulkan.h ] || need+=(libvulkan-dev)
  [ -d /usr/share/cmake/SPIRV-Headers ] || [ -d /usr/include/spirv ] || need+=(spirv-headers)
  [ ${#need[@]} -eq 0 ] || apt_install "${need[@]}"
  # llama.cpp uses VK_EXT_layer_settings (Vulkan headers 1.3.261+; Debian 12 ships 1.3.239).
  # Newer headers may also come through CPATH.
  new_headers=0
  cpath="${CPATH:-}"
  for dir in ${cpath//:/ } /usr/include; do
    grep -q VK_EXT_layer_settings "$dir/vulkan/vulkan_core.h" 2>/dev/null && new_headers=1
  done
  if [ "$new_headers" = 0 ]; then
    [ "$explicit_gpu" = 1 ] || { say "the Vulkan headers are too old for llama.cpp: building for the CPU"; gpu=none; }
    [ "$gpu" = none ] || die "the Vulkan headers in /usr/include/vulkan are older than 1.3.261, which llama.cpp needs" \
      "install newer ones (Debian 13, Ubuntu 24.04, the LunarG SDK; or point CPATH at them) or build for the CPU with --gpu none"
  fi
fi

# The feature must exist in whale-daemon's manifest; an auto-detected one that does not falls
# back to the CPU, an explicitly requested one is an error.
features=()
if [ "$gpu" != none ]; then
  if sed -n '/^\[features\]/,/^\[/p' daemon/Cargo.toml | grep -q "^${gpu} *="; then
    features=(--features "whale-daemon/${gpu}")
    if [ "$gpu" = cuda ] && ! have nvcc && [ -x /usr/local/cuda/bin/nvcc ]; then
      export PATH="/usr/local/cuda/bin:$PATH"
    fi
  elif [ "$explicit_gpu" = 1 ]; then
    die "this version of whaled has no '${gpu}' backend" "build for the CPU with --gpu none"
  else
    say "this version of whaled has no '${gpu}' backend: building for the CPU"
    gpu=none
  fi
fi

# --- build --------------------------------------------------------------------------------

say "building whale and whaled (release; the first build compiles llama.cpp and takes a while)"
cargo build --release -p whale-cli -p whale-daemon ${features[@]+"${features[@]}"}

# Honour CARGO_TARGET_DIR and any build.target-dir in cargo's config.
target_dir="$(cargo metadata --format-version 1 --no-deps |
  sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
[ -n "$target_dir" ] || target_dir="${CARGO_TARGET_DIR:-target}"
built="${target_dir}/release"

# --- install ------------------------------------------------------------------------------

mkdir -p "$prefix"
for binary in whale whaled; do
  [ -x "${built}/${binary}" ] || die "the build did not produce ${built}/${binary}"
  # Copy next to the target, then rename over it: atomic, and safe while the old one runs.
  staged="${prefix}/.${binary}.new.$$"
  install -m 0755 "${built}/${binary}" "$staged"
  mv -f "$staged" "${prefix}/${binary}"
done
say "installed whale and whaled into ${prefix}"

case ":${PATH}:" in
  *":${prefix}:"*) ;;
  *) say "warning: ${prefix} is not on your PATH; add it, e.g.: export PATH=\"${prefix}:\$PATH\"" ;;
esac

# --- systemd user unit --------------------------------------------------------------------

unit_dir="${XDG_CONFIG_HOME:-$HOME/.config}/systemd/user"
if [ "$systemd" = 1 ]; then
  [ "$os" = Linux ] || die "--systemd needs Linux" "on macOS, start the daemon with: whale serve"
  mkdir -p "$unit_dir"
  cat >"${unit_dir}/whaled.service.new" <<EOF
[Unit]
Description=whaled: runs DeepSeek models and serves the Ollama and DeepSeek APIs
After=network-online.target

[Service]
ExecStart=${prefix}/whaled
# whaled's settings come from its environment, e.g.:
# Environment=WHALE_HOST=127.0.0.1:11434
# Environment=WHALE_MODELS=%h/.local/share/whale/models
Restart=on-failure
RestartSec=3

[Install]
WantedBy=default.target
EOF
  mv -f "${unit_dir}/whaled.service.new" "${unit_dir}/whaled.service"
  say "installed ${unit_dir}/whaled.service"
  if have systemctl; then
    systemctl --user daemon-reload 2>/dev/null || true
  fi
  say "to start whaled now and at every login, run: systemctl --user enable --now whaled"
elif [ -f "${unit_dir}/whaled.service" ] && have systemctl &&
  systemctl --user is-active --quiet whaled 2>/dev/null; then
  say "whaled runs as a systemd user service; load the new binary with: systemctl --user restart whaled"
elif [ "$os" = Linux ]; then
  say "whale starts whaled when needed; to run it as a service instead, run ./install.sh --systemd"
fi
