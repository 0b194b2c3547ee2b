"""How fast do small image towers learn *shape* when told the shapes? A PyTorch reference for
`examples/shape_supervised.rs` (docs/benchmarks.md, "Learning benchmark", session 8).

Scenes come from our generator as raw arrays (`cargo run --release --example synth_tensors --
DIR 30000 1`); the target is which of the 4 shapes a scene holds (multi-label, BCE); the last
1000 scenes are the test set, scored every 100 steps as the fraction of correct shape bits
(the all-absent baseline is printed first). Batch 16, AdamW (weight decay 0.05), 2 threads.

MODE: `vit-mean` / `vit-max` (8x8 patchify stem, 4 pre-norm blocks of width 128, mean- or
max-pooled tokens), `convvit-*` (three 3x3 stride-2 convolutions 3->32->64->128 as the stem, the
`conv_stem` option of segclip-vit), `deepvit-*` (five convolutions, the last two stride 1),
`cnn` (those five convolutions alone, max-pooled).

    python3 benches/shape_labels_pytorch.py DIR MODE STEPS LR
"""
import json
import sys
import time

import numpy as np
import torch
import torch.nn as nn

torch.manual_seed(0)
torch.set_num_threads(2)
root, mode, steps, lr = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
meta = json.load(open(f"{root}/meta.json"))
n, s = meta["count"], meta["size"]
img = np.fromfile(f"{root}/images.u8", np.uint8).reshape(n, s, s, 3)
lab = np.fromfile(f"{root}/labels.u8", np.uint8).reshape(n, s, s)
y = np.zeros((n, 4), np.float32)
for i in range(n):
    ids = np.unique(lab[i])
    y[i, (ids[ids > 0] - 1) % 4] = 1  # class id = 1 + colour * 4 + shape
x = (torch.tensor(img).permute(0, 3, 1, 2).float() / 255.0 - 0.45) / 0.27
y = torch.tensor(y)
test = slice(n - 1000, n)
print(f"{mode}, lr {lr}: all-absent baseline {100 * (1 - y[test].mean().item()):.1f} %")


def convs(k):
    c = [3, 32, 64, 128, 128, 128][: k + 1]
    layers = []
    for i in range(k):
        layers += [nn.Conv2d(c[i], c[i + 1], 3, 2 if i < 3 else 1, 1), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


class Vit(nn.Module):
    def __init__(self, w=128):
        super().__init__()
        if mode.startswith("conv"):
            self.stem = convs(3)
        elif mode.startswith("deep"):
            self.stem = convs(5)
        else:
            self.stem = nn.Conv2d(3, w, 8, 8)
        self.pos = nn.Parameter(torch.randn((s // 8) ** 2, w) * 0.02)
        self.ln = nn.LayerNorm(w)
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(w, 2, 4 * w, 0.0, "gelu", batch_first=True, norm_first=True)
            for _ in range(4)
        )
        self.head = nn.Linear(w, 4)

    def forward(self, x):
        x = self.ln(self.stem(x).flatten(2).transpose(1, 2) + self.pos)
        for b in self.blocks:
            x = b(x)
        return self.head(x.max(1).values if mode.endswith("max") else x.mean(1))


class Cnn(nn.Module):
    def __init__(self):
        super().__init__()
        self.f, self.head = convs(5), nn.Linear(128, 4)

    def forward(self, x):
        return self.head(self.f(x).flatten(2).max(2).values)


model = Cnn() if mode == "cnn" else Vit()
opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
t0 = time.time()
for step in range(1, steps + 1):
    idx = torch.randint(0, n - 1000, (16,))
    loss = nn.functional.binary_cross_entropy_with_logits(model(x[idx]), y[idx])
    opt.zero_grad()
    loss.backward()
    opt.step()
    if step % 100 == 0:
        with torch.no_grad():
            p = torch.cat([model(x[test][k : k + 250]) for k in range(0, 1000, 250)])
        acc = ((p > 0).float() == y[test]).float().mean().item()
        print(f"step {step}: shape bits {100 * acc:.1f} % ({time.time() - t0:.0f} s)", flush=True)
