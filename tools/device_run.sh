#!/usr/bin/env bash
# device_run.sh - what one session runs on the GPU machine, in one command.
# Expects .device/ (carried, git-ignored) made on the development machine:
#   .device/distill, .device/tests/*   from `make cuda` (build-cuda/), stripped, each
#                                      optionally xz-compressed (NAME.xz)
#   .device/tokenizers.tgz             the tokenizers/ folder of the setup cache
#   .device/corpus.repaired.jsonl      (optional) a corpus to make reference ids for
# Writes logs and reference files under $OUT. Needs python3 with `tokenizers`.
# STEPS (default "gpu tokref bench") picks the parts to run; also exportcheck,
# sftbench, teacherbench.
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
if has gpu; then
echo "== GPU tests"
$b/tests/gpu_test_device
echo "== unit tests of the CUDA build (CPU paths, run here)"
for t in $b/tests/test_*; do $t >/tmp/t.log 2>&1 && echo "ok   $(basename $t)" || { echo "FAIL $(basename $t)"; tail -20 /tmp/t.log; }; done
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
echo "== done $(date -u +%FT%TZ)"
