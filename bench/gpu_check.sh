#!/usr/bin/env bash
# The GPU checks in one run (what bench/RESULTS.md's GPU rows come from): the SAM embedding-cache benchmark for
# ViT-B and ViT-H (random weights) on CUDA, and the SAM tests, including the CUDA-only one.
#   bash bench/gpu_check.sh            # in a set-up checkout (.venv present) on a machine with a GPU
# On a bare GPU machine that lacks some packages, put their wheels in .whl/ first: they are installed into
# /tmp/site (no network needed).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=python3
if [ -x .venv/bin/python ]; then PY=.venv/bin/python; fi
if ls .whl/*.whl >/dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD
fi
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
rc=0
$PY bench/embedding_cache.py --device cuda || rc=1
$PY bench/embedding_cache.py --device cuda --model-type vit_h || rc=1
$PY -m pytest tests/engine/test_sam.py -q -p no:cacheprovider -rs || rc=1
exit $rc
