#!/usr/bin/env python3
"""Zero-shot classification of one-object synthetic test scenes by a CLIP from
`benches/pretrain_synth_clip.py`: does it name colour and shape, on seen combinations and on the
held-out ones it never saw together? Prompts "a photo of a {colour} {shape}." (20 classes), and
attribute-only prompts "a {shape}" / "a {colour} object" that isolate each attribute. Scored on
the whole image of the one-object scenes, and on single patch tokens (through `ln_post` and
`proj`) that lie on an object: the dense zero-shot that SegCLIP's region tokens build on.

    cargo build --release
    python3 benches/probe_synth_clip.py datasets/synth/clip-synth.safetensors [--count 1500] [--seed 999]

Scenes come from `segclip synth --split test` (every combination); tokens from `segclip tokenize`.
"""
import argparse, json, os, subprocess, tempfile

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file

from pretrain_synth_clip import MEAN, STD, Clip

COLOURS = "red green blue yellow purple".split()
SHAPES = "circle square triangle ring".split()
HELD_OUT = {(0, 2), (2, 3), (3, 0), (4, 1)}  # crates/segclip-data/src/synth.rs
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
BIN = os.path.join(ROOT, "target/release/segclip")


def tokens(texts, ctx=32):
    ids = torch.zeros(len(texts), ctx, dtype=torch.long)
    for i, t in enumerate(texts):
        v = [int(x) for x in subprocess.check_output([BIN, "tokenize", t], text=True).split()]
        ids[i, : len(v)] = torch.tensor(v)
    return ids


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("weights")
    ap.add_argument("--config", default=os.path.join(ROOT, "datasets/synth/model.json"))
    ap.add_argument("--count", type=int, default=1500)
    ap.add_argument("--seed", type=int, default=999)
    ap.add_argument("--pool", choices=["cls", "max"], default="cls", help="as the CLIP was trained")
    ap.add_argument("--bg-thresh", type=float, default=0.8, help="dense decode: background threshold")
    a = ap.parse_args()
    model = Clip(json.load(open(a.config)), a.pool)
    model.load_openai(load_file(a.weights))
    model.eval()
    with tempfile.TemporaryDirectory() as d:
        subprocess.run([BIN, "synth", "--out", d, "--count", str(a.count), "--seed", str(a.seed), "--split", "test"],
                       check=True, stdout=subprocess.DEVNULL)
        images, labels = [], []
        for i in range(a.count):
            img = np.asarray(Image.open(f"{d}/JPEGImages/{i:06d}.png").convert("RGB")) / 255.0
            images.append(((img - MEAN) / np.array(STD)).transpose(2, 0, 1).astype(np.float32))
            labels.append(np.array(Image.open(f"{d}/SegmentationClass/{i:06d}.png")))
    with torch.no_grad():
        toks = torch.cat([model.visual_tokens(torch.tensor(np.stack(images[i:i + 256])))
                          for i in range(0, len(images), 256)])
        im = F.normalize(toks[:, 0] if a.pool == "cls" else toks[:, 1:].max(1).values, dim=-1)
        enc = lambda texts: F.normalize(model.encode_text(tokens(texts)), dim=-1)
        classes = enc([f"a photo of a {c} {s}." for c in COLOURS for s in SHAPES])
        shapes = enc([f"a {s}" for s in SHAPES])
        colours = enc([f"a {c} object" for c in COLOURS])
    pct = lambda t: f"{100 * t.float().mean():.1f} %"

    # Whole images: the scenes with one object.
    one = [(i, [c for c in np.unique(lab) if c not in (0, 255)]) for i, lab in enumerate(labels)]
    one = [(i, c[0]) for i, c in one if len(c) == 1]
    sel_i = torch.tensor([i for i, _ in one])
    y = torch.tensor([int(c) - 1 for _, c in one])
    report("one-object scenes, whole image", im[sel_i], y, classes, shapes, colours, pct)

    # Patches: each patch of the grid whose pixels are at least 3/4 one object, named alone
    # (MaskCLIP-style dense zero-shot: what SegCLIP's regions average).
    g = int(round((toks.shape[1] - 1) ** 0.5))
    p = labels[0].shape[0] // g
    feats, ys = [], []
    for i, lab in enumerate(labels):
        blocks = lab.reshape(g, p, g, p).transpose(0, 2, 1, 3).reshape(g * g, p * p)
        for k, b in enumerate(blocks):
            vals, counts = np.unique(b, return_counts=True)
            j = counts.argmax()
            if vals[j] not in (0, 255) and counts[j] >= 0.75 * p * p:
                feats.append(toks[i, 1 + k])
                ys.append(int(vals[j]) - 1)
    report("object patches", F.normalize(torch.stack(feats), dim=-1), torch.tensor(ys), classes, shapes, colours, pct)

    # Dense zero-shot segmentation from the patch tokens alone (no group module): each patch
    # takes its best class, or background when that class's softmax probability (logit scale
    # 100) is under --bg-thresh (simpler than `segclip eval`'s decode: no top-k filter over the
    # image's classes); patches upsampled to pixels (nearest);
    # IoU summed over all scenes, classes with an empty union left out.
    patches = F.normalize(toks[:, 1:], dim=-1) @ classes.T  # (S, N, 20)
    prob, best = (100 * patches).softmax(-1).max(-1)
    pred = torch.where(prob < a.bg_thresh, 0, best + 1).view(-1, g, g)
    pred = pred.repeat_interleave(p, 1).repeat_interleave(p, 2).numpy()
    truth = np.stack(labels)
    inter, union = np.zeros(21), np.zeros(21)
    valid = truth != 255
    for c in range(21):
        t, q = (truth == c) & valid, (pred == c) & valid
        inter[c], union[c] = (t & q).sum(), (t | q).sum()
    iou = {c: inter[c] / union[c] for c in range(21) if union[c] > 0}
    held_ids = {1 + c * len(SHAPES) + s for c, s in HELD_OUT}
    mean = lambda ids: 100 * np.mean([iou[c] for c in ids if c in iou])
    print(f"dense patch decode (bg-thresh {a.bg_thresh}): mIoU {mean(range(21)):.2f}, seen + background "
          f"{mean([c for c in range(21) if c not in held_ids]):.2f}, held-out {mean(held_ids):.2f}")


def report(what, im, y, classes, shapes, colours, pct):
    pair = (im @ classes.T).argmax(1)
    shape_only = (im @ shapes.T).argmax(1)
    colour_only = (im @ colours.T).argmax(1)
    colour, shape = y // len(SHAPES), y % len(SHAPES)
    held = torch.tensor([(c, s) in HELD_OUT for c, s in zip(colour.tolist(), shape.tolist())])
    for name, sel in [("seen combinations", ~held), ("held-out combinations", held)]:
        print(f"{what}, {name} ({int(sel.sum())}): class {pct(pair[sel] == y[sel])}, "
              f"colour {pct(pair[sel] // 4 == colour[sel])}, shape {pct(pair[sel] % 4 == shape[sel])}; "
              f"shape-only prompts {pct(shape_only[sel] == shape[sel])}, colour-only prompts {pct(colour_only[sel] == colour[sel])}")

if __name__ == "__main__":
    main()
