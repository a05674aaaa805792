#!/usr/bin/env python
"""The independent baseline for `mmcache extract`: a plain script that shares no mmcache code.

    python benchmarks/plain_extract.py VIDEO OUT.npy [--fps 8] [--batch 32] [--bf16]

ffmpeg decodes VIDEO at --fps frames/s with resnet18's preprocessing (shorter side scaled to 256,
centre crop 224x224: torchvision's ResNet18_Weights transforms) into a rawvideo RGB pipe; torchvision's
resnet18 (random weights, seeded: the compute of the pretrained model, with no download) encodes
batches of --batch frames (ImageNet normalisation, global-average-pooled 512-d features), in float32,
or with --bf16 under bfloat16 autocast on channels_last inputs; the features are saved as float16 to
OUT.npy. It does the same work as `mmcache extract VIDEO -e resnet18:weights=random,fps=8`, so their
features are equal (bench_extract.py checks it) and their times compare. Prints one JSON line:
frames, seconds inside the script, frames/s, and this process's peak RSS (VmHWM, Linux).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time

import numpy as np
import torch
import torchvision

SIZE = 224
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("video")
    p.add_argument("out")
    p.add_argument("--fps", type=float, default=8.0)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--bf16", action="store_true", help="bfloat16 autocast + channels_last")
    a = p.parse_args()
    t0 = time.perf_counter()
    torch.manual_seed(0)  # the same random weights every run
    model = torchvision.models.resnet18(weights=None)
    model.fc = torch.nn.Identity()
    model.eval()
    if a.bf16:
        model = model.to(memory_format=torch.channels_last)
    short_side_256 = r"scale=if(gt(iw\,ih)\,-2\,256):if(gt(iw\,ih)\,256\,-2)"
    graph = f"fps={a.fps},setsar=1,{short_side_256},crop={SIZE}:{SIZE}"
    cmd = ["ffmpeg", "-nostdin", "-v", "error", "-i", a.video, "-vf", graph]
    cmd += ["-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE)
    frame = SIZE * SIZE * 3
    out = []
    with torch.inference_mode():
        while True:
            data = proc.stdout.read(frame * a.batch)
            if len(data) < frame:
                break
            n = len(data) // frame
            x = torch.frombuffer(bytearray(data[: n * frame]), dtype=torch.uint8).view(n, SIZE, SIZE, 3)
            x = (x.permute(0, 3, 1, 2).float() / 255 - MEAN) / STD
            if a.bf16:
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    y = model(x.contiguous(memory_format=torch.channels_last))
            else:
                y = model(x)
            out.append(y.float().numpy().astype(np.float16))
    if proc.wait() != 0:
        raise SystemExit(f"ffmpeg failed on {a.video}")
    feats = np.concatenate(out) if out else np.zeros((0, 512), np.float16)
    np.save(a.out, feats)
    s = time.perf_counter() - t0
    print(json.dumps({"frames": len(feats), "s": s, "fps": len(feats) / s, "vmhwm": peak_rss()}))


def peak_rss() -> int | None:
    """This process's peak resident memory in bytes (VmHWM), or None where /proc is missing."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return None


if __name__ == "__main__":
    main()
