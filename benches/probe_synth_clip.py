#!/usr/bin/env python3
"""Zero-shot classification of one-object synthetic test scenes by a CLIP from
`benches/pretrain_synth_clip.py`: does it name colour and shape, on seen combinations and on the
held-out ones it never saw together? Prompts "a photo of a {colour} {shape}." (20 classes), and
attribute-only prompts "a {shape}" / "a {colour} object" that isolate each attribute.

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
    a = ap.parse_args()
    model = Clip(json.load(open(a.config)))
    model.load_openai(load_file(a.weights))
    model.eval()
    with tempfile.TemporaryDirectory() as d:
        subprocess.run([BIN, "synth", "--out", d, "--count", str(a.count), "--seed", str(a.seed), "--split", "test"],
                       check=True, stdout=subprocess.DEVNULL)
        xs, ys = [], []
        for i in range(a.count):
            lab = np.array(Image.open(f"{d}/SegmentationClass/{i:06d}.png"))
            cls = [c for c in np.unique(lab) if c not in (0, 255)]
            if len(cls) != 1:
                continue
            img = np.asarray(Image.open(f"{d}/JPEGImages/{i:06d}.png").convert("RGB")) / 255.0
            xs.append(((img - MEAN) / np.array(STD)).transpose(2, 0, 1).astype(np.float32))
            ys.append(int(cls[0]) - 1)
    y = torch.tensor(ys)
    colour, shape = y // len(SHAPES), y % len(SHAPES)
    held = torch.tensor([(c, s) in HELD_OUT for c, s in zip(colour.tolist(), shape.tolist())])
    with torch.no_grad():
        im = F.normalize(torch.cat([model.encode_image(torch.tensor(np.stack(xs[i:i + 256]))) for i in range(0, len(xs), 256)]), dim=-1)
        enc = lambda texts: F.normalize(model.encode_text(tokens(texts)), dim=-1)
        pair = (im @ enc([f"a photo of a {c} {s}." for c in COLOURS for s in SHAPES]).T).argmax(1)
        shape_only = (im @ enc([f"a {s}" for s in SHAPES]).T).argmax(1)
        colour_only = (im @ enc([f"a {c} object" for c in COLOURS]).T).argmax(1)
    pct = lambda t: f"{100 * t.float().mean():.1f} %"
    for name, sel in [("seen combinations", ~held), ("held-out combinations", held)]:
        print(f"{name} ({int(sel.sum())} scenes): class {pct(pair[sel] == y[sel])}, "
              f"colour {pct(pair[sel] // 4 == colour[sel])}, shape {pct(pair[sel] % 4 == shape[sel])}; "
              f"shape-only prompts {pct(shape_only[sel] == shape[sel])}, colour-only prompts {pct(colour_only[sel] == colour[sel])}")


if __name__ == "__main__":
    main()
