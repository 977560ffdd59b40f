#!/usr/bin/env bash
# One short GPU session: parity against the CPU-recorded TensorFlow reference (the built-in suite, and
# the wide, models and training suites when their records are here), what TF32 costs,
# the CUDA tests (when pytest is there), and the GPU benchmark. Needs only torch, numpy and
# safetensors (no TensorFlow). Writes its figures under ${OUT:-gpu_out}.
#   PYTHONPATH=. bash benchmarks/gpu_check.sh
set -u
OUT=${OUT:-gpu_out}
mkdir -p "$OUT"
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH}
REF=parity/data/reference_tf_cpu.safetensors
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"

echo "== parity: torch on cuda against TF recorded on CPU, TF32 off (must pass)"
python -m parity verify "$REF" --backend torch --device cuda -v > "$OUT/verify_cuda.txt"; echo "exit $?"
tail -n 2 "$OUT/verify_cuda.txt"
echo "== parity of the single conv layers (transposed ones included), against TF recorded on CPU"
python -m parity verify parity/data/reference_tf_cpu_layers.safetensors --backend torch --device cuda -v \
  > "$OUT/verify_cuda_layers.txt"; echo "exit $?"
grep -m 3 FAIL "$OUT/verify_cuda_layers.txt"; tail -n 2 "$OUT/verify_cuda_layers.txt"
# verify_record FILE NAME WHAT SUITE: verify a record made on a CPU machine with TF
# (gated-resnet-parity record FILE --suite SUITE) when it was carried here.
verify_record() {
  if [ -f "$1" ]; then
    echo "== parity of $3, torch on cuda against TF recorded on CPU, TF32 off"
    python -m parity verify "$1" --backend torch --device cuda -v > "$OUT/verify_cuda_$2.txt"; echo "exit $?"
    grep -m 3 FAIL "$OUT/verify_cuda_$2.txt"; tail -n 2 "$OUT/verify_cuda_$2.txt"
  else
    echo "== no $1 here: parity of $3 on cuda not checked (record it on CPU with --suite $4)"
  fi
}
verify_record "${WIDE:-gpu_wide.safetensors}" wide "blocks and a model at PixelCNN++ width (F=160)" wide
verify_record "${MODELS:-gpu_models.safetensors}" models "whole PixelCNN++ models (output, loss, gradients, init, EMA, samples)" models
verify_record "${TRAINING:-gpu_training.safetensors}" training "training in lockstep (each step's loss, weights, shadows, Adam state)" training
echo "== parity with TF32 on (expected to fail: pitfall 29)"
python -m parity verify "$REF" --backend torch --device cuda --tf32 > "$OUT/verify_cuda_tf32.txt"; echo "exit $?"
grep -m 3 FAIL "$OUT/verify_cuda_tf32.txt"; tail -n 2 "$OUT/verify_cuda_tf32.txt"

if python -c "import pytest, hypothesis" 2>/dev/null; then
  echo "== CUDA tests"
  timeout 60 python -m pytest -q -x -k "cuda or gpu" tests 2>&1 | tail -n 3
else
  echo "== no pytest/hypothesis here: CUDA tests not run"
fi

echo "== benchmark, batch 64, parity mode (TF32 off)"
timeout 100 python -m benchmarks.bench_block --device cuda --size pixelcnn --batch 64 --mode parity \
  --variants torch-eager,torch-channels-last --repeats 20 --warmup 5 --timeout 45 --json "$OUT/bench_gpu_parity.json" 2>/dev/null
echo "== benchmark, batch 64, fast mode (TF32 on; compile changes rounding)"
timeout 200 python -m benchmarks.bench_block --device cuda --size pixelcnn --batch 64 --mode fast \
  --variants torch-eager,torch-channels-last,torch-compile --repeats 20 --warmup 5 --timeout 150 \
  --json "$OUT/bench_gpu_fast.json" 2>/dev/null
echo done
