"""mmfit/segments.py: per-step predictions at their time spans, runs of one label merged into spans, and the
time grids read back from a real cache."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from mmfit.errors import DataError
from mmfit.segments import Step, merge_steps, reference_grids, sample_steps, spans_path


def test_runs_of_one_label_merge_into_spans_scored_by_their_mean():
    labels, score = [1, 1, 0, 2, 2, 2], [0.9, 0.7, 0.6, 0.5, 0.8, 0.5]
    pairs = enumerate(zip(labels, score, strict=True))
    steps = [Step(i, i * 0.5, i * 0.5 + 0.5, c, np.eye(3)[c] * p) for i, (c, p) in pairs]
    got = [(s.start, s.end, s.label, round(s.score, 6)) for s in merge_steps(steps)]
    assert got == [(0.0, 1.0, 1, 0.8), (1.0, 1.5, 0, 0.6), (1.5, 3.0, 2, 0.6)]
    assert merge_steps([]) == [] and len(merge_steps(steps[:1])) == 1


def test_a_sample_s_valid_steps_take_their_grid_times_and_argmax_labels():
    probs = np.array([[0.2, 0.8], [0.6, 0.4], [0.5, 0.5], [0.0, 0.0]])  # last row: padding
    grid = np.array([[0.0, 0.5], [0.5, 1.0], [1.0, 1.5]])
    steps = sample_steps(probs, np.array([True, True, True, False]), grid, "clip-1")
    assert [(s.index, s.start, s.end, s.label) for s in steps] == [(0, 0.0, 0.5, 1), (1, 0.5, 1.0, 0), (2, 1.0, 1.5, 0)]
    assert np.array_equal(steps[0].scores, probs[0])


@pytest.mark.parametrize(
    ("valid", "grid"),
    [
        ([True, True, False], np.zeros((3, 2))),  # fewer valid steps than grid steps
        ([True, False, True], np.zeros((2, 2))),  # a hole among the valid steps
        ([True, False, False], None),  # no grid: the sample has no data in the reference field
    ],
)
def test_valid_steps_that_disagree_with_the_grid_name_the_sample(valid, grid):
    with pytest.raises(DataError, match="sample clip-7: .* valid steps but .* steps on its time grid"):
        sample_steps(np.full((3, 2), 0.5), np.array(valid), grid, "clip-7")


def test_spans_go_beside_the_per_step_csv():
    assert spans_path(Path("out/predictions.csv")) == Path("out/predictions.spans.csv")
    assert spans_path("p") == Path("p.spans.csv")


def test_reference_grids_are_the_loader_s_subsampled_steps_of_a_real_cache(tmp_path):
    """A cache written by the library's writers (benchmarks/synthetic.py): 16 steps of 0.5 s per clip; the grid of
    at most 5 steps is the loader's uniform subsample of the stored step times."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import synthetic

    from mmcache import open_cache
    from mmfit.layout import subsample

    synthetic.write_cache(tmp_path / "c", 3, 16, "webdataset", fields={"tiny": ("tiny", "synthetic", "vision", 4)})
    with open_cache(tmp_path / "c") as cache:
        keys = [r["key"] for r in cache.samples()]
    full = reference_grids(tmp_path / "c", "tiny", keys, 64)
    kept = reference_grids(tmp_path / "c", "tiny", keys[::-1], 5)
    step = synthetic.STEP_S
    assert all(np.allclose(g, np.stack([np.arange(16) * step, np.arange(1, 17) * step], 1)) for g in full)
    assert [g.shape for g in kept] == [(5, 2)] * 3
    assert np.array_equal(kept[0], full[0][subsample(16, 5)]) and kept[0][-1, 1] == 16 * step
