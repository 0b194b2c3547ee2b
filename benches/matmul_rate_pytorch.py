#!/usr/bin/env python3
"""PyTorch's f32 matmul rate on this machine (best of 20 calls), for the ViT-B/16 linear layers'
shapes and two large squares: the ceiling a GEMM here can be held to.

Usage: python3 benches/matmul_rate_pytorch.py [--threads 2]
"""
import argparse, os, time

import torch


def rate(m, k, n, iters=20):
    a, b = torch.randn(m, k), torch.randn(k, n)
    for _ in range(3):
        a @ b
    best = min(_timed(lambda: a @ b) for _ in range(iters))
    return 2 * m * k * n / best / 1e9


def _timed(f):
    t = time.perf_counter()
    f()
    return time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    print(f"torch {torch.__version__}, {a.threads} threads")
    for shape in [(196, 768, 2304), (196, 768, 3072), (196, 3072, 768), (1568, 768, 3072),
                  (2048, 2048, 2048), (4096, 4096, 4096)]:
        print(f"{'x'.join(map(str, shape)):>16}  {rate(*shape):6.1f} GFLOP/s")


if __name__ == "__main__":
    main()
