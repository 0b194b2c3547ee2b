#!/usr/bin/env python3
"""Time one SegCLIP ViT-B/16 training step (forward, backward, optimiser) in this Rust code and
in a PyTorch eager model of the same dimensions, in one run, and print the ratio.

The PyTorch model is written here from the spec (shared/docs/segclip-spec.md, sections 1.2-1.8
and 2): the visual path with the Gumbel straight-through assignment, the text tower (12 blocks,
width 512, causal, 32 tokens), the masked branch (layers0 on the 48 visible patches, the group
module, the reconstruct layer, 2 `layers_mae2` blocks), the MAE decoder (3 blocks of width 384),
the three losses, global gradient-norm clipping and AdamW over every parameter. The Rust side
(`segclip bench --train`) trains the same sizes from scratch (every parameter trainable, as
here) on the same kind of inputs. Random weights and inputs: speed does not depend on them.

Usage (after `cargo build --release`):
    python3 benches/train_step_vs_pytorch.py [--batch 8] [--threads 2] [--iters 3] [--rounds 2]
Needs `pip install torch`. Peak RSS: the Rust process's own (VmHWM), and torch's process.
"""
import argparse, json, os, resource, statistics, subprocess, sys, time

import torch
import torch.nn as nn
import torch.nn.functional as F

from visual_vs_pytorch import Block, CrossBlock, QuickGELU  # the shared CLIP blocks

C, HEADS, D, L, TW, TH, VOCAB, CTX = 768, 12, 512, 8, 512, 8, 49408, 32


class Group(nn.Module):
    """Spec 1.3 with the training assignment: softmax over centers of (a + gumbel) / tau, hard
    one-hot straight through."""

    def __init__(self):
        super().__init__()
        self.center = nn.Parameter(torch.randn(L, C) * 0.02)
        self.norm, self.cross_ln, self.k_ln = nn.LayerNorm(C), nn.LayerNorm(C), nn.LayerNorm(C)
        self.cross = nn.ModuleList([CrossBlock(C, HEADS) for _ in range(2)])
        self.k_conv = nn.Conv1d(C, C, 1, groups=12, bias=False)
        self.v_conv = nn.Conv1d(C, C, 1, groups=12, bias=False)
        self.proj_o = nn.Sequential(nn.LayerNorm(C), nn.Linear(C, 4 * C), nn.GELU(), nn.Linear(4 * C, C), QuickGELU())

    def forward(self, p, gumbel):
        b = p.shape[0]
        pn = self.norm(p)
        q = self.center.unsqueeze(0).expand(b, -1, -1)
        for blk in self.cross:
            q = blk(q, torch.cat([q, p], 1))
        q = self.cross_ln(q)
        k = self.k_ln(self.k_conv(pn.transpose(1, 2)).transpose(1, 2))
        v = self.v_conv(pn.transpose(1, 2)).transpose(1, 2)
        a = q @ k.transpose(1, 2)
        soft = ((a + gumbel) / 0.9).softmax(1)
        hard = F.one_hot(soft.argmax(1), L).transpose(1, 2).float() - soft.detach() + soft
        s = hard @ v / hard.sum(-1, keepdim=True).clamp(min=1)
        return self.proj_o(q + s), hard


class Visual(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, C, 16, 16, bias=False)
        self.pos = nn.Parameter(torch.randn(196, C) * 0.02)
        self.ln_pre, self.ln_post = nn.LayerNorm(C), nn.LayerNorm(C)
        self.layers0 = nn.ModuleList([Block(C, HEADS) for _ in range(10)])
        self.group = Group()
        self.layers2 = nn.ModuleList([Block(C, HEADS) for _ in range(2)])
        self.proj = nn.Parameter(torch.randn(C, D) * C ** -0.5)
        self.recon = nn.Linear(L, L)
        self.layers_mae2 = nn.ModuleList([Block(C, HEADS) for _ in range(2)])

    def patches(self, img, keep=None):
        x = self.ln_pre(self.conv1(img).flatten(2).transpose(1, 2) + self.pos)
        if keep is not None:
            x = torch.gather(x, 1, keep.unsqueeze(-1).expand(-1, -1, C))
        for blk in self.layers0:
            x = blk(x)
        return x

    def forward(self, img, gumbel):
        r, hard = self.group(self.patches(img), gumbel)
        for blk in self.layers2:
            r = blk(r)
        h = self.ln_post(torch.cat([r.max(1, keepdim=True)[0], r], 1)) @ self.proj
        return h[:, 0], hard

    def masked(self, img, keep, gumbel):
        s, hard = self.group(self.patches(img, keep), gumbel)
        y = F.silu(self.recon(hard.transpose(1, 2)) @ s)  # QuickGELU-like; same cost
        for blk in self.layers_mae2:
            y = blk(y)
        return torch.cat([y.mean(1, keepdim=True), y], 1)


class Text(nn.Module):
    def __init__(self):
        super().__init__()
        self.tok = nn.Embedding(VOCAB, TW)
        self.pos = nn.Parameter(torch.randn(77, TW) * 0.01)
        self.blocks = nn.ModuleList([Block(TW, TH) for _ in range(12)])
        self.ln_final = nn.LayerNorm(TW)
        self.proj = nn.Parameter(torch.randn(TW, D) * TW ** -0.5)
        self.register_buffer("mask", torch.full((CTX, CTX), float("-inf")).triu(1))

    def forward(self, ids):
        x = self.tok(ids) + self.pos[: ids.shape[1]]
        for blk in self.blocks:
            x = blk(x, self.mask)
        x = self.ln_final(x[torch.arange(ids.shape[0]), ids.argmax(-1)])
        return x @ self.proj


class Decoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(C, 384)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, 384))
        self.register_buffer("pos", torch.randn(1, 197, 384))
        self.blocks = nn.ModuleList([Block(384, 8, eps=1e-6, act=nn.GELU()) for _ in range(3)])
        self.norm = nn.LayerNorm(384, eps=1e-6)
        self.pred = nn.Linear(384, 768)

    def forward(self, enc, restore):
        z = self.embed(enc)
        b, n = z.shape[0], restore.shape[1]
        z = torch.cat([z, self.mask_token.expand(b, n - z.shape[1], -1)], 1)
        z = torch.gather(z, 1, restore.unsqueeze(-1).expand(-1, -1, 384)) + self.pos
        for blk in self.blocks:
            z = blk(z)
        return self.pred(self.norm(z))[:, 1:]


class SegClip(nn.Module):
    def __init__(self):
        super().__init__()
        self.visual, self.text, self.decoder = Visual(), Text(), Decoder()
        self.logit_scale = nn.Parameter(torch.tensor(2.659))

    def forward(self, img, ids, seg, g1, keep, restore, mask, g2):
        b = img.shape[0]
        t = F.normalize(self.text(ids), dim=-1)
        v, hard = self.visual(img, g1)
        v = F.normalize(v, dim=-1)
        s = self.logit_scale.exp().clamp(max=100)
        lab = torch.arange(b)
        l_con = (F.cross_entropy(s * t @ v.T, lab) + F.cross_entropy(s * v @ t.T, lab)) / 2
        a = hard.transpose(1, 2)
        same = (seg[:, :, None] == seg[:, None, :]).float()
        mbar = same @ a / same.sum(-1, keepdim=True).clamp(min=1)
        coef = b * 196 * L
        l_kl = (F.kl_div(F.log_softmax(a, -1), F.softmax(mbar, -1), reduction="sum")
                + F.kl_div(F.log_softmax(mbar, -1), F.softmax(a, -1), reduction="sum")) / coef / 2
        pred = self.decoder(self.visual.masked(img, keep, g2), restore)
        target = img.reshape(b, 3, 14, 16, 14, 16).permute(0, 2, 4, 3, 5, 1).reshape(b, 196, 768)
        m = mask[:, 1:]
        l_mae = (((pred - target) ** 2).mean(-1) * m).sum() / m.sum()
        return l_con + l_kl + l_mae


def torch_inputs(b):
    g = torch.Generator().manual_seed(0)
    img = torch.randn(b, 3, 224, 224, generator=g)
    ids = torch.randint(300, 40000, (b, CTX), generator=g)
    ids[:, 0], ids[:, 21], ids[:, 22:] = 49406, 49407, 0
    seg = torch.randint(0, 40, (b, 196), generator=g)
    g1 = -torch.log(-torch.log(torch.rand(b, L, 196, generator=g)))
    noise = torch.rand(b, 196, generator=g)
    shuffle = noise.argsort(1)
    keep = shuffle[:, :48]
    restore = torch.cat([torch.zeros(b, 1, dtype=torch.long), shuffle.argsort(1) + 1], 1)
    mask = torch.ones(b, 197)
    mask[:, 0] = 0
    mask[torch.arange(b)[:, None], keep + 1] = 0
    g2 = -torch.log(-torch.log(torch.rand(b, L, 48, generator=g)))
    return img, ids, seg, g1, keep, restore, mask, g2


def torch_time(model, opt, inputs, warmup, iters):
    """Median step time and the (forward, backward, update) split of the median step, in ms."""
    def step():
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = model(*inputs)
        t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        t3 = time.perf_counter()
        return [(t3 - t0) * 1e3, (t1 - t0) * 1e3, (t2 - t1) * 1e3, (t3 - t2) * 1e3]
    for _ in range(warmup):
        step()
    runs = sorted(step() for _ in range(iters))
    return runs[len(runs) // 2]


def rust_time(binary, batch, warmup, iters):
    cmd = [binary, "bench", "--train", "--batch", str(batch), "--iters", str(iters), "--warmup", str(warmup)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--iters", type=int, default=3, help="timed steps per round")
    ap.add_argument("--rounds", type=int, default=2, help="alternating rust/torch rounds")
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
    ap.add_argument("--binary", default=os.path.join(root, "target", "release", "segclip"))
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model = SegClip().train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.05)
    inputs = torch_inputs(a.batch)
    n = sum(p.numel() for p in model.parameters())
    print(f"torch {torch.__version__}, {a.threads} threads, {n / 1e6:.1f} M trainable parameters, batch {a.batch}; "
          f"per round the median of {a.iters} steps after 1 warm-up, {a.rounds} alternating rounds")
    rs, ts, rss, phases, tphases = [], [], 0, None, None
    for _ in range(a.rounds):
        r = rust_time(a.binary, a.batch, 1, a.iters)
        rs.append(r["median_ms"])
        rss = max(rss, r["peak_rss_mib"] or 0)
        phases = r
        tphases = torch_time(model, opt, inputs, 1, a.iters)
        ts.append(tphases[0])
    ratio = statistics.median(r / t for r, t in zip(rs, ts))
    torch_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"rust  {statistics.median(rs):8.0f} ms/step (forward {phases['forward_ms']:.0f}, backward "
          f"{phases['backward_ms']:.0f}, update {phases['update_ms']:.0f}), peak RSS {rss:.0f} MiB")
    print(f"torch {statistics.median(ts):8.0f} ms/step (forward {tphases[1]:.0f}, backward {tphases[2]:.0f}, "
          f"update {tphases[3]:.0f}; last round's median step), peak RSS {torch_rss:.0f} MiB")
    pairs = ", ".join(f"{r:.0f}/{t:.0f} = {r / t:.2f}" for r, t in zip(rs, ts))
    print(f"per round rust/torch: {pairs}")
    print(f"ratio rust/torch {ratio:.2f} (median of the rounds' ratios; "
          f"ratio of the medians {statistics.median(rs) / statistics.median(ts):.2f})")


if __name__ == "__main__":
    sys.exit(main())
