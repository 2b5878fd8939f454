# make_sft_chats.py OUT.jsonl [N] - small R1-style chats (arithmetic with a
# <think> block and a boxed answer) for the trainer's tests and the demo.
# Deterministic: the same N gives the same file.
import json, random, sys
out, n = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 96
r = random.Random(20261123)
with open(out, "w") as f:
    for i in range(n):
        a, b = r.randint(2, 99), r.randint(2, 99)
        op = r.choice(["+", "-", "*"])
        v = a + b if op == "+" else a - b if op == "-" else a * b
        steps = r.randint(1, 4)
        think = " ".join(f"Check {a} {op} {b} again: it is {v}." for _ in range(steps))
        msgs = []
        if i % 3 == 0:
            msgs.append({"role": "system", "content": "You are a careful math assistant."})
        msgs.append({"role": "user", "content": f"What is {a} {op} {b}?"})
        msgs.append({"role": "assistant", "content": f"<think>\n{think}\n</think>\nThe answer is \\boxed{{{v}}}."})
        f.write(json.dumps({"messages": msgs}) + "\n")
