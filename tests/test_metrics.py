"""mmfit.metrics against sklearn, batching invariance, and hand-made segment cases with known answers."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    confusion_matrix,
    f1_score,
    mean_absolute_error,
    precision_recall_fscore_support,
    r2_score,
    top_k_accuracy_score,
)

from mmfit.metrics import (
    Accumulator,
    multiclass_metrics,
    multilabel_metrics,
    regression_metrics,
    segment_metrics,
    tune_thresholds,
)


def assert_clean(obj) -> None:
    """JSON-serialisable plain Python with no NaN or infinity anywhere."""
    text = json.dumps(obj, allow_nan=False)
    assert json.loads(text) == obj


def names(c: int) -> list[str]:
    return [f"c{i}" for i in range(c)]


# ---------------------------------------------------------------------------------------------------------------
# multiclass


@pytest.fixture
def multiclass_data():
    """7 classes; class 6 never occurs in y_true and class 5 is never predicted."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 6, size=500)
    scores = rng.normal(size=(500, 7)) + 1.5 * np.eye(7)[y]
    scores[:, 5] -= 100.0
    return y, scores


def test_multiclass_matches_sklearn(multiclass_data):
    y, scores = multiclass_data
    c = scores.shape[1]
    labels = list(range(c))
    pred = scores.argmax(1)
    m = multiclass_metrics(y, scores, names(c))
    assert_clean(m)

    assert m["accuracy"] == pytest.approx(accuracy_score(y, pred))
    for avg in ("macro", "micro", "weighted"):
        ref = f1_score(y, pred, labels=labels, average=avg, zero_division=0)
        assert m[f"{avg}_f1"] == pytest.approx(ref), avg
    assert m["confusion"] == confusion_matrix(y, pred, labels=labels).tolist()
    p, r, f, s = precision_recall_fscore_support(y, pred, labels=labels, zero_division=0)
    for i, name in enumerate(names(c)):
        row = m["per_class"][name]
        assert (row["precision"], row["recall"], row["f1"]) == pytest.approx((p[i], r[i], f[i]))
        assert row["support"] == s[i]
    assert m["top5_accuracy"] == pytest.approx(top_k_accuracy_score(y, scores, k=5, labels=labels))
    assert m["undefined"] == ["c5", "c6"]
    assert m["per_class"]["c6"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}


def test_multiclass_probabilities_equal_logits_and_no_top5_for_few_classes():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 4, size=200)
    logits = rng.normal(size=(200, 4))
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    a, b = multiclass_metrics(y, logits, names(4)), multiclass_metrics(y, probs, names(4))
    assert a == b
    assert "top5_accuracy" not in a


def test_multiclass_rejects_bad_input():
    with pytest.raises(ValueError):
        multiclass_metrics(np.array([0, 3]), np.zeros((2, 3)), names(3))  # label out of range
    with pytest.raises(ValueError):
        multiclass_metrics(np.array([0, 1]), np.zeros((2, 3)), names(2))  # names vs columns
    with pytest.raises(ValueError):
        multiclass_metrics(np.array([0, 1]), np.array([[0.0, np.nan], [1.0, 0.0]]), names(2))


# ---------------------------------------------------------------------------------------------------------------
# multilabel


@pytest.fixture
def multilabel_data():
    """6 classes with correlated logits rounded to create ties; class 4 has no positives."""
    rng = np.random.default_rng(2)
    y = (rng.random((400, 6)) < np.array([0.3, 0.1, 0.5, 0.05, 0.0, 0.2])).astype(int)
    scores = np.round(rng.normal(size=(400, 6)) + 1.2 * y - 0.5, 1)
    return y, scores


def test_multilabel_matches_sklearn(multilabel_data):
    y, scores = multilabel_data
    m = multilabel_metrics(y, scores, names(6))
    assert_clean(m)

    defined = [j for j in range(6) if y[:, j].any()]
    ref_ap = {j: average_precision_score(y[:, j], scores[:, j]) for j in defined}
    for j in defined:
        assert m["per_class"][f"c{j}"]["ap"] == pytest.approx(ref_ap[j], abs=1e-12)
    assert m["mAP"] == pytest.approx(np.mean(list(ref_ap.values())), abs=1e-12)
    assert m["micro_ap"] == pytest.approx(average_precision_score(y, scores, average="micro"), abs=1e-12)
    assert m["undefined_ap"] == ["c4"]
    assert m["per_class"]["c4"]["ap"] is None

    pred = (scores >= 0).astype(int)
    assert m["macro_f1"] == pytest.approx(f1_score(y, pred, average="macro", zero_division=0))
    assert m["micro_f1"] == pytest.approx(f1_score(y, pred, average="micro", zero_division=0))
    p, r, f, s = precision_recall_fscore_support(y, pred, zero_division=0)
    for j in range(6):
        row = m["per_class"][f"c{j}"]
        assert (row["precision"], row["recall"], row["f1"], row["support"]) == pytest.approx((p[j], r[j], f[j], s[j]))


def test_multilabel_ap_is_rank_based(multilabel_data):
    y, scores = multilabel_data
    a = multilabel_metrics(y, scores, names(6))
    b = multilabel_metrics(y, 1 / (1 + np.exp(-scores)), names(6), thresholds=np.full(6, 0.5))
    assert a["mAP"] == pytest.approx(b["mAP"], abs=1e-12)
    assert a["micro_ap"] == pytest.approx(b["micro_ap"], abs=1e-12)
    assert a["macro_f1"] == pytest.approx(b["macro_f1"])


def test_all_ap_undefined_gives_none_not_nan():
    y = np.zeros((10, 3), dtype=int)
    m = multilabel_metrics(y, np.random.default_rng(3).normal(size=(10, 3)), names(3))
    assert_clean(m)
    assert m["mAP"] is None and m["micro_ap"] is None
    assert m["undefined_ap"] == names(3)


def skewed(seed: int, n: int = 2000):
    """Rare positives and a model whose logits are all well below 0 but still rank positives higher."""
    rng = np.random.default_rng(seed)
    y = (rng.random((n, 4)) < np.array([0.02, 0.05, 0.1, 0.03])).astype(int)
    return y, rng.normal(size=(n, 4)) + 2.5 * y - 4.0


def test_tuned_thresholds_beat_zero_on_skewed_data():
    y_val, s_val = skewed(4)
    y_test, s_test = skewed(5)
    thr = tune_thresholds(y_val, s_val)
    assert thr.shape == (4,) and np.all(np.isfinite(thr))
    for y, s in ((y_val, s_val), (y_test, s_test)):
        default = multilabel_metrics(y, s, names(4))
        tuned = multilabel_metrics(y, s, names(4), thresholds=thr)
        assert tuned["macro_f1"] > default["macro_f1"] + 0.2
        assert tuned["micro_f1"] > default["micro_f1"]


def test_tuned_thresholds_are_optimal_on_their_data():
    y, s = skewed(6, n=300)
    s = np.round(s, 1)  # ties
    thr = tune_thresholds(y, s)
    for j in range(4):
        best = max(f1_score(y[:, j], s[:, j] >= t, zero_division=0) for t in np.unique(s[:, j]))
        assert f1_score(y[:, j], s[:, j] >= thr[j], zero_division=0) == pytest.approx(best)


def test_tune_thresholds_without_positives_predicts_nothing():
    s = np.random.default_rng(7).normal(size=(20, 2))
    y = np.zeros((20, 2), dtype=int)
    thr = tune_thresholds(y, s)
    assert not np.any(s >= thr)


# ---------------------------------------------------------------------------------------------------------------
# regression


def test_regression_matches_sklearn():
    rng = np.random.default_rng(8)
    y = rng.normal(size=(300, 3))
    p = y + rng.normal(scale=0.5, size=y.shape)
    m = regression_metrics(y, p)
    assert_clean(m)
    assert m["mae"] == pytest.approx(mean_absolute_error(y, p))
    assert m["rmse"] == pytest.approx(np.sqrt(np.mean((y - p) ** 2)))
    assert m["r2"] == pytest.approx(r2_score(y, p))
    ref_r = [np.corrcoef(y[:, k], p[:, k])[0, 1] for k in range(3)]
    assert [o["pearson"] for o in m["per_output"]] == pytest.approx(ref_r)
    assert m["pearson"] == pytest.approx(np.mean(ref_r))

    one = regression_metrics(y[:, 0], p[:, 0])
    assert one["r2"] == pytest.approx(r2_score(y[:, 0], p[:, 0]))
    assert one["mae"] == pytest.approx(mean_absolute_error(y[:, 0], p[:, 0]))
    assert "per_output" not in one


def test_regression_undefined_r2_and_pearson_are_none():
    m = regression_metrics(np.full(5, 0.1), np.array([0.1, 0.2, 0.3, 0.4, 0.5]))
    assert m["r2"] is None and m["pearson"] is None
    m = regression_metrics(np.array([1.0, 2.0, 3.0]), np.full(3, 2.0))
    assert m["r2"] == pytest.approx(0.0) and m["pearson"] is None
    assert_clean(m)


# ---------------------------------------------------------------------------------------------------------------
# segments


def onehot_scores(pred: list[list[int]], c: int = 3) -> np.ndarray:
    """(N, T, C) scores whose argmax is `pred`; -1 steps get random-looking but irrelevant class-1 scores."""
    p = np.array(pred)
    return np.eye(c)[np.where(p < 0, 1, p)] * 2.0


def seg(y_true: list[list[int]], pred: list[list[int]], **kw) -> dict:
    m = segment_metrics(np.array(y_true), onehot_scores(pred), ["bg", "a", "b"], **kw)
    assert_clean(m)
    return m


def test_segments_exact_match():
    m = seg([[0, 1, 1, 1, 0, 2, 2, 0]], [[0, 1, 1, 1, 0, 2, 2, 0]])
    assert m["frame_accuracy"] == 1.0 and m["frame_macro_f1"] == 1.0
    assert m["segment_f1"] == 1.0 and m["segment_precision"] == 1.0 and m["segment_recall"] == 1.0
    assert m["segment_map"] == 1.0
    assert set(m["segment_per_class"]) == {"a", "b"}


def test_segments_shift_by_one_counts_when_iou_at_least_half():
    m = seg([[0, 1, 1, 1, 1, 0, 0, 0]], [[0, 0, 1, 1, 1, 1, 0, 0]])  # IoU 3/5
    assert m["segment_per_class"]["a"]["f1"] == 1.0
    m = seg([[1, 1, 1, 1, 0, 0]], [[0, 0, 1, 1, 0, 0]])  # IoU exactly 2/4
    assert m["segment_per_class"]["a"]["f1"] == 1.0
    assert m["frame_accuracy"] == pytest.approx(4 / 6)


def test_segments_low_iou_not_counted():
    m = seg([[1, 1, 1, 1, 0, 0, 0, 0]], [[0, 0, 0, 1, 1, 1, 0, 0]])  # IoU 1/6
    a = m["segment_per_class"]["a"]
    assert (a["precision"], a["recall"], a["f1"], a["n_true"], a["n_pred"]) == (0.0, 0.0, 0.0, 1, 1)
    assert a["ap"] == 0.0


def test_segments_wrong_class_not_counted():
    m = seg([[0, 1, 1, 1, 0]], [[0, 2, 2, 2, 0]])
    assert m["segment_per_class"]["a"]["f1"] == 0.0 and m["segment_per_class"]["b"]["f1"] == 0.0
    assert m["segment_micro_f1"] == 0.0
    assert m["segment_undefined"] == ["a", "b"]  # a: nothing predicted, b: nothing true
    assert m["segment_undefined_ap"] == ["b"]


def test_segments_counted_over_the_split_and_padding_ignored():
    y = [[0, 1, 1, 0, 2, 2, -1, -1], [1, 1, 1, 0, 0, 0, 0, 0]]
    p = [[0, 1, 1, 0, 1, 1, 1, 1], [1, 1, 0, 0, 0, 2, 2, 2]]  # -1 steps predict class a: ignored
    m = seg(y, p)
    a, b = m["segment_per_class"]["a"], m["segment_per_class"]["b"]
    assert (a["n_true"], a["n_pred"], a["f1"]) == (2, 3, pytest.approx(2 * 2 / (2 * 2 + 1 + 0)))
    assert (b["n_true"], b["n_pred"], b["f1"]) == (1, 1, 0.0)
    assert m["n_frames"] == 14
    assert m["frame_accuracy"] == pytest.approx(8 / 14)


def test_segment_ap_ranks_by_mean_class_score():
    y = np.array([[1, 1, 0, 0, 0, 0, 0, 1, 1]])
    pred = np.array([[1, 1, 0, 1, 1, 0, 0, 0, 0]])  # hits the first true segment, a false one, misses the last
    scores = np.eye(3)[pred] * 2.0
    scores[0, 3:5, 1] = 5.0  # false positive ranked first
    assert segment_metrics(y, scores, ["bg", "a", "b"])["segment_per_class"]["a"]["ap"] == pytest.approx(0.25)
    scores[0, 3:5, 1] = 1.0  # false positive ranked last
    assert segment_metrics(y, scores, ["bg", "a", "b"])["segment_per_class"]["a"]["ap"] == pytest.approx(0.5)


def test_segments_without_background():
    m = seg([[0, 0, 1, 1]], [[0, 0, 1, 1]], background=None)
    assert set(m["segment_per_class"]) == {"bg", "a", "b"}
    assert m["segment_per_class"]["bg"]["f1"] == 1.0


def test_segment_frame_metrics_match_sklearn():
    rng = np.random.default_rng(9)
    y = rng.integers(0, 4, size=(20, 50))
    y[rng.random(y.shape) < 0.1] = -1
    scores = rng.normal(size=(20, 50, 4)) + 1.0 * np.eye(4)[np.maximum(y, 0)]
    m = segment_metrics(y, scores, names(4))
    valid = y >= 0
    pred = scores.argmax(2)[valid]
    assert m["frame_accuracy"] == pytest.approx(accuracy_score(y[valid], pred))
    assert m["frame_macro_f1"] == pytest.approx(f1_score(y[valid], pred, labels=range(4), average="macro"))
    assert_clean(m)


# ---------------------------------------------------------------------------------------------------------------
# accumulation


def batches(arrays, size: int):
    n = len(arrays[0])
    for i in range(0, n, size):
        yield tuple(a[i : i + size] for a in arrays)


def accumulate(task: str, y, s, size: int, torch_every: int = 0, trim: bool = False, **kw) -> dict:
    """Metrics of (y, s) fed in batches of `size`; every `torch_every`-th batch as torch tensors."""
    torch = pytest.importorskip("torch") if torch_every else None
    acc = Accumulator()
    for i, (yb, sb) in enumerate(batches((y, s), size)):
        if trim:  # cut the batch to its own longest valid length, as a collate function would
            length = int(np.max(np.flatnonzero((yb >= 0).any(0)), initial=0)) + 1
            yb, sb = yb[:, :length], sb[:, :length]
        if torch_every and i % torch_every == 0:
            yb, sb = torch.from_numpy(yb), torch.from_numpy(sb)
        acc.add(yb, sb)
    assert len(acc) == len(y)
    return acc.compute(task, **kw)


def test_accumulator_identical_for_batch_size_1_and_512():
    rng = np.random.default_rng(10)
    n = 700

    y_mc = rng.integers(0, 8, size=n)
    s_mc = rng.normal(size=(n, 8)).astype(np.float32)
    whole = multiclass_metrics(y_mc, s_mc, names(8))
    for size in (1, 512):
        assert accumulate("multiclass", y_mc, s_mc, size, torch_every=3, class_names=names(8)) == whole

    y_ml = (rng.random((n, 5)) < 0.2).astype(np.int64)
    s_ml = rng.normal(size=(n, 5))
    thr = tune_thresholds(y_ml, s_ml)
    whole = multilabel_metrics(y_ml, s_ml, names(5), thresholds=thr)
    for size in (1, 512):
        assert accumulate("multilabel", y_ml, s_ml, size, torch_every=2, class_names=names(5), thresholds=thr) == whole

    y_rg = rng.normal(size=(n, 2))
    p_rg = y_rg + rng.normal(size=(n, 2))
    whole = regression_metrics(y_rg, p_rg)
    for size in (1, 512):
        assert accumulate("regression", y_rg, p_rg, size, torch_every=5) == whole


def test_accumulator_segments_pad_time_across_batches():
    rng = np.random.default_rng(11)
    n, t = 600, 40
    lengths = rng.integers(5, t + 1, size=n)
    y = np.repeat(rng.integers(0, 4, size=(n, t // 4)), 4, axis=1)  # runs of 4 steps
    y[np.arange(t)[None, :] >= lengths[:, None]] = -1
    scores = rng.normal(size=(n, t, 4)) + 2.0 * np.eye(4)[np.maximum(y, 0)]
    whole = segment_metrics(y, scores, names(4))
    assert whole["segment_f1"] > 0.1
    for size in (1, 512):
        assert accumulate("segment", y, scores, size, torch_every=4, trim=True, class_names=names(4)) == whole


def test_accumulator_dispatch_errors():
    acc = Accumulator()
    with pytest.raises(ValueError, match="nothing"):
        acc.compute("multiclass", class_names=names(2))
    acc.add(np.array([0, 1]), np.zeros((2, 2)))
    with pytest.raises(ValueError, match="unknown task"):
        acc.compute("ranking")
    with pytest.raises(ValueError):
        acc.add(np.array([0, 1, 1]), np.zeros((2, 2)))
    acc.reset()
    assert len(acc) == 0


def test_torch_bfloat16_batches_are_widened():
    torch = pytest.importorskip("torch")
    acc = Accumulator()
    acc.add(torch.tensor([0, 1]), torch.tensor([[2.0, 0.0], [0.0, 2.0]], dtype=torch.bfloat16))
    m = acc.compute("multiclass", class_names=names(2))
    assert m["accuracy"] == 1.0 and not math.isnan(m["macro_f1"])
