#!/usr/bin/env bash
# Install everything miko needs on a fresh Debian machine with Python 3.11 (idempotent).
set -euo pipefail
cd "$(dirname "$0")/.."

if command -v apt-get >/dev/null; then
  need=()
  command -v tesseract >/dev/null || need+=(tesseract-ocr)
  command -v chromium >/dev/null || need+=(chromium)
  # Throwaway Postgres and Redis servers for the cluster test (deploy/cluster/).
  compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || need+=(postgresql)
  command -v redis-server >/dev/null || need+=(redis-server)
  if ((${#need[@]})); then
    SUDO=$([ "$(id -u)" = 0 ] && echo "" || echo sudo)
    $SUDO apt-get update -q
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "${need[@]}"
  fi
fi

PY=${PYTHON:-python3}
# llama.cpp compiles from source; the multimodal (llava) part is not needed and doubles the build.
export CMAKE_ARGS="${CMAKE_ARGS:--DLLAVA_BUILD=OFF}"
# torch first and pinned: the CPU wheel of this exact version is what the machine provides.
$PY -m pip install -q "torch==2.13.0"
$PY -m pip install -q -e ".[dev]"

# Label Studio, for the human annotation round trip, pins Django 5.2 and many packages: it gets
# its own virtual environment (about 2 minutes to install), outside the project's.
LS_VENV=${MIKO_LABEL_STUDIO_VENV:-$HOME/.venvs/label-studio}
if [ ! -x "$LS_VENV/bin/label-studio" ]; then
  $PY -m venv "$LS_VENV"
  "$LS_VENV/bin/python" -m pip install -q "label-studio==1.23.2" "label-studio-sdk==2.1.2"
fi
