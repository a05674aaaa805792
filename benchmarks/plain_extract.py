#!/usr/bin/env python
"""The independent baseline for `mmcache extract`: a plain script that shares no mmcache code.

    python benchmarks/plain_extract.py VIDEO OUT.npy [--fps 8] [--batch 32] [--bf16]

ffmpeg (fps, shorter side 256, centre crop 224) pipes RGB frames into torchvision's resnet18 (seeded random
weights), float32 or --bf16 (bfloat16 autocast, channels_last); float16 features go to OUT.npy. Prints one
JSON line: frames, seconds, frames/s, peak RSS (VmHWM). Method: docs/benchmarks.md (bench_extract).
"""

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
    model = model.to(memory_format=torch.channels_last) if a.bf16 else model
    short_side_256 = r"scale=if(gt(iw\,ih)\,-2\,256):if(gt(iw\,ih)\,256\,-2)"
    graph = f"fps={a.fps},setsar=1,{short_side_256},crop={SIZE}:{SIZE}"
    cmd = ["ffmpeg", "-nostdin", "-v", "error", "-i", a.video, "-vf", graph, "-f", "rawvideo", "-pix_fmt", "rgb24"]
    proc = subprocess.Popen([*cmd, "pipe:1"], stdout=subprocess.PIPE)
    frame, out = SIZE * SIZE * 3, []
    with torch.inference_mode():
        while len(data := proc.stdout.read(frame * a.batch)) >= frame:
            n = len(data) // frame
            x = torch.frombuffer(bytearray(data[: n * frame]), dtype=torch.uint8).view(n, SIZE, SIZE, 3)
            x = (x.permute(0, 3, 1, 2).float() / 255 - MEAN) / STD
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=a.bf16):  # a no-op in float32
                y = model(x.contiguous(memory_format=torch.channels_last) if a.bf16 else x)
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
