#!/usr/bin/env python3
"""Compare `segclip bench` (224², batch 1 visual forward) of two or more builds, alternating
them run by run so that each sees the same machine: on this shared host the speed drifts by
tens of percent within minutes, so one build timed after another says little.

Usage (keep a copy of each build first, e.g. `cp target/release/segclip /tmp/segclip-old`):
    python3 benches/alternate_bench.py ROUNDS BINARY_A BINARY_B [...] [-- extra bench args]
Prints per build the median of each run (`--iters 10`), the median of those medians and the
fastest single forward; for two builds, in how many rounds the second was faster.
"""
import json, statistics, subprocess, sys


def main():
    args = sys.argv[1:]
    extra = []
    if "--" in args:
        extra = args[args.index("--") + 1:]
        args = args[:args.index("--")]
    if len(args) < 3:
        sys.exit(__doc__)
    rounds, bins = int(args[0]), args[1:]
    medians = [[] for _ in bins]
    fastest = [float("inf") for _ in bins]
    for _ in range(rounds):
        for i, b in enumerate(bins):
            out = subprocess.run([b, "bench", "--iters", "10", *extra], capture_output=True, text=True, check=True)
            res = json.loads(out.stdout.strip().splitlines()[-1])
            medians[i].append(res["median_ms"])
            fastest[i] = min(fastest[i], res["min_ms"])
    for b, m, f in zip(bins, medians, fastest):
        print(f"{b}: run medians {' '.join(f'{x:.0f}' for x in m)} ms; median {statistics.median(m):.1f}, fastest {f:.1f}")
    if len(bins) == 2:
        wins = sum(y < x for x, y in zip(*medians))
        ratio = statistics.median(medians[1]) / statistics.median(medians[0])
        print(f"{bins[1]} faster in {wins} of {rounds} rounds; median ratio {ratio:.3f}")


if __name__ == "__main__":
    main()
