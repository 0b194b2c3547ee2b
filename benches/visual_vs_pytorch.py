#!/usr/bin/env python3
"""Time SegCLIP's ViT-B/16 visual forward in this Rust code and in a PyTorch eager model of the
same dimensions, in one run, and print the ratio.

The PyTorch model is written here from the spec (shared/docs/segclip-spec.md, sections 1.2-1.4):
patch conv, ln_pre, 10 CLIP blocks on the patches, the semantic group module (2 cross-attention
blocks, grouped 1x1 K/V convs, argmax assignment, mean aggregation, proj_o), 2 blocks on the 8
region tokens, max-pool, ln_post, proj. Random weights: speed does not depend on them.

Usage (after `cargo build --release`):
    python3 benches/visual_vs_pytorch.py [--threads 2] [--pairs 30] [--configs 1x224,8x448]
    python3 benches/visual_vs_pytorch.py --rounds 3 --iters 5   # the older round-by-round mode
Needs `pip install torch`. Peak RSS of each Rust configuration is measured in its own process.

Paired mode (the default): the Rust binary runs as a `segclip bench --paced` process that times
one forward per line it reads, so Rust and PyTorch forwards alternate one by one (the order
swapped every pair) and each ratio compares two forwards taken a fraction of a second apart.
The reported ratio is the median of the per-pair ratios; on this shared machine the speed of
both drifts by tens of percent within minutes, which round-by-round medians do not cancel.
"""
import argparse, json, os, statistics, subprocess, sys, time

import torch
import torch.nn as nn
import torch.nn.functional as F

C, HEADS, D, L = 768, 12, 512, 8


class QuickGELU(nn.Module):
    def forward(self, x):
        return x * torch.sigmoid(1.702 * x)


class Block(nn.Module):
    """Pre-norm transformer block: CLIP's (QuickGELU) by default, timm's with `act=nn.GELU()`."""

    def __init__(self, w, heads, eps=1e-5, act=None):
        super().__init__()
        self.ln_1, self.ln_2 = nn.LayerNorm(w, eps=eps), nn.LayerNorm(w, eps=eps)
        self.attn = nn.MultiheadAttention(w, heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(w, 4 * w), act or QuickGELU(), nn.Linear(4 * w, w))

    def forward(self, x, mask=None):
        h = self.ln_1(x)
        x = x + self.attn(h, h, h, need_weights=False, attn_mask=mask)[0]
        return x + self.mlp(self.ln_2(x))


class CrossBlock(nn.Module):
    def __init__(self, w, heads):
        super().__init__()
        self.ln_x, self.ln_k, self.ln_2 = nn.LayerNorm(w), nn.LayerNorm(w), nn.LayerNorm(w)
        self.attn = nn.MultiheadAttention(w, heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(w, 4 * w), QuickGELU(), nn.Linear(4 * w, w))

    def forward(self, q, kv):
        kv = self.ln_k(kv)
        q = q + self.attn(self.ln_x(q), kv, kv, need_weights=False)[0]
        return q + self.mlp(self.ln_2(q))


class Group(nn.Module):
    def __init__(self):
        super().__init__()
        self.center = nn.Parameter(torch.randn(L, C) * 0.02)
        self.norm, self.cross_ln, self.k_ln = nn.LayerNorm(C), nn.LayerNorm(C), nn.LayerNorm(C)
        self.cross = nn.ModuleList([CrossBlock(C, HEADS) for _ in range(2)])
        self.k_conv = nn.Conv1d(C, C, 1, groups=12, bias=False)
        self.v_conv = nn.Conv1d(C, C, 1, groups=12, bias=False)
        self.proj_o = nn.Sequential(nn.LayerNorm(C), nn.Linear(C, 4 * C), nn.GELU(), nn.Linear(4 * C, C), QuickGELU())

    def forward(self, p):
        b = p.shape[0]
        pn = self.norm(p)
        q = self.center.unsqueeze(0).expand(b, -1, -1)
        for blk in self.cross:
            q = blk(q, torch.cat([q, p], 1))
        q = self.cross_ln(q)
        k = self.k_ln(self.k_conv(pn.transpose(1, 2)).transpose(1, 2))
        v = self.v_conv(pn.transpose(1, 2)).transpose(1, 2)
        a = q @ k.transpose(1, 2)
        soft = a.softmax(1)
        hard = F.one_hot(soft.argmax(1), L).transpose(1, 2).float()
        s = hard @ v / hard.sum(-1, keepdim=True).clamp(min=1)
        return self.proj_o(q + s), soft


class SegClipVisual(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, C, 16, 16, bias=False)
        self.pos = nn.Parameter(torch.randn(196, C) * 0.02)
        self.ln_pre, self.ln_post = nn.LayerNorm(C), nn.LayerNorm(C)
        self.layers0 = nn.Sequential(*[Block(C, HEADS) for _ in range(10)])
        self.group = Group()
        self.layers2 = nn.Sequential(*[Block(C, HEADS) for _ in range(2)])
        self.proj = nn.Parameter(torch.randn(C, D) * C ** -0.5)

    def forward(self, img):
        x = self.conv1(img).flatten(2).transpose(1, 2)
        g = int(x.shape[1] ** 0.5)
        pos = self.pos
        if g != 14:
            pos = F.interpolate(pos.reshape(1, 14, 14, C).permute(0, 3, 1, 2), size=(g, g), mode="bicubic",
                                align_corners=False).permute(0, 2, 3, 1).reshape(-1, C)
        x = self.layers0(self.ln_pre(x + pos))
        r, soft = self.group(x)
        r = self.layers2(r)
        h = self.ln_post(torch.cat([r.max(1, keepdim=True)[0], r], 1)) @ self.proj
        return h[:, 0], h[:, 1:], soft


def torch_time(model, batch, size, warmup, iters):
    x = torch.randn(batch, 3, size, size)
    with torch.inference_mode():
        for _ in range(warmup):
            model(x)
        ts = []
        for _ in range(iters):
            t = time.perf_counter()
            model(x)
            ts.append((time.perf_counter() - t) * 1e3)
    return statistics.median(ts)


def rust_time(binary, batch, size, warmup, iters):
    cmd = ["/usr/bin/time", "-f", "%M", binary, "bench", "--size", str(size), "--batch", str(batch),
           "--iters", str(iters), "--warmup", str(warmup)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    res = json.loads(out.stdout.strip().splitlines()[-1])
    res["peak_rss_mib_time"] = int(out.stderr.strip().splitlines()[-1]) / 1024
    return res


def paired_times(binary, model, batch, size, pairs):
    """Alternate single Rust and PyTorch forwards `pairs` times (order swapped every pair);
    returns the Rust times, the PyTorch times and Rust's peak RSS (MiB)."""
    cmd = ["/usr/bin/time", "-f", "%M", binary, "bench", "--size", str(size), "--batch", str(batch),
           "--warmup", "1", "--paced"]
    p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if p.stdout.readline().strip() != "ready":
        sys.exit(f"{binary} bench --paced did not start: {p.stderr.read()}")
    x = torch.randn(batch, 3, size, size)

    def rust():
        p.stdin.write("\n")
        p.stdin.flush()
        return float(p.stdout.readline())

    def torch_once():
        t = time.perf_counter()
        model(x)
        return (time.perf_counter() - t) * 1e3

    rs, ts = [], []
    with torch.inference_mode():
        model(x)
        for i in range(pairs):
            if i % 2 == 0:
                rs.append(rust())
                ts.append(torch_once())
            else:
                ts.append(torch_once())
                rs.append(rust())
    p.stdin.close()
    p.stdout.read()
    p.wait()
    rss = int(p.stderr.read().strip().splitlines()[-1]) / 1024
    return rs, ts, rss


def segment_peak_rss(binary, root):
    """Peak RSS of `segclip segment` on a sample photo with real-size (seeded) weights."""
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        w = os.path.join(d, "vit_b16_seeded.safetensors")
        subprocess.run([binary, "bench", "--save-seeded", w], check=True, capture_output=True)
        img = os.path.join(root, "datasets", "samples", "coffee.png")
        cmd = ["/usr/bin/time", "-f", "%M %e", binary, "segment", "--image", img, "--classes",
               "cup,saucer,spoon,table,coffee", "--weights", w, "--out", os.path.join(d, "out")]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True)
        kb, secs = out.stderr.strip().splitlines()[-1].split()
        return int(kb) / 1024, float(secs)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--pairs", type=int, default=30, help="alternating rust/torch forwards per config")
    ap.add_argument("--rounds", type=int, default=0,
                    help="instead of pairs: this many rounds of --iters forwards each, rust then torch")
    ap.add_argument("--iters", type=int, default=5, help="timed forwards per round (with --rounds)")
    ap.add_argument("--configs", default="1x224,8x224,1x448,8x448")
    ap.add_argument("--no-segment", action="store_true")
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
    ap.add_argument("--binary", default=os.path.join(root, "target", "release", "segclip"))
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model = SegClipVisual().eval()
    if a.rounds:
        print(f"torch {torch.__version__}, {a.threads} threads; per round the median of {a.iters} forwards, "
              f"{a.rounds} alternating rounds; ratio = median over rounds of rust/torch")
    else:
        print(f"torch {torch.__version__}, {a.threads} threads; {a.pairs} alternating pairs of single forwards "
              f"(large configs: a third); ratio = median over pairs of rust/torch")
    print(f"{'config':>8} {'rust ms':>10} {'torch ms':>10} {'ratio':>7} {'rust peak RSS':>14}")
    for cfg in a.configs.split(","):
        batch, size = map(int, cfg.split("x"))
        large = batch * size * size > 224 * 224 * 8
        if a.rounds:
            iters = max(2, a.iters // 2) if large else a.iters
            rs, ts, rss = [], [], 0
            for _ in range(a.rounds):
                r = rust_time(a.binary, batch, size, 1, iters)
                rs.append(r["median_ms"])
                rss = max(rss, r["peak_rss_mib_time"])
                ts.append(torch_time(model, batch, size, 1, iters))
        else:
            rs, ts, rss = paired_times(a.binary, model, batch, size, max(3, a.pairs // 3) if large else a.pairs)
        ratio = statistics.median(r / t for r, t in zip(rs, ts))
        print(f"{cfg:>8} {statistics.median(rs):>10.1f} {statistics.median(ts):>10.1f} {ratio:>7.2f} {rss:>10.0f} MiB",
              flush=True)
    if not a.no_segment:
        rss, secs = segment_peak_rss(a.binary, root)
        print(f"segment datasets/samples/coffee.png (600x400, 2 crops), ViT-B/16-size weights: "
              f"peak RSS {rss:.0f} MiB, {secs:.1f} s wall (load included)")


if __name__ == "__main__":
    sys.exit(main())
