#!/usr/bin/env python3
"""Pretrain the learning benchmark's CLIP on synthetic captioned scenes (a GPU job).

SegCLIP starts from a CLIP that 400M image-text pairs already taught shapes and colours; the
benchmark's from-scratch run cannot learn shape in 30 CPU minutes (docs/benchmarks.md). This
script is the benchmark's analogue of that pretraining: a plain CLIP of the benchmark's
dimensions (`datasets/synth/model.json`: the visual tower has layers0 + layers2 blocks and a
class token, as CLIP has; the text tower as SegCLIP's), trained with the symmetric contrastive
loss on scenes of the *training* split (the held-out colour/shape combinations never appear,
in images or captions), drawn by our own generator:

    cargo run --release --example synth_tensors -- DATA COUNT SEED   # images.u8, tokens.i32
    python3 benches/pretrain_synth_clip.py --data DATA --out clip.safetensors --seconds 330

It writes OpenAI CLIP key names (`visual.transformer.resblocks.N…`, `token_embedding.weight`, …),
so `segclip train` with `[model] init = "clip.safetensors"` renames them as spec 3.8 does for
the real CLIP. The schedule runs on the clock: linear warmup, then cosine to 0 at `--seconds`;
with `--steps N` it runs N steps and the cosine follows the step count, so a rerun on the same
machine and thread count repeats the run.
bf16 autocast on CUDA; the weights are saved in float16 (13 MB; `segclip` upcasts them). The last `--val` scenes are held back and scored
by image→text top-1 retrieval among them (several scenes can share a caption, so 100 % is out
of reach). Every `--save-every` seconds the weights so far are saved too, so a run stopped early
still leaves a checkpoint. Runs on CPU too (~40 scenes/s on two cores): enough to fine-tune.

Options for the experiments of docs/benchmarks.md (session 12): `--init` starts from a file this
script wrote; `--pool max` makes the image embedding the max over the patch tokens (SegCLIP's
pooling over regions) instead of the class token; `--grey P` shows a fraction P of the pairs in
grey with the colour words dropped from the caption (`tokens_nocolour.i32`). Scenes of the
generator's `pretrain` split (`synth_tensors … pretrain`) add objects in colours the benchmark
never names.
"""
import argparse, json, math, os, time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from visual_vs_pytorch import Block  # CLIP's pre-norm block (QuickGELU, packed in_proj)

MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)


class Clip(nn.Module):
    def __init__(self, cfg, pool="cls"):
        super().__init__()
        self.pool = pool
        v, t, d = cfg["vision"], cfg["text"], cfg["embed_dim"]
        w, p, s = v["width"], v["patch_size"], v["image_size"]
        n = (s // p) ** 2
        self.conv1 = nn.Conv2d(3, w, p, p, bias=False)
        self.class_embedding = nn.Parameter(torch.randn(w) * w**-0.5)
        self.positional_embedding = nn.Parameter(torch.randn(n + 1, w) * w**-0.5)
        self.ln_pre, self.ln_post = nn.LayerNorm(w), nn.LayerNorm(w)
        self.visual = nn.ModuleList(Block(w, v["heads"]) for _ in range(cfg["layers0"] + cfg["layers2"]))
        self.proj = nn.Parameter(torch.randn(w, d) * w**-0.5)
        tw, ctx = t["width"], t["context_length"]
        self.token_embedding = nn.Embedding(t["vocab_size"], tw)
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        self.text_pos = nn.Parameter(torch.randn(ctx, tw) * 0.01)
        self.text = nn.ModuleList(Block(tw, t["heads"]) for _ in range(t["layers"]))
        self.ln_final = nn.LayerNorm(tw)
        self.text_projection = nn.Parameter(torch.randn(tw, d) * tw**-0.5)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def visual_tokens(self, x):
        """The class token and the patch tokens, each through ln_post and proj: (B, 1 + N, D)."""
        x = self.conv1(x).flatten(2).transpose(1, 2)
        cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = self.ln_pre(torch.cat([cls, x], 1) + self.positional_embedding)
        for blk in self.visual:
            x = blk(x)
        return self.ln_post(x) @ self.proj

    def encode_image(self, x):
        x = self.visual_tokens(x)
        if self.pool == "max":  # as SegCLIP pools its region tokens (spec 1.4), here the patches
            return x[:, 1:].max(1).values
        return x[:, 0]

    def encode_text(self, ids):
        n = ids.shape[1]
        x = self.token_embedding(ids) + self.text_pos[:n]
        mask = torch.full((n, n), float("-inf"), device=ids.device).triu(1)
        for blk in self.text:
            x = blk(x, mask)
        x = self.ln_final(x[torch.arange(x.shape[0]), ids.argmax(-1)])
        return x @ self.text_projection

    def state_dict_openai(self):
        """The weights under OpenAI CLIP's names (what `segclip` renames from, spec 3.8)."""
        return {openai_name(k): t.detach().cpu().to(torch.float16).contiguous() for k, t in self.state_dict().items()}

    def load_openai(self, tensors):
        """The inverse of `state_dict_openai`."""
        self.load_state_dict({k: tensors[openai_name(k)].float() for k in self.state_dict()})


def openai_name(k):
    """Our parameter name → OpenAI CLIP's."""
    k = k.replace(".mlp.0.", ".mlp.c_fc.").replace(".mlp.2.", ".mlp.c_proj.")
    if k.startswith("visual."):
        return "visual.transformer.resblocks." + k[len("visual."):]
    if k.startswith("text."):
        return "transformer.resblocks." + k[len("text."):]
    if k == "text_pos":
        return "positional_embedding"
    if k.split(".")[0] in ("conv1", "class_embedding", "positional_embedding", "ln_pre", "ln_post", "proj"):
        return "visual." + k
    return k


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--config", default="datasets/synth/model.json")
    ap.add_argument("--out", required=True)
    ap.add_argument("--seconds", type=float, default=330)
    ap.add_argument("--steps", type=int, default=0,
                    help="run this many steps, the schedule on steps rather than the clock (reproducible)")
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--wd", type=float, default=0.1)
    ap.add_argument("--warmup", type=int, default=300)
    ap.add_argument("--val", type=int, default=4096)
    ap.add_argument("--save-every", type=float, default=90)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--init", help="start from these weights (a file this script wrote)")
    ap.add_argument("--pool", choices=["cls", "max"], default="cls",
                    help="image embedding: the class token (CLIP) or the max over patch tokens")
    ap.add_argument("--grey", type=float, default=0.0,
                    help="fraction of training pairs shown in grey with the colour words dropped "
                         "from the caption (tokens_nocolour.i32)")
    ap.add_argument("--print-every", type=float, default=30, help="seconds between log rows")
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (0: PyTorch's default)")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    cfg = json.load(open(a.config))
    meta = json.load(open(os.path.join(a.data, "meta.json")))
    n, s, ctx = meta["count"], meta["size"], meta["context"]
    images = torch.from_numpy(np.fromfile(os.path.join(a.data, "images.u8"), np.uint8).reshape(n, s, s, 3)).to(dev)
    tokens = torch.from_numpy(np.fromfile(os.path.join(a.data, "tokens.i32"), np.int32).reshape(n, ctx)).long().to(dev)
    plain = None
    if a.grey > 0:
        plain = torch.from_numpy(np.fromfile(os.path.join(a.data, "tokens_nocolour.i32"), np.int32)
                                 .reshape(n, ctx)).long().to(dev)
    ntrain = n - a.val
    mean = torch.tensor(MEAN, device=dev).view(1, 3, 1, 1)
    std = torch.tensor(STD, device=dev).view(1, 3, 1, 1)
    pixels = lambda idx: (images[idx].permute(0, 3, 1, 2).float() / 255 - mean) / std

    model = Clip(cfg, a.pool).to(dev)
    if a.init:
        model.load_openai(load_file(a.init))
        model.to(dev)
    decay = [p for k, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in k]
    rest = [p for k, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in k)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": a.wd}, {"params": rest, "weight_decay": 0.0}],
                            lr=a.lr, betas=(0.9, 0.98), eps=1e-6)
    amp = torch.autocast(dev, dtype=torch.bfloat16, enabled=dev == "cuda")
    log = {"config": vars(a), "scenes": n, "device": torch.cuda.get_device_name() if dev == "cuda" else "cpu", "steps": []}

    def save(path):
        save_file(model.state_dict_openai(), path)
        json.dump(log, open(path + ".json", "w"), indent=1)

    @torch.no_grad()
    def retrieval():
        model.eval()
        with amp:
            idx = torch.arange(ntrain, n, device=dev)
            im = torch.cat([model.encode_image(pixels(i)) for i in idx.split(1024)]).float()
            tx = torch.cat([model.encode_text(tokens[i]) for i in idx.split(1024)]).float()
        model.train()
        sim = F.normalize(im, dim=-1) @ F.normalize(tx, dim=-1).T
        # A hit: the best caption is the scene's own, or identical to it.
        best = sim.argmax(1)
        return (tokens[ntrain + best] == tokens[ntrain:]).all(1).float().mean().item()

    gen = torch.Generator(device=dev).manual_seed(a.seed)
    t0 = last_print = last_save = time.time()
    step, seen = 0, 0
    while True:
        frac = step / a.steps if a.steps else (time.time() - t0) / a.seconds
        if frac >= 1:
            break
        lr = a.lr * min(1.0, (step + 1) / a.warmup) * 0.5 * (1 + math.cos(math.pi * frac))
        for g in opt.param_groups:
            g["lr"] = lr
        idx = torch.randint(0, ntrain, (a.batch,), device=dev, generator=gen)
        x, ids = pixels(idx), tokens[idx]
        if plain is not None:
            # Grey views: luma (ITU-R 601) in every channel, captions without colour words.
            g = torch.rand(a.batch, device=dev, generator=gen) < a.grey
            rgb = images[idx].float() / 255
            luma = (rgb @ torch.tensor([0.299, 0.587, 0.114], device=dev)).unsqueeze(1).expand(-1, 3, -1, -1)
            x = torch.where(g.view(-1, 1, 1, 1), (luma - mean) / std, x)
            ids = torch.where(g.view(-1, 1), plain[idx], ids)
        with amp:
            im = F.normalize(model.encode_image(x).float(), dim=-1)
            tx = F.normalize(model.encode_text(ids).float(), dim=-1)
        logits = model.logit_scale.exp().clamp(max=100) * im @ tx.T
        target = torch.arange(a.batch, device=dev)
        loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(max=math.log(100))
        step, seen = step + 1, seen + a.batch
        now = time.time()
        if now - last_print > a.print_every or step == 1:
            last_print = now
            r = retrieval()
            row = {"step": step, "seconds": round(now - t0, 1), "loss": round(loss.item(), 4), "lr": lr,
                   "images_per_s": round(seen / (now - t0)), "val_top1": round(r, 4)}
            log["steps"].append(row)
            print(json.dumps(row), flush=True)
        if now - last_save > a.save_every:
            last_save = now
            save(a.out)
    log["final"] = {"step": step, "images": seen, "seconds": round(time.time() - t0, 1), "val_top1": retrieval()}
    print(json.dumps(log["final"]), flush=True)
    save(a.out)


if __name__ == "__main__":
    main()
