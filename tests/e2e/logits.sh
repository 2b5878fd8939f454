#!/usr/bin/env bash
# logits.sh DISTILL_BIN FIXTURES_DIR SCRATCH_DIR - `distill logits` writes the
# logits of a sequence for a student (qwen2) and a teacher (deepseek_v3)
# model; each equals the transformers logits of the fixture's ref_infer for
# the same ids (relative error under 1e-4); bad ids and usage are refused.
set -euo pipefail
if [ $# -ne 3 ]; then
    echo "usage: $0 DISTILL_BIN FIXTURES_DIR SCRATCH_DIR" >&2
    exit 2
fi
BIN=$1
FIX=$2
TMP=$3
rm -rf "$TMP" && mkdir -p "$TMP"
failures=0
fail() {
    echo "FAIL: $*" >&2
    failures=$((failures + 1))
}
# read_st FILE NAME: a tensor of a safetensors file as text (python3, no numpy)
cat >"$TMP/st.py" <<'PY'
import json, struct, sys
def read(path, name):
    b = open(path, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    h = json.loads(b[8:8 + n])
    t = h[name]
    lo, hi = t["data_offsets"]
    raw = b[8 + n + lo:8 + n + hi]
    fmt = {"F32": "f", "I64": "q"}[t["dtype"]]
    return list(struct.unpack("<%d%s" % (len(raw) // struct.calcsize(fmt), fmt), raw))
if sys.argv[1] == "ids":
    print(",".join(str(x) for x in read(sys.argv[2], "input_ids")))
else:
    a, r = read(sys.argv[2], "logits"), read(sys.argv[3], "logits")
    assert len(a) == len(r), (len(a), len(r))
    d = sum((x - y) ** 2 for x, y in zip(a, r)) ** 0.5
    n = sum(y * y for y in r) ** 0.5
    print("%.3g" % (d / n))
    sys.exit(0 if d / n < 1e-4 else 1)
PY
for fx in tiny-qwen2 tiny-deepseek-v3; do
    ids=$(python3 "$TMP/st.py" ids "$FIX/$fx/ref_infer.safetensors")
    "$BIN" logits --model "$FIX/$fx" --ids "$ids" --out "$TMP/$fx.safetensors" >/dev/null ||
        fail "$fx: distill logits failed"
    rel=$(python3 "$TMP/st.py" cmp "$TMP/$fx.safetensors" "$FIX/$fx/ref_infer.safetensors") ||
        fail "$fx: logits differ from transformers' (rel $rel)"
    echo "$fx: logits vs transformers rel $rel"
done
set +e
"$BIN" logits --model "$FIX/tiny-qwen2" --ids 1,2,x --out "$TMP/x.safetensors" 2>"$TMP/err"
[ $? -eq 2 ] && grep -q "item 3" "$TMP/err" || fail "bad id list: $(cat "$TMP/err")"
"$BIN" logits --model "$FIX/tiny-qwen2" --ids 1,100000 --out "$TMP/x.safetensors" 2>"$TMP/err"
[ $? -eq 1 ] && grep -q "outside" "$TMP/err" || fail "id out of range: $(cat "$TMP/err")"
"$BIN" logits --model "$FIX/tiny-qwen2" --ids 1 2>/dev/null
[ $? -eq 2 ] || fail "missing --out"
[ ! -e "$TMP/x.safetensors" ] || fail "a failed run left a file"
set -e
if [ "$failures" -ne 0 ]; then
    echo "$failures failure(s)" >&2
    exit 1
fi
echo "logits.sh: all passed"
