"""Helpers for `make demo`: which vision weights the demo can use offline, said plainly."""

from __future__ import annotations

import sys


def main() -> None:
    from .encoders.torchvision_models import cached_weights_or_random

    model = sys.argv[1] if len(sys.argv) > 1 else "resnet18"
    choice = cached_weights_or_random(model)
    what = (
        "pretrained ImageNet weights (torch hub cache)"
        if choice == "DEFAULT"
        else "RANDOM-INIT weights (pretrained weights are not in the torch hub cache and hubs may be offline)"
    )
    print(f"demo vision backbone: {model} with {what}", file=sys.stderr)
    print(choice)


if __name__ == "__main__":
    main()
