#!/usr/bin/env bash
# The one prepared script for a lent GPU machine (JAX, no TensorFlow there). Carry .whl/ (keras, namex, optree).
#   run: bash benchmarks/gpu_check.sh   (results in $OUT)
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD KERAS_BACKEND=jax PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
# Every registered variant builds and runs on the JAX backend (builders use keras.layers / keras.ops only).
python3 - <<'PY' 2>&1 | tee "$OUT/variants_jax.txt"
import keras, numpy as np
from workbench.models import build_model, published_names
for policy in ("float32", "mixed_bfloat16"):
    keras.mixed_precision.set_global_policy(policy)
    for name in published_names() + ["phi=-2", "phi=0.5"]:
        m = build_model(name, 5, input_shape=(64, 64, 3))
        y = np.asarray(m(np.random.uniform(0, 255, (2, 64, 64, 3)).astype("float32")))
        print(policy, name, m.count_params(), y.dtype, bool(np.isfinite(y).all()))
PY
python3 benchmarks/bench_mixed_precision.py --variant b0 --batch 128 --steps 15 --json "$OUT/b0_mixed_precision.json" 2>&1 | tee "$OUT/b0_mixed_precision.txt"
