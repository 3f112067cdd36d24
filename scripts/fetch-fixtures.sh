#!/usr/bin/env bash
# Fetches the test suite's real model files once into .cache/fixtures (see tests/README.md).
set -euo pipefail
