#!/usr/bin/env bash
# One set-up command: creates .venv/ in the repository root and installs the toolkit with its test tools.
#   bash setup.sh                      # the toolkit (.venv/bin/pslg)
#   bash setup.sh --with-label-studio  # + a Label Studio 1.23 server in its own venv (.ls-venv/), for the end-to-end tests
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
with_ls=0
for arg in "$@"; do
  case "$arg" in
    --with-label-studio) with_ls=1 ;;
    *) echo "setup.sh: unknown option $arg" >&2; exit 2 ;;
  esac
done

ls_pid=""
if [ "$with_ls" = 1 ] && [ ! -x .ls-venv/bin/label-studio ]; then
  # Label Studio pins its own Django stack: it lives in its own venv, installed in parallel with ours.
  (
    "$PY" -m venv .ls-venv
    .ls-venv/bin/pip install -q --upgrade pip
    .ls-venv/bin/pip install -q "label-studio==1.23.2"
  ) > .ls-install.log 2>&1 &
  ls_pid=$!
fi

if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q -e ".[dev]"
echo "setup.sh: toolkit installed: $(pwd)/.venv/bin/pslg"

if [ -n "$ls_pid" ]; then
  if ! wait "$ls_pid"; then
    echo "setup.sh: Label Studio install failed:" >&2
    tail -n 40 .ls-install.log >&2
    exit 1
  fi
  echo "setup.sh: Label Studio installed: $(pwd)/.ls-venv/bin/label-studio"
fi
