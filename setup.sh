#!/usr/bin/env bash
# One set-up command: creates .venv/ in the repository root and installs the toolkit with its test tools.
#   bash setup.sh                      # the toolkit (.venv/bin/pslg)
#   bash setup.sh --with-label-studio  # + a Label Studio 1.23 server in its own venv (.ls-venv/), for the end-to-end tests,
#                                      #   and (as root, with apt) headless Chromium for the browser test
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

browser_pid=""
if [ "$with_ls" = 1 ] && ! { command -v chromium >/dev/null && command -v chromedriver >/dev/null; }; then
  # The browser end-to-end test (tests/e2e/test_browser.py) opens Label Studio in headless Chromium: Debian's
  # chromium + chromium-driver, which need apt and root. Elsewhere that one test skips (fails under CI).
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    (
      apt-get update -q
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver
    ) > .browser-install.log 2>&1 &
    browser_pid=$!
  else
    echo "setup.sh: not installing headless Chromium (needs root and apt-get: apt-get install chromium chromium-driver);" \
         "the browser end-to-end test will skip" >&2
  fi
fi

if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/pip install -q --upgrade pip
# every model stack ([all]: SAM, the grounding models, SAM 2.1 / SAM-HQ / EdgeTAM / SAM 3) so that the whole
# test suite runs; the weights-free backend and the converters alone: `pip install .` (no torch, see README)
.venv/bin/pip install -q -e ".[all,dev,ray]"
echo "setup.sh: toolkit installed: $(pwd)/.venv/bin/pslg"

if [ -n "$ls_pid" ]; then
  if ! wait "$ls_pid"; then
    echo "setup.sh: Label Studio install failed:" >&2
    tail -n 40 .ls-install.log >&2
    exit 1
  fi
  echo "setup.sh: Label Studio installed: $(pwd)/.ls-venv/bin/label-studio"
fi

if [ -n "$browser_pid" ]; then
  if ! wait "$browser_pid"; then
    echo "setup.sh: Chromium install failed:" >&2
    tail -n 40 .browser-install.log >&2
    exit 1
  fi
  echo "setup.sh: headless Chromium installed: $(command -v chromium), $(command -v chromedriver)"
fi
