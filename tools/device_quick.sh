#!/usr/bin/env bash
# device_quick.sh - a short GPU check for a session with little device time:
# the new GPU tests (each bounded) and `bench generate` (QUICK_DTYPES: DTYPE[:graphs][:splitN][:pathN]
# each, e.g. "bf16:graphs bf16:graphs:split4 fp8:graphs:path3"; pathN sets KD_CU_MOE_PATH; no peer).
# Same .device/ layout as device_run.sh; logs under $OUT.
set -uo pipefail
: "${OUT:?OUT must be set}"
mkdir -p /work && { [ -e /work/main ] || ln -s "$PWD" /work/main; }
b=/work/main/build-cuda
mkdir -p $b/tests/tmp $b/fixtures
for f in .device/distill.xz .device/tests/*.xz; do dst=$b/${f#.device/}; dst=${dst%.xz}; xz -dc "$f" >"$dst" && chmod +x "$dst"; done
for f in tests/fixtures/hf/*.tar.gz; do tar -xzf "$f" -C $b/fixtures; done
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
for t in ${QUICK_TESTS:-teacher_cuda moe mla sample}; do
  [ -x $b/tests/gpu_test_$t ] || continue
  timeout ${QUICK_TEST_S:-90} $b/tests/gpu_test_$t >$OUT/$t.log 2>&1; echo "== gpu_test_$t rc=$?"
  grep -v "^ok\|^  linear" $OUT/$t.log | tail -${QUICK_TAIL:-25}
done
for dt in ${QUICK_DTYPES:-bf16 fp8 bf16:graphs}; do # DTYPE[:graphs][:splitN][:pathN]
  g=; p=; case $dt in *:graphs*) g=--graphs;; esac
  s=${dt#*:split}; [ "$s" != "$dt" ] && g="$g --split-kv ${s%%:*}"
  s=${dt#*:path}; [ "$s" != "$dt" ] && p=${s%%:*} && echo "(KD_CU_MOE_PATH=$p)"
  dt=${dt%%:*}
  KD_CU_MOE_PATH=$p timeout ${QUICK_GEN_S:-100} $b/distill bench generate --model-config configs/models/moonlight-16b-a3b \
    --dtype $dt $g --new ${QUICK_NEW:-128} --conc ${QUICK_CONC:-1,64,256} 2>&1 | tee -a $OUT/generate.log | grep -v "^progress"
done
[ -n "${QUICK_PROFILE:-}" ] && DISTILL_PROFILE=1 timeout 60 $b/distill bench generate \
  --model-config configs/models/moonlight-16b-a3b --conc $QUICK_PROFILE --new 16 2>&1 | grep "^profile\|^bench"
# QUICK_NCU=C: each kernel of one decode step at C sequences timed by ncu (caches left warm), $OUT/ncu.csv
if [ -n "${QUICK_NCU:-}" ]; then
  DISTILL_PROFILE=1 timeout 150 ncu --clock-control none --cache-control none --profile-from-start off \
    --metrics gpu__time_duration.sum --csv --page raw --launch-count 700 $b/distill bench generate \
    --model-config configs/models/moonlight-16b-a3b --conc $QUICK_NCU --new 4 >$OUT/ncu.csv 2>$OUT/ncu.err
  echo "== ncu rc=$? $(wc -l <$OUT/ncu.csv) lines"
fi
echo "== done $(date -u +%T)"
