"""Why does the group module keep a tower trained from nothing from learning? A PyTorch check,
independent of our candle code (docs/benchmarks.md, learning benchmark, session 11).

A small SegCLIP visual path as spec 1.3 writes it (the learning benchmark's dimensions: width 128,
2 heads, 4 `layers0` blocks, 8 centers, 2 cross-attention blocks, grouped K/V convolutions, hard
Gumbel assignment, `proj_o` without residual, 1 `layers2` block, max over regions, `ln_post`,
`proj` to 64), with three 3x3 stride-2 convolutions as its stem and fixed sin-cos positions, is
trained *with labels* (binary cross-entropy on which shape and which colour a one-object scene
holds; a linear head on the image embedding; batch 16, AdamW) and scored every 100 steps on 300
held-back one-object scenes: 4-way shape and 5-way colour accuracy (argmax). Scenes come from our
generator (`cargo run --release --example synth_tensors -- DIR 30000 1`). One thread.

--v picks variants (comma-separated): `spec` (none), `meanpool` (no group module: the mean of
the patch tokens after `layers0`), `resid` (R = x + proj_o(x), x = q + S), `noq` (proj_o(S): no
center in the region token), `poinit` (proj_o's linears N(0, 2/fan_in)), `scale` (assignment
logits / sqrt(C)), `rmean` (mean over regions instead of max). `--stem patch` takes the 8x8
patch convolution instead; `--projstd` is the init scale of `proj`.

    python3 benches/group_path_pytorch.py DIR [--v VARIANTS] [--steps N] [--lr LR]
"""
import json, sys, time, argparse
import numpy as np, torch, torch.nn as nn, torch.nn.functional as F
p = argparse.ArgumentParser()
p.add_argument("root"); p.add_argument("--steps", type=int, default=400)
p.add_argument("--lr", type=float, default=5e-4); p.add_argument("--v", default="spec")
p.add_argument("--projstd", type=float, default=0.02); p.add_argument("--stem", default="conv")
a = p.parse_args(); V = set(a.v.split(","))
torch.manual_seed(0); torch.set_num_threads(1)
meta = json.load(open(f"{a.root}/meta.json")); n, s = meta["count"], meta["size"]
img = np.fromfile(f"{a.root}/images.u8", np.uint8).reshape(n, s, s, 3)
lab = np.fromfile(f"{a.root}/labels.u8", np.uint8).reshape(n, s, s)
y = np.zeros((n, 9), np.float32); single = np.zeros(n, bool)
for i in range(n):
    ids = np.unique(lab[i]); ids = ids[ids > 0]
    y[i, (ids - 1) % 4] = 1; y[i, 4 + (ids - 1) // 4] = 1; single[i] = len(ids) == 1
keep = np.where(single)[0]; tr, te = keep[:-300], keep[-300:]
x = (torch.tensor(img).permute(0, 3, 1, 2).float() / 255.0 - 0.45) / 0.27; y = torch.tensor(y)
w, g, L = 128, s // 8, 8
def sincos(g, w):
    om = 1.0 / 10000 ** (np.arange(w // 4) / (w // 4)); yy, xx = np.meshgrid(np.arange(g), np.arange(g), indexing="ij")
    xx, yy = xx.reshape(-1, 1) * om, yy.reshape(-1, 1) * om
    return torch.tensor(np.concatenate([np.sin(xx), np.cos(xx), np.sin(yy), np.cos(yy)], 1), dtype=torch.float32)
class QG(nn.Module):
    def forward(self, x): return x * torch.sigmoid(1.702 * x)
def blk(): return nn.TransformerEncoderLayer(w, 2, 4 * w, 0.0, "gelu", batch_first=True, norm_first=True)
class Cross(nn.Module):
    def __init__(s_):
        super().__init__(); s_.lx, s_.lk, s_.l2 = nn.LayerNorm(w), nn.LayerNorm(w), nn.LayerNorm(w)
        s_.att = nn.MultiheadAttention(w, 2, batch_first=True); s_.mlp = nn.Sequential(nn.Linear(w, 4 * w), QG(), nn.Linear(4 * w, w))
    def forward(s_, q, kv):
        k = s_.lk(kv); q = q + s_.att(s_.lx(q), k, k)[0]; return q + s_.mlp(s_.l2(q))
class M(nn.Module):
    def __init__(s_):
        super().__init__()
        s_.stem = nn.Sequential(nn.Conv2d(3, 32, 3, 2, 1), nn.ReLU(), nn.Conv2d(32, 64, 3, 2, 1), nn.ReLU(), nn.Conv2d(64, w, 3, 2, 1)) if a.stem == "conv" else nn.Conv2d(3, w, 8, 8)
        s_.register_buffer("pos", sincos(g, w)); s_.ln = nn.LayerNorm(w)
        s_.l0 = nn.ModuleList(blk() for _ in range(4)); s_.l2 = nn.ModuleList(blk() for _ in range(1))
        s_.center = nn.Parameter(torch.randn(L, w) * 0.02); s_.norm = nn.LayerNorm(w)
        s_.cross = nn.ModuleList(Cross() for _ in range(2)); s_.cln, s_.kln = nn.LayerNorm(w), nn.LayerNorm(w)
        s_.kc = nn.Conv1d(w, w, 1, groups=2, bias=False); s_.vc = nn.Conv1d(w, w, 1, groups=2, bias=False)
        s_.po = nn.Sequential(nn.LayerNorm(w), nn.Linear(w, 4 * w), nn.GELU(), nn.Linear(4 * w, w), QG())
        if "poinit" in V:
            for lin in (s_.po[1], s_.po[3]): nn.init.normal_(lin.weight, std=(2.0 / lin.in_features) ** 0.5)
        s_.lnp = nn.LayerNorm(w); s_.proj = nn.Parameter(torch.randn(w, 64) * a.projstd)
        s_.head = nn.Linear(64, 9); nn.init.normal_(s_.head.weight, std=0.02); nn.init.zeros_(s_.head.bias)
    def forward(s_, x):
        P = s_.ln(s_.stem(x).flatten(2).transpose(1, 2) + s_.pos)
        for b in s_.l0: P = b(P)
        if "meanpool" in V: e = P.mean(1)
        else:
            Pn = s_.norm(P); q = s_.center.expand(x.shape[0], -1, -1)
            for c in s_.cross: q = c(q, torch.cat([q, P], 1))
            q = s_.cln(q)
            K = s_.kln(s_.kc(Pn.transpose(1, 2)).transpose(1, 2)); Vv = s_.vc(Pn.transpose(1, 2)).transpose(1, 2)
            A = q @ K.transpose(1, 2)
            if "scale" in V: A = A / w ** 0.5
            if training[0]: A = A + (-torch.log(-torch.log(torch.rand_like(A).clamp_min(1e-10))))
            ysoft = F.softmax(A / 0.9, 1); hard = F.one_hot(ysoft.argmax(1), L).transpose(1, 2).float()
            H = hard - ysoft.detach() + ysoft
            S = (H @ Vv) / hard.sum(2, keepdim=True).clamp_min(1)
            qq = 0 if "noq" in V else q; R = s_.po(qq + S) + ((qq + S) if "resid" in V else 0)
            for b in s_.l2: R = b(R)
            e = R.mean(1) if "rmean" in V else R.max(1).values
        return s_.head(s_.lnp(e) @ s_.proj)
training = [True]
m = M(); opt = torch.optim.AdamW(m.parameters(), lr=a.lr, weight_decay=0.05); t0 = time.time()
print(vars(a), flush=True)
for step in range(1, a.steps + 1):
    idx = torch.tensor(tr[np.random.RandomState(step).randint(0, len(tr), 16)])
    loss = F.binary_cross_entropy_with_logits(m(x[idx]), y[idx]); opt.zero_grad(); loss.backward(); opt.step()
    if step % 100 == 0:  # eval: no Gumbel noise
        training[0] = False
        with torch.no_grad(): pr = m(x[te])
        training[0] = True
        sh = (pr[:, :4].argmax(1) == y[te, :4].argmax(1)).float().mean().item(); co = (pr[:, 4:].argmax(1) == y[te, 4:].argmax(1)).float().mean().item()
        print(f"step {step}: loss {loss.item():.3f} shape 4-way {100*sh:.1f} colour 5-way {100*co:.1f} ({time.time()-t0:.0f}s)", flush=True)
