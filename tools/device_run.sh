#!/usr/bin/env bash
# device_run.sh - what one session runs on the GPU machine, in one command.
# Expects .device/ (carried, git-ignored) made on the development machine:
#   .device/distill, .device/tests/*   from `make cuda` (build-cuda/), stripped, each
#                                      optionally xz-compressed (NAME.xz)
#   .device/tokenizers.tgz             the tokenizers/ folder of the setup cache
#   .device/corpus.repaired.jsonl      (optional) a corpus to make reference ids for
# (`make device-pack` makes the binaries part.) Writes logs and reference files
# under $OUT. Needs python3 with `tokenizers` (and torch + transformers for the
# peers). STEPS (default "gpu tokref bench") picks the parts to run; also
# gputests (the GPU test programs alone; gpu adds parity and the tiny recipe),
# exportcheck, sftbench, teacherbench, gpusft (the CUDA trainer's benchmark and
# its PyTorch peer: GPU_SFT_RUNS, e.g. "8192x1 8192x1:twopass 32768x1:recompute",
# and GPU_SFT_PEER) and gpuprofile (its GPU time by
# op at GPU_PROFILE_SEQ tokens), gpuparity (`parity --device cuda` on the DeepSeek
# fixtures), gpugen (`bench generate` at GPU_GEN_CONC, its profile, and the
# transformers peer at GPU_GEN_PEER concurrencies when set), gpugenjob (`distill
# generate` on CUDA under load, twice, and on the CPU).
set -uo pipefail
: "${OUT:?OUT must be set}"
root=$PWD
log=$OUT/device.log
exec > >(tee "$log") 2>&1
echo "== $(date -u +%FT%TZ) $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader)"
# The test binaries have this checkout's build paths compiled in (/work/main/build-cuda/...).
mkdir -p /work && { [ -e /work/main ] || ln -s "$root" /work/main; }
b=/work/main/build-cuda
mkdir -p $b/tests/tmp $b/fixtures /tmp/kdcache
# binaries may come xz-compressed (the working tree plus carry must stay under 64 MiB)
for f in .device/distill .device/distill.xz .device/tests/*; do
  [ -e "$f" ] || continue
  dst=$b/${f#.device/}; dst=${dst%.xz}
  case $f in *.xz) xz -dc "$f" >"$dst" && chmod +x "$dst";; *) cp "$f" "$dst";; esac
done
for f in tests/fixtures/hf/*.tar.gz; do tar -xzf "$f" -C $b/fixtures; done
tar -xzf .device/tokenizers.tgz -C /tmp/kdcache
export DISTILL_CACHE=/tmp/kdcache

STEPS=${STEPS:-gpu tokref bench}
has() { case " $STEPS " in *" $1 "*) return 0;; esac; return 1; }
if has gpu || has gputests; then
echo "== GPU tests $(date -u +%T)"
for t in $b/tests/gpu_test_*; do timeout 300 $t >/tmp/t.log 2>&1 && echo "ok   $(basename $t)" || echo "FAIL $(basename $t)"; grep -v "^ok\|^  linear\|^  rmsnorm\|^  rope\|^  swiglu\|^  emb\|^  resid\|^  qkv\|^  adamw\|^  grad norm\|^  column" /tmp/t.log | tail -40; done
fi
if has gpu; then
echo "== distill parity --device cuda, every dense fixture"
for fx in tiny-qwen2 tiny-qwen2-untied tiny-qwen2-mha tiny-qwen2-bf16 tiny-llama3 tiny-llama32-tied tiny-llama-norope \
          tiny-deepseek-v3 tiny-deepseek-v2 tiny-deepseek-v2-lite; do
  $b/distill parity $b/fixtures/$fx --device cuda >/tmp/p.log 2>&1; tail -1 /tmp/p.log; grep "^FAIL" /tmp/p.log
done
echo "== the tiny recipe on the CPU and on CUDA, and a CUDA run stopped at step 9 and resumed (from a CUDA and from a CPU checkpoint)"
x=/tmp/kdc && rm -rf $x && mkdir -p $x
$b/distill -q init configs/models/tiny-qwen2 $x/model --tokenizer /tmp/kdcache/tokenizers/qwen3
tiny() { $b/distill sft configs/sft/tiny_cpu.yaml --set model=$x/model --set output.progress=false "$@" 2>&1 | grep "^sft:\|error"; }
tiny --set output.dir=$x/cpu --set runtime.device=cpu
tiny --set output.dir=$x/cuda --set runtime.device=cuda
python3 tools/compare_curves.py $x/cpu/metrics.jsonl $x/cuda/metrics.jsonl | tail -n 1
for from in cuda cpu; do
  tiny --set output.dir=$x/r-$from --set runtime.device=$from --set train.stop_after=9
  tiny --set output.dir=$x/r-$from --set runtime.device=cuda --resume
  echo "-- resumed on cuda from a $from checkpoint"; python3 tools/compare_curves.py --tol 1e-3 $x/cuda/metrics.jsonl $x/r-$from/metrics.jsonl | tail -n 1
done
echo "== unit tests of the CUDA build (CPU paths, run here)"
for t in $b/tests/test_*; do [ -e "$t" ] || continue; $t >/tmp/t.log 2>&1 && echo "ok   $(basename $t)" || { echo "FAIL $(basename $t)"; tail -20 /tmp/t.log; }; done
echo "== distill version / inspect"
$b/distill version
$b/distill inspect $b/fixtures/tiny-deepseek-v3 | head -5

fi
if has tokref; then
echo "== HF reference ids"
python3 -c 'import tokenizers, transformers; print("tokenizers", tokenizers.__version__, "transformers", transformers.__version__)'
python3 tools/tokref.py tests/fixtures/tokenizer/wide_corpus.jsonl /tmp/kdcache/tokenizers "$OUT" --suffix .wide.ids.jsonl
[ -f .device/corpus.repaired.jsonl ] && python3 tools/tokref.py .device/corpus.repaired.jsonl /tmp/kdcache/tokenizers "$OUT" --suffix .ids.jsonl

fi
if has bench; then
echo "== tokenizer benchmark: distill vs HF tokenizers, same corpus, same machine"
python3 tools/make_bench_corpus.py /tmp/bench.jsonl 16
python3 tools/make_bench_corpus.py /tmp/cold.jsonl 0
nproc
for t in qwen3 llama3_1 deepseek_v3; do
  $b/distill bench tokenize --tokenizer /tmp/kdcache/tokenizers/$t --corpus /tmp/bench.jsonl --json
  python3 tools/bench_tokenizers.py /tmp/kdcache/tokenizers/$t /tmp/bench.jsonl
  echo "-- cold: each document once, one pass"
  $b/distill bench tokenize --tokenizer /tmp/kdcache/tokenizers/$t --corpus /tmp/cold.jsonl --repeat 1 --json
  python3 tools/bench_tokenizers.py /tmp/kdcache/tokenizers/$t /tmp/cold.jsonl --repeat 1
done
echo "== dataset store benchmark (no peer)"
TMPDIR=/tmp $b/distill data bench
fi
if has exportcheck; then
echo "== our trainer's export, loaded by transformers (refgen.py --from), checked by distill parity"
x=/tmp/kdx && rm -rf $x && mkdir -p $x
$b/distill init configs/models/tiny-qwen2 $x/model --tokenizer /tmp/kdcache/tokenizers/qwen3 --seed 3
DISTILL_PROGRESS_SECONDS=5 $b/distill sft configs/sft/tiny_cpu.yaml --set model=$x/model --set output.dir=$x/run \
  --set train.max_steps=6 --set output.export_dtype=bf16 --set output.shard_mb=8 --set data.max_len=128
ls -la $x/run/final
python3 tools/refgen.py --from $x/run/final --out sft-export && $b/distill parity /tmp/ref/sft-export
fi
if has sftbench; then
echo "== training-step throughput on the CPU: distill (reference backend) vs PyTorch, same shape, threads, steps"
nproc; $b/distill version
for thr in ${SFT_THREADS:-16}; do
  for shape in ${SFT_SHAPES:-"configs/models/qwen2.5-0.5b:512:3" "configs/models/tiny-qwen2:1024:5"}; do
    IFS=: read -r cfgdir seq steps <<<"$shape"
    DISTILL_PROFILE=1 OMP_NUM_THREADS=$thr $b/distill bench sft --model-config $cfgdir --seq $seq --steps $steps --json
    OMP_NUM_THREADS=$thr python3 tools/bench_sft_cpu.py $cfgdir --seq $seq --steps $steps
    [ -n "${SFT_EAGER:-}" ] && OMP_NUM_THREADS=$thr python3 tools/bench_sft_cpu.py $cfgdir --seq $seq --steps $steps --attn eager
  done
done
fi
if has teacherbench; then
echo "== teacher prefill/decode throughput on the CPU: distill (reference backend) vs transformers, same model folder, threads"
nproc; $b/distill version
x=/tmp/kdt && rm -rf $x && mkdir -p $x
for spec in ${TEACHER_MODELS:-"tiny-deepseek-v3:128:32" "tiny-qwen2:128:32" "qwen2.5-0.5b:128:16"}; do
  IFS=: read -r name P N <<<"$spec"
  case $name in *deepseek*) tk=deepseek_v3;; *) tk=qwen3;; esac
  $b/distill init configs/models/$name $x/$name --tokenizer /tmp/kdcache/tokenizers/$tk --seed 5 >/dev/null
  for thr in ${TEACHER_THREADS:-16}; do
    OMP_NUM_THREADS=$thr $b/distill bench teacher --model $x/$name --prompt $P --new $N --batch ${TEACHER_BATCH:-1,4,16} --json
    OMP_NUM_THREADS=$thr python3 tools/bench_teacher_cpu.py $x/$name --prompt $P --new $N --batch ${TEACHER_BATCH:-1,4,16}
  done
done
fi
if has gpusft; then
echo "== training-step throughput on the GPU: distill (CUDA) vs PyTorch + transformers, Qwen2.5-1.5B shape, same machine $(date -u +%T)"
for r in ${GPU_SFT_RUNS:-4096x2 8192x1 16384x1:recompute 32768x1:recompute 8192x1:docs8}; do
  seq=${r%%x*}; rest=${r#*x}; bsz=${rest%%:*}; extra=()
  case $r in *recompute*) extra+=(--recompute) ;; esac
  case $r in *docs8*) extra+=(--docs 8) ;; esac
  case $r in *twopass*) extra+=(--attn-two-pass) ;; esac
  $b/distill bench sft --model-config configs/models/qwen2.5-1.5b --device cuda --seq $seq --batch $bsz --steps 5 --json "${extra[@]}" 2>&1 | grep "^{\|error"
done
peer=(); for r in ${GPU_SFT_PEER:-4096x2 8192x1 8192x1:compile 16384x1:ckpt 32768x1}; do peer+=(--run $r); done
PYTHONUNBUFFERED=1 python3 tools/bench_sft_peer.py --model-config configs/models/qwen2.5-1.5b "${peer[@]}" --out $OUT/bench_sft_peer.json 2>&1 | grep "^{"
fi
if has gpuparity; then
echo "== distill parity --device cuda, the DeepSeek fixtures"
for fx in tiny-deepseek-v3 tiny-deepseek-v2 tiny-deepseek-v2-lite; do
  $b/distill parity $b/fixtures/$fx --device cuda >/tmp/p.log 2>&1; echo "rc $? $fx"; grep -v "^info" /tmp/p.log
done
fi
if has gpugen; then
echo "== bench generate (the CUDA teacher, Moonlight-16B-A3B shape, random bf16) and its transformers peer"
gen=(--model-config configs/models/moonlight-16b-a3b --new ${GPU_GEN_NEW:-256})
for dt in bf16 fp8 "bf16 --graphs" "fp8 --graphs"; do
  $b/distill bench generate "${gen[@]}" --dtype $dt --conc ${GPU_GEN_CONC:-1,64,256} --json 2>&1 | tee -a $OUT/bench_generate.jsonl
done
DISTILL_PROFILE=1 $b/distill bench generate "${gen[@]}" --conc ${GPU_GEN_PROFILE:-64} --new 32 2>&1 | grep -v "^{"
if [ -n "${GPU_GEN_PEER:-}" ]; then
  PYTHONUNBUFFERED=1 python3 tools/bench_generate_peer.py --model-config configs/models/moonlight-16b-a3b \
    --conc $GPU_GEN_PEER --new ${GPU_GEN_PEER_NEW:-128} --budget-s ${GPU_GEN_PEER_BUDGET:-300} --out $OUT/bench_generate_peer.json
fi
fi
if has gpugenjob; then
echo "== distill generate on CUDA under load: a tiny DeepSeek-V3 (random weights, the real vocabulary),"
echo "   ${GPU_JOB_PROMPTS:-1000} prompts x 4 samples, batch 64, twice with the same seed, sampled on the host, on the CPU"
x=/tmp/kdg && rm -rf $x && mkdir -p $x
$b/distill -q init configs/models/tiny-deepseek-v3 $x/ds --tokenizer /tmp/kdcache/tokenizers/deepseek_v3 --seed 3
python3 -c "
import json
with open('$x/p.jsonl', 'w') as f:
    for i in range(${GPU_JOB_PROMPTS:-1000}):
        f.write(json.dumps({'problem': f'What is {i} + {i * 7 % 13}? Think step by step.', 'answer': str(i + i * 7 % 13)}) + '\\n')"
texts() { $b/distill data export $1 --kind generations 2>/dev/null | python3 -c '
import json, sys
rows = [json.loads(l) for l in sys.stdin]
for r in sorted(rows, key=lambda r: (r["prompt_id"], r["sample"])):
    print(r["prompt_id"], r["sample"], r["finish_reason"], json.dumps(r["generation"]))'; }
for d in ${GPU_JOB_RUNS:-c1 c2 ch cpu}; do # ch: the CUDA teacher, sampled on the host (kd_sample); GPU_JOB_RUNS picks
  $b/distill data import $x/$d $x/p.jsonl --kind prompts >/dev/null 2>&1
  dev=cuda; [ $d = cpu ] && dev=cpu
  hs=0; [ $d = ch ] && hs=1
  DISTILL_HOST_SAMPLING=$hs /usr/bin/time -f "$d: %e s wall" $b/distill generate configs/generate/r1.yaml --set model=$x/ds --set input=$x/$d \
    --set samples=4 --set batch=64 --set sampling.max_new_tokens=64 --set runtime.device=$dev \
    --set progress=false 2>&1 | grep -v "^progress" | tail -3
  texts $x/$d > $x/$d.txt; echo "$d: $(wc -l < $x/$d.txt) records"
done
cmp -s $x/c1.txt $x/c2.txt && echo "cuda run 1 = cuda run 2: identical texts" || echo "FAIL cuda runs differ: $(diff $x/c1.txt $x/c2.txt | head -4)"
[ -e $x/ch.txt ] && { cmp -s $x/c1.txt $x/ch.txt && echo "GPU sampling = host sampling: identical texts" || echo "FAIL GPU and host sampling differ: $(diff $x/c1.txt $x/ch.txt | wc -l) lines"; }
[ -e $x/cpu.txt ] && python3 -c "
a = open('$x/c1.txt').read().splitlines(); b = open('$x/cpu.txt').read().splitlines()
print('cuda vs cpu (bf16 vs fp32): %d of %d texts identical' % (sum(x == y for x, y in zip(a, b)), len(b)))"
fi
if has gpuprofile; then
echo "== GPU time by op, one step at ${GPU_PROFILE_SEQ:-8192} tokens"
DISTILL_PROFILE=1 $b/distill bench sft --model-config configs/models/qwen2.5-1.5b --device cuda --seq ${GPU_PROFILE_SEQ:-8192} --steps 2 2>&1 | grep "^profile\|^bench"
fi
echo "== done $(date -u +%FT%TZ)"
