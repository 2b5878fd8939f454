#!/usr/bin/env python3
"""Compare two `distill sft` loss curves (metrics.jsonl), e.g. the same recipe
trained on the CPU (fp32, the reference) and on CUDA (bf16):

  python3 tools/compare_curves.py runs/a/metrics.jsonl runs/b/metrics.jsonl [--tol 0.03]

Prints the train and eval losses side by side with their relative difference,
and exits 1 when any step differs by more than --tol (relative to the first
file's loss) or when the two files do not cover the same steps.
"""
import argparse
import json
import sys


def load(path):
    train, ev = {}, {}
    with open(path) as f:
        for line in f:
            r = json.loads(line)
            if "loss" in r:
                train[r["step"]] = r["loss"]
            if "eval_loss" in r:
                ev[r["step"]] = r["eval_loss"]
    return train, ev


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("reference")
    ap.add_argument("other")
    ap.add_argument("--tol", type=float, default=0.03, help="largest relative difference (default 0.03)")
    a = ap.parse_args()
    (rt, re_), (ot, oe) = load(a.reference), load(a.other)
    if sorted(rt) != sorted(ot) or not rt:
        print(f"the curves cover different steps: {len(rt)} vs {len(ot)}")
        return 1
    worst = 0.0
    print(f"{'step':>5} {'reference':>11} {'other':>11} {'rel diff':>9}")
    for s in sorted(rt):
        d = abs(ot[s] - rt[s]) / abs(rt[s])
        worst = max(worst, d)
        print(f"{s:5d} {rt[s]:11.5f} {ot[s]:11.5f} {d:9.2e}")
    for s in sorted(set(re_) & set(oe)):
        d = abs(oe[s] - re_[s]) / abs(re_[s])
        worst = max(worst, d)
        print(f"eval@{s:<3d} {re_[s]:9.5f} {oe[s]:11.5f} {d:9.2e}")
    ok = worst <= a.tol
    print(f"{'ok' if ok else 'FAIL'}: worst relative difference {worst:.2e} over {len(rt)} steps (tol {a.tol:g})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
