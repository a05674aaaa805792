"""stream.py: streamed training and evaluation give what the in-memory data gives."""

from __future__ import annotations

from mmfit_helpers import cfg

from mmfit.predict import evaluate_checkpoint
from mmfit.train import train

pytest_plugins = ["mmfit_fixtures"]  # the session's labelled cache, made once for every file using it


def test_streaming_gives_the_same_eval_as_in_memory(labelled, tmp_path):
    train(cfg(labelled, tmp_path))
    ckpt = tmp_path / "run" / "best.pt"
    result = train(cfg(labelled, tmp_path / "s", streaming="always", epochs=3))
    assert result.val["accuracy"] >= 0.5
    mem = evaluate_checkpoint(ckpt, labelled / "cache", "all")
    import mmfit.predict

    orig = mmfit.predict.config_of
    mmfit.predict.config_of = lambda ck, **kw: orig(ck, streaming="always", **kw)
    try:
        streamed = evaluate_checkpoint(ckpt, labelled / "cache", "all")
    finally:
        mmfit.predict.config_of = orig
    assert streamed["accuracy"] == mem["accuracy"] and streamed["confusion"] == mem["confusion"]
