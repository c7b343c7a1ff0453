#!/usr/bin/env bash
# The GPU run (benchmarks/gpu.py says what it measures):
#   benchmarks/gpu_prepare.sh          # here, once: data, SmolLM2's tokenizer and wheels into .gpu/
#   benchmarks/gpu.sh OUT [--tiny] [--stages tests train frozen predict serve] [--budget SECONDS]
# On a lent GPU machine the working tree arrives without a virtual environment: the packages its
# image lacks travel as wheels in .gpu/whl and the shared data in .gpu/data.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: benchmarks/gpu.sh OUT [gpu.py options]}
shift
PY=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
if [ -d .gpu/whl ] && ! "$PY" -c "import fastapi, uvicorn" 2>/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/gpu-site .gpu/whl/*.whl
  export PYTHONPATH=/tmp/gpu-site${PYTHONPATH:+:$PYTHONPATH}
fi
if [ -d .gpu/data ]; then export GPTCLASSIFY_SHARED_DATA=${GPTCLASSIFY_SHARED_DATA:-$PWD/.gpu/data}; fi
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH}
export GPTCLASSIFY_COMMIT=${GPTCLASSIFY_COMMIT:-$(git rev-parse HEAD 2>/dev/null || echo unknown)}
exec "$PY" benchmarks/gpu.py "$out" "$@"
