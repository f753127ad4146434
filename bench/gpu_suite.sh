#!/usr/bin/env bash
# The GPU session's one call: device facts, the `gpu` tests, the suite; everything under $OUT.
# Sized for one device call of 10 minutes with room for a rerun in 15 (docs/benchmarks.md):
#   nvidia-smi ~5 s, wheels ~15 s, tests <= 120 s, suite <= 420 s (each run <= 120 s);
#   CASES="gpt2-full ..." runs a subset (a rerun of what timed out).
# Run from the repository root on the device machine, with the wheels carried in .whl/
# (bitsandbytes for QLoRA; see docs/benchmarks.md "GPU suite"):
#   bash bench/gpu_suite.sh
set -uo pipefail
OUT=${OUT:-/tmp/gpu-out}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl && export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
{ nvidia-smi; python3 -c "import torch, transformers, peft; print(torch.__version__,
  transformers.__version__, peft.__version__, torch.cuda.get_device_name(0))"; } \
  > "$OUT/device.txt" 2>&1
timeout 120 python3 -m pytest -q -m gpu -p no:cacheprovider -o addopts="" tests/test_gpu.py \
  > "$OUT/gpu_tests.txt" 2>&1
echo "gpu tests exit $?" >> "$OUT/gpu_tests.txt"
timeout 420 python3 bench/gpu_suite.py --steps "${STEPS:-20}" --timeout 120 --out "$OUT" \
  ${CASES:+--cases $CASES} > "$OUT/suite.txt" 2>&1
echo "suite exit $?" >> "$OUT/suite.txt"
tail -n 3 "$OUT/gpu_tests.txt"; cat "$OUT/suite.txt"
