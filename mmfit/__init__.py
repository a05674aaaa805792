"""mmfit: train fusion and head layers on an mmcache feature cache.

The Python API (mmfit.api), mirroring the CLI:

    import mmfit
    run = mmfit.train(cache="cache/", labels="labels.csv", fusion="gated")
    run.metrics["test"], run.report, run.predict(cache="new/", out="preds.csv")
    mmfit.evaluate(run.best, cache="cache/", split="test")
    mmfit.load_run("runs/gated-001")

Loaded on first use, so `import mmfit` (and the CLI's start-up) does not import torch."""

API = ("train", "evaluate", "load_run", "Run")


def __getattr__(name: str):
    if name in API:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = list(API)
