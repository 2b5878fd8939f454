#!/usr/bin/env bash
# gpu_check.sh - what the GPU machine runs for the CUDA training backend, from
# the repository root, with binaries built here (make cuda) and packed by
# `scripts/gpu_check.sh pack` into .device/cuda/ (xz, to fit the transfer).
#
#   scripts/gpu_check.sh pack              # here: pack build-cuda's binaries
#   scripts/gpu_check.sh tests             # there: gpu tests, parity --device cuda,
#                                          #        the tiny recipe on CPU and CUDA
#   scripts/gpu_check.sh bench [RUNS...]   # there: distill bench sft (CUDA), e.g. 8192x1,
#                                          #        16384x1:recompute, 8192x1:docs8
#   scripts/gpu_check.sh peer [RUNS...]    # there: the PyTorch peer (tools/bench_sft_peer.py),
#                                          #        e.g. 8192x1, 8192x1:compile, 16384x1:ckpt
#   scripts/gpu_check.sh profile [SEQ]     # there: GPU time by kind of op, one step
# Logs and JSON go to $OUT (or /tmp/gpu_check).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu_check}
mkdir -p "$OUT"
D=.device/cuda
what=${1:-tests}
shift || true

if [ "$what" = pack ]; then
  mkdir -p $D
  for b in build-cuda/distill build-cuda/tests/gpu_test_*; do
    xz -T2 -6 -c "$b" > "$D/$(basename "$b").xz"
  done
  ls -la $D
  exit 0
fi

for f in $D/*.xz; do xz -dkf "$f"; done
chmod +x $D/distill $D/gpu_test_* 2>/dev/null
BIN=$D/distill
# cuDNN 9.19 ships with the torch wheels there (GPU.md); first on the path
CUDNN=$(python3 -c 'import nvidia.cudnn, os; print(os.path.dirname(nvidia.cudnn.__file__) + "/lib")' 2>/dev/null)
[ -n "$CUDNN" ] && export LD_LIBRARY_PATH="$CUDNN:${LD_LIBRARY_PATH:-}"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"

if [ "$what" = tests ]; then
  export KD_FIXTURES=/tmp/fx
  mkdir -p $KD_FIXTURES
  for a in tests/fixtures/hf/*.tar.gz; do tar xzf "$a" -C $KD_FIXTURES; done
  rc=0
  for t in $D/gpu_test_*; do
    case $t in *.xz) continue ;; esac
    echo "== $(basename "$t")"
    "$t" > "$OUT/$(basename "$t").log" 2>&1 || rc=1
    tail -n 40 "$OUT/$(basename "$t").log"
  done
  : > "$OUT/parity_cuda.log"
  for fx in tiny-qwen2 tiny-qwen2-untied tiny-qwen2-mha tiny-qwen2-bf16 tiny-llama3 tiny-llama32-tied tiny-llama-norope; do
    echo "== parity $fx --device cuda" | tee -a "$OUT/parity_cuda.log"
    $BIN parity $KD_FIXTURES/$fx --device cuda >> "$OUT/parity_cuda.log" 2>&1 || rc=1
  done
  grep -c "^ok" "$OUT/parity_cuda.log" | sed 's/^/parity ok lines: /'
  grep "^parity\|^error" "$OUT/parity_cuda.log"
  grep "^FAIL\|error" "$OUT/parity_cuda.log" | head -20
  # the tiny recipe, CPU then CUDA, same seed and data: the loss curves side by side
  mkdir -p ~/.cache/distill && tar xzf .device/tokenizers.tgz -C ~/.cache/distill
  $BIN -q init configs/models/tiny-qwen2 /tmp/tiny-model --tokenizer ~/.cache/distill/tokenizers/qwen3 || rc=1
  for dev in cpu cuda; do
    $BIN sft configs/sft/tiny_cpu.yaml --set model=/tmp/tiny-model --set output.dir=/tmp/tiny-$dev \
      --set runtime.device=$dev --set output.progress=false > "$OUT/tiny_$dev.log" 2>&1 || rc=1
    cp /tmp/tiny-$dev/metrics.jsonl "$OUT/tiny_$dev.jsonl" 2>/dev/null
    echo "== tiny recipe on $dev"; grep -v "^progress" "$OUT/tiny_$dev.log" | tail -n 4
  done
  python3 tools/compare_curves.py "$OUT/tiny_cpu.jsonl" "$OUT/tiny_cuda.jsonl" | tee "$OUT/tiny_curves.txt" || rc=1
  # stop after 9 steps on CUDA, resume from the checkpoint: the same curve as one run (to rounding:
  # the embedding backward adds with atomics), and the same again resuming a CPU checkpoint on CUDA
  for from in cuda cpu; do
    rm -rf /tmp/tiny-r-$from
    $BIN sft configs/sft/tiny_cpu.yaml --set model=/tmp/tiny-model --set output.dir=/tmp/tiny-r-$from \
      --set runtime.device=$from --set output.progress=false --set train.stop_after=9 > /dev/null 2>&1 || rc=1
    $BIN sft configs/sft/tiny_cpu.yaml --set model=/tmp/tiny-model --set output.dir=/tmp/tiny-r-$from \
      --set runtime.device=cuda --set output.progress=false --resume > /dev/null 2>&1 || rc=1
    echo "== resume on cuda from a $from checkpoint at step 9"
    python3 tools/compare_curves.py --tol 1e-3 /tmp/tiny-cuda/metrics.jsonl /tmp/tiny-r-$from/metrics.jsonl | tail -n 1 || rc=1
  done
  exit $rc
fi

if [ "$what" = bench ]; then
  runs=("$@")
  [ ${#runs[@]} -eq 0 ] && runs=(4096x2 8192x1 16384x1:recompute 32768x1:recompute 8192x1:docs8)
  for r in "${runs[@]}"; do
    seq=${r%%x*}; rest=${r#*x}; bsz=${rest%%:*}; extra=()
    case $r in *recompute*) extra+=(--recompute) ;; esac
    case $r in *docs8*) extra+=(--docs 8) ;; esac
    $BIN bench sft --model-config configs/models/qwen2.5-1.5b --device cuda --seq "$seq" --batch "$bsz" \
      --steps 5 --json "${extra[@]}" 2>&1 | tee -a "$OUT/bench_sft_cuda.jsonl"
  done
  exit 0
fi

if [ "$what" = profile ]; then # GPU time by kind of op, one step of one configuration
  seq=${1:-8192}
  DISTILL_PROFILE=1 $BIN bench sft --model-config configs/models/qwen2.5-1.5b --device cuda --seq "$seq" --steps 2 \
    2>&1 | grep "^profile\|^bench" | tee "$OUT/profile_$seq.txt"
  exit 0
fi

if [ "$what" = peer ]; then
  runs=("$@")
  [ ${#runs[@]} -eq 0 ] && runs=(4096x2 8192x1 8192x1:compile 16384x1:ckpt 32768x1)
  args=()
  for r in "${runs[@]}"; do args+=(--run "$r"); done
  PYTHONUNBUFFERED=1 python3 tools/bench_sft_peer.py --model-config configs/models/qwen2.5-1.5b \
    "${args[@]}" --out "$OUT/bench_sft_peer.json" 2>&1 | grep -v Warning
  exit 0
fi
echo "usage: scripts/gpu_check.sh pack|tests|bench [RUNS]|peer [RUNS]|profile [SEQ]" >&2
exit 2
