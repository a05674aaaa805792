"""Evaluation metrics for the fusion/head trainer, computed over a whole split.

Every metric is computed once from the predictions of the entire split, never averaged per batch, so the result does
not depend on how the rows were batched. `Accumulator` collects per-batch outputs and concatenates them before
computing. The functions return plain dicts of Python floats, ints, lists and None (never NaN), ready for
`json.dumps` into metrics.jsonl.

Conventions:
- Precision, recall and F1 with a zero denominator are reported as 0.0 (sklearn's ``zero_division=0``) and the class
  is named in the ``"undefined"`` list. F1 is ``2TP / (2TP + FP + FN)``.
- Macro averages run over every class in ``class_names`` (sklearn with ``labels=range(C)``), undefined ones included
  as 0.0. Average precision is different: a class without positives has no AP; it is reported as None, named in
  ``"undefined_ap"`` and left out of the mean.
- Average precision follows sklearn: ``AP = sum_n (R_n - R_{n-1}) P_n`` over the distinct score thresholds, tied
  scores forming one threshold. It only uses the ranking, so logits work as well as probabilities.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = [
    "Accumulator",
    "multiclass_metrics",
    "multilabel_metrics",
    "regression_metrics",
    "segment_metrics",
    "tune_thresholds",
]

IGNORE = -1  # label of padded / ignored time steps in segment tasks
TOP_K = 5  # top-k accuracy is reported for this k when there are more than k classes


# ----------------------------------------------------------------------------------------------------------------
# conversions and checks


def _to_numpy(x: Any) -> np.ndarray:
    """A numpy copy of an array-like; torch tensors are detached and moved to CPU (half floats widened)."""
    if hasattr(x, "detach"):  # torch.Tensor, without importing torch
        x = x.detach().cpu()
        if x.is_floating_point() and x.element_size() < 4:  # bfloat16 has no numpy dtype
            x = x.float()
        x = x.numpy()
    return np.array(x)


def _float(x: Any) -> float | None:
    """A Python float, or None where the value is not finite."""
    x = float(x)
    return x if np.isfinite(x) else None


def _labels(y: Any, name: str = "y_true") -> np.ndarray:
    """Integer labels from an int, bool or integral-float array."""
    y = np.asarray(y)
    if y.dtype.kind in "iub":
        return y.astype(np.int64)
    if y.dtype.kind == "f" and np.all(np.isfinite(y)) and np.all(y == np.round(y)):
        return y.astype(np.int64)
    raise ValueError(f"{name} must hold integer labels, got dtype {y.dtype}")


def _scores(s: Any, ndim: int, name: str = "scores") -> np.ndarray:
    """Finite float64 scores of the given rank."""
    s = np.asarray(s, dtype=np.float64)
    if s.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {s.shape}")
    if not np.all(np.isfinite(s)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return s


def _check_names(class_names: list[str], n_classes: int) -> list[str]:
    """The class names as a list, checked to be unique and one per score column."""
    names = [str(c) for c in class_names]
    if n_classes == 0:
        raise ValueError("scores have no class columns")
    if len(names) != n_classes:
        raise ValueError(f"{len(names)} class names for {n_classes} score columns")
    if len(set(names)) != len(names):
        raise ValueError("class names must be unique")
    return names


def _check_rows(y: np.ndarray, s: np.ndarray) -> None:
    """Same non-zero number of rows in labels and scores."""
    if y.shape[0] != s.shape[0]:
        raise ValueError(f"y_true has {y.shape[0]} rows but scores has {s.shape[0]}")
    if y.shape[0] == 0:
        raise ValueError("no samples to evaluate")


# ----------------------------------------------------------------------------------------------------------------
# shared building blocks


def _prf(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Precision, recall, F1 per class (0.0 where undefined) and the mask of classes with an undefined one."""
    tp, fp, fn = (np.asarray(a, dtype=np.float64) for a in (tp, fp, fn))  # (C,) each
    n_pred, n_true, f1_den = tp + fp, tp + fn, 2 * tp + fp + fn
    precision = np.divide(tp, n_pred, out=np.zeros_like(tp), where=n_pred > 0)
    recall = np.divide(tp, n_true, out=np.zeros_like(tp), where=n_true > 0)
    f1 = np.divide(2 * tp, f1_den, out=np.zeros_like(tp), where=f1_den > 0)
    return precision, recall, f1, (n_pred == 0) | (n_true == 0)


def _confusion(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Confusion counts (C, C): rows are true classes, columns predicted classes."""
    flat = np.bincount(y_true * n_classes + y_pred, minlength=n_classes * n_classes)
    return flat.reshape(n_classes, n_classes)


def _per_class_table(names: list[str], precision, recall, f1, support) -> dict[str, dict[str, Any]]:
    """{name: {precision, recall, f1, support}} with Python scalars."""
    return {
        name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(n)}
        for name, p, r, f, n in zip(names, precision, recall, f1, support, strict=True)
    }


def _ranked(hits: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scores sorted descending (M,), the last index of each run of tied scores (G,), and true positives there (G,).

    Predicting positive down to a tied group includes the whole group, so counts are only taken at group ends.
    """
    order = np.argsort(scores)[::-1]
    s = scores[order]
    last = np.flatnonzero(np.r_[s[:-1] != s[1:], True])
    return s, last, np.cumsum(hits[order], dtype=np.int64)[last]


def _average_precision(hits: np.ndarray, scores: np.ndarray, n_pos: int) -> float:
    """Average precision of ranked hits (M,) by scores (M,); NaN when there is nothing to recall.

    ``n_pos`` is the number of positives to recall, which may exceed the hits present in the ranking (segments
    that were never predicted). Sum over distinct thresholds of recall gained times precision, as sklearn.
    """
    if n_pos == 0:
        return float("nan")
    if len(hits) == 0:
        return 0.0
    _, last, tp = _ranked(hits, scores)
    precision = tp / (last + 1)  # (G,)
    return float(np.dot(np.diff(tp, prepend=0), precision) / n_pos)


def _column_ap(y_true: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Per-class AP (C,) of {0,1} labels (N, C) against scores (N, C); NaN for classes without positives."""
    return np.array(
        [_average_precision(y_true[:, j], scores[:, j], int(y_true[:, j].sum())) for j in range(y_true.shape[1])]
    )


# ----------------------------------------------------------------------------------------------------------------
# multiclass


def _top_k_accuracy(y_true: np.ndarray, scores: np.ndarray, k: int) -> float:
    """Fraction of rows whose true class ranks within the top k; ties rank the lower class index first (as argmax)."""
    true_score = scores[np.arange(len(y_true)), y_true][:, None]  # (N, 1)
    lower_index = np.arange(scores.shape[1])[None, :] < y_true[:, None]  # (N, C)
    rank = np.sum(scores > true_score, axis=1) + np.sum((scores == true_score) & lower_index, axis=1)  # (N,)
    return float(np.mean(rank < k))


def multiclass_metrics(y_true: Any, scores: Any, class_names: list[str]) -> dict[str, Any]:
    """Single-label classification metrics from argmax predictions over logits or probabilities.

    Keys: n, accuracy, macro_f1, micro_f1, weighted_f1, per_class {name: {precision, recall, f1, support}},
    confusion (C x C, rows true, columns predicted), undefined (classes with no predictions or no support), and
    top5_accuracy when there are more than 5 classes.
    """
    y = _labels(y_true)  # (N,)
    s = _scores(scores, 2)  # (N, C)
    if y.ndim != 1:
        raise ValueError(f"y_true must be 1-D, got shape {y.shape}")
    _check_rows(y, s)
    n_classes = s.shape[1]
    names = _check_names(class_names, n_classes)
    if y.min() < 0 or y.max() >= n_classes:
        raise ValueError(f"labels must lie in [0, {n_classes}), got [{y.min()}, {y.max()}]")

    pred = np.argmax(s, axis=1)  # (N,)
    cm = _confusion(y, pred, n_classes)  # (C, C)
    tp = np.diag(cm)
    support = cm.sum(axis=1)
    precision, recall, f1, undefined = _prf(tp, cm.sum(axis=0) - tp, support - tp)
    out: dict[str, Any] = {
        "n": int(len(y)),
        "accuracy": float(tp.sum() / len(y)),
        "macro_f1": float(f1.mean()),
        "micro_f1": float(tp.sum() / len(y)),  # 2TP / (2TP + FP + FN) with FP = FN = N - TP
        "weighted_f1": float(np.sum(f1 * support) / support.sum()),
        "per_class": _per_class_table(names, precision, recall, f1, support),
        "confusion": cm.tolist(),
        "undefined": [name for name, u in zip(names, undefined, strict=True) if u],
    }
    if n_classes > TOP_K:
        out[f"top{TOP_K}_accuracy"] = _top_k_accuracy(y, s, TOP_K)
    return out


# ----------------------------------------------------------------------------------------------------------------
# multilabel


def _binary_labels(y_true: Any, shape: tuple[int, ...]) -> np.ndarray:
    """{0,1} integer labels of the given shape."""
    y = _labels(y_true)
    if y.shape != shape:
        raise ValueError(f"y_true has shape {y.shape}, scores {shape}")
    if not np.all((y == 0) | (y == 1)):
        raise ValueError("multilabel y_true must hold only 0 and 1")
    return y


def tune_thresholds(y_true: Any, scores: Any) -> np.ndarray:
    """Per-class thresholds (C,) that maximise each class's F1 on this data, for predictions ``scores >= threshold``.

    Meant to be tuned on validation and applied to test. The threshold is placed halfway between the lowest score
    predicted positive and the next lower distinct score, so it generalises rather than sitting on a sample. A class
    without positives gets a threshold just above its highest score (predict nothing); on ties in F1 the higher
    threshold (fewer positives) wins.
    """
    s = _scores(scores, 2)  # (N, C)
    y = _binary_labels(y_true, s.shape)  # (N, C)
    _check_rows(y, s)
    return np.array([_best_threshold(y[:, j], s[:, j]) for j in range(s.shape[1])])


def _best_threshold(y: np.ndarray, s: np.ndarray) -> float:
    """The F1-maximising threshold of one class: y (N,) {0,1}, s (N,) scores."""
    if not y.any():
        return float(np.nextafter(s.max(), np.inf))
    s_sorted, last, tp = _ranked(y, s)  # tp: true positives when predicting down to each distinct score
    f1 = 2 * tp / (last + 1 + y.sum())  # 2TP / (n_predicted + n_positive)
    best = int(np.argmax(f1))
    lowest_positive = s_sorted[last[best]]
    if best + 1 == len(last):
        return float(lowest_positive)
    mid = (lowest_positive + s_sorted[last[best + 1]]) / 2.0
    return float(mid if mid > s_sorted[last[best + 1]] else lowest_positive)


def multilabel_metrics(y_true: Any, scores: Any, class_names: list[str], thresholds: Any = None) -> dict[str, Any]:
    """Multi-label metrics: ranking metrics from the raw scores, F1 from ``scores >= thresholds``.

    Keys: n, mAP (mean AP over classes with positives; None when none has), micro_ap (AP of all cells pooled; None
    without positives), macro_f1, micro_f1, per_class {name: {ap, precision, recall, f1, support, threshold}},
    undefined_ap (classes without positives), undefined (classes whose precision or recall is undefined).
    Default thresholds are 0.0, i.e. probability 0.5 when the scores are logits.
    """
    s = _scores(scores, 2)  # (N, C)
    y = _binary_labels(y_true, s.shape)  # (N, C)
    _check_rows(y, s)
    n_classes = s.shape[1]
    names = _check_names(class_names, n_classes)
    thr = np.zeros(n_classes) if thresholds is None else np.asarray(_to_numpy(thresholds), dtype=np.float64)
    thr = np.broadcast_to(thr, (n_classes,))  # (C,)

    pred = s >= thr[None, :]  # (N, C)
    tp = np.sum(pred & (y == 1), axis=0)  # (C,)
    fp = np.sum(pred & (y == 0), axis=0)
    fn = np.sum(~pred & (y == 1), axis=0)
    precision, recall, f1, undefined = _prf(tp, fp, fn)
    micro_den = 2 * tp.sum() + fp.sum() + fn.sum()

    ap = _column_ap(y, s)  # (C,), NaN without positives
    defined = np.isfinite(ap)
    micro_ap = _average_precision(y.ravel(), s.ravel(), int(y.sum()))
    per_class = _per_class_table(names, precision, recall, f1, y.sum(axis=0))
    for name, a, t in zip(names, ap, thr, strict=True):
        per_class[name] = {"ap": _float(a), **per_class[name], "threshold": _float(t)}
    return {
        "n": int(y.shape[0]),
        "mAP": float(ap[defined].mean()) if defined.any() else None,
        "micro_ap": _float(micro_ap),
        "macro_f1": float(f1.mean()),
        "micro_f1": float(2 * tp.sum() / micro_den) if micro_den > 0 else 0.0,
        "per_class": per_class,
        "undefined_ap": [name for name, d in zip(names, defined, strict=True) if not d],
        "undefined": [name for name, u in zip(names, undefined, strict=True) if u],
    }


# ----------------------------------------------------------------------------------------------------------------
# regression


def _r2(y: np.ndarray, p: np.ndarray) -> float | None:
    """Coefficient of determination of one output (N,); None when y is constant."""
    if np.ptp(y) == 0:
        return None
    return float(1.0 - np.sum((y - p) ** 2) / np.sum((y - y.mean()) ** 2))


def _pearson(y: np.ndarray, p: np.ndarray) -> float | None:
    """Pearson correlation of one output (N,); None when either side is constant or N < 2."""
    if len(y) < 2 or np.ptp(y) == 0 or np.ptp(p) == 0:
        return None
    yc, pc = y - y.mean(), p - p.mean()
    return float(np.clip(np.dot(yc, pc) / np.sqrt(np.dot(yc, yc) * np.dot(pc, pc)), -1.0, 1.0))


def _mean_defined(values: list[float | None]) -> float | None:
    """Mean of the non-None values, None when there are none."""
    kept = [v for v in values if v is not None]
    return float(np.mean(kept)) if kept else None


def regression_metrics(y_true: Any, y_pred: Any) -> dict[str, Any]:
    """Regression metrics for one (N,) or several (N, K) targets.

    Keys: n, mae and rmse over all values, r2 and pearson (mean over outputs where defined; None when no output
    has variance), and per_output [{mae, rmse, r2, pearson}] when K > 1. r2 matches sklearn's ``r2_score`` with
    uniform averaging when every output varies.
    """
    y = np.asarray(y_true, dtype=np.float64)
    p = np.asarray(y_pred, dtype=np.float64)
    if y.shape != p.shape or y.ndim not in (1, 2):
        raise ValueError(f"y_true {y.shape} and y_pred {p.shape} must have the same (N,) or (N, K) shape")
    if y.shape[0] == 0:
        raise ValueError("no samples to evaluate")
    if not (np.all(np.isfinite(y)) and np.all(np.isfinite(p))):
        raise ValueError("regression targets and predictions must be finite")
    y2, p2 = y.reshape(len(y), -1), p.reshape(len(p), -1)  # (N, K)
    err = p2 - y2
    per_output = [
        {
            "mae": float(np.mean(np.abs(err[:, k]))),
            "rmse": float(np.sqrt(np.mean(err[:, k] ** 2))),
            "r2": _r2(y2[:, k], p2[:, k]),
            "pearson": _pearson(y2[:, k], p2[:, k]),
        }
        for k in range(y2.shape[1])
    ]
    out: dict[str, Any] = {
        "n": int(y.shape[0]),
        "mae": float(np.mean(np.abs(err))),
        "rmse": float(np.sqrt(np.mean(err**2))),
        "r2": _mean_defined([o["r2"] for o in per_output]),
        "pearson": _mean_defined([o["pearson"] for o in per_output]),
    }
    if y.ndim == 2 and y.shape[1] > 1:
        out["per_output"] = per_output
    return out


# ----------------------------------------------------------------------------------------------------------------
# temporal segments


class _Segments:
    """Contiguous runs of one non-background label in a flat label stream where -1 separates sequences."""

    def __init__(self, flat: np.ndarray, background: int | None):
        change = np.ones(len(flat), dtype=bool)
        change[1:] = flat[1:] != flat[:-1]
        starts = np.flatnonzero(change)  # (R,) first index of each run
        ends = np.r_[starts[1:], len(flat)]  # (R,) one past its last index
        labels = flat[starts]
        keep = labels != IGNORE
        if background is not None:
            keep &= labels != background
        seg_of_run = np.full(len(starts), -1)
        seg_of_run[keep] = np.arange(keep.sum())
        self.label = labels[keep]  # (S,)
        self.length = (ends - starts)[keep]  # (S,)
        self.of_frame = seg_of_run[np.cumsum(change) - 1]  # (L,) segment index of each frame, -1 outside any

    def __len__(self) -> int:
        return len(self.label)


def _match_segments(pred: _Segments, true: _Segments, iou_threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """One-to-one matches of same-class segments with IoU >= threshold, greedily by decreasing IoU.

    Returns the matched flags of the predicted (P,) and true (T,) segments. At thresholds >= 0.5 a segment can
    match at most one segment of the other side (same-class runs are disjoint), so the greedy order does not matter.
    """
    pred_hit = np.zeros(len(pred), dtype=bool)
    true_hit = np.zeros(len(true), dtype=bool)
    if len(pred) == 0 or len(true) == 0:
        return pred_hit, true_hit
    both = (pred.of_frame >= 0) & (true.of_frame >= 0)
    both &= pred.label[np.maximum(pred.of_frame, 0)] == true.label[np.maximum(true.of_frame, 0)]
    if not both.any():
        return pred_hit, true_hit
    pair, inter = np.unique(pred.of_frame[both] * len(true) + true.of_frame[both], return_counts=True)
    pi, ti = np.divmod(pair, len(true))  # overlapping same-class pairs and their intersections
    iou = inter / (pred.length[pi] + true.length[ti] - inter)
    for k in np.flatnonzero(iou >= iou_threshold)[np.argsort(-iou[iou >= iou_threshold], kind="stable")]:
        if not pred_hit[pi[k]] and not true_hit[ti[k]]:
            pred_hit[pi[k]] = true_hit[ti[k]] = True
    return pred_hit, true_hit


def _flatten_sequences(a: np.ndarray, fill: float) -> np.ndarray:
    """(N, T, ...) -> (N * (T + 1), ...) with one `fill` step after each sequence so runs never cross sequences."""
    pad = np.full((a.shape[0], 1, *a.shape[2:]), fill, dtype=a.dtype)
    return np.concatenate([a, pad], axis=1).reshape(-1, *a.shape[2:])


def segment_metrics(
    y_true: Any,
    scores: Any,
    class_names: list[str],
    background: int | None = 0,
    iou_threshold: float = 0.5,
) -> dict[str, Any]:
    """Frame- and segment-level metrics of per-step labels; steps labelled -1 are padding and ignored.

    Frame level (valid steps only, all classes): frame_accuracy, frame_macro_f1, frame_per_class.
    Segment level: segments are contiguous runs of the same non-background label within a sequence, cut at ignored
    steps, for the truth and for the argmax predictions. A predicted segment is a true positive when it matches a
    true segment of its class with IoU >= iou_threshold, each true segment matching at most once. Reported per
    class (segment_per_class {name: {precision, recall, f1, ap, n_true, n_pred}}) and as segment_precision,
    segment_recall, segment_f1 (macro over non-background classes; undefined ones count 0.0 and are named in
    segment_undefined), segment_micro_f1, and segment_map (predicted segments ranked by the mean score of their
    class over the segment; classes without true segments are named in segment_undefined_ap and left out).
    """
    y = _labels(y_true)  # (N, T)
    s = _scores(scores, 3)  # (N, T, C)
    if y.shape != s.shape[:2]:
        raise ValueError(f"y_true {y.shape} must match the first two dimensions of scores {s.shape}")
    _check_rows(y, s)
    n_classes = s.shape[2]
    names = _check_names(class_names, n_classes)
    if np.any((y < IGNORE) | (y >= n_classes)):
        raise ValueError(f"labels must lie in [0, {n_classes}) or be {IGNORE} (ignored)")
    if background is not None and not 0 <= background < n_classes:
        raise ValueError(f"background {background} is not a class index")
    valid = y != IGNORE  # (N, T)
    if not valid.any():
        raise ValueError("no valid (non -1) steps to evaluate")

    pred = np.where(valid, np.argmax(s, axis=2), IGNORE)  # (N, T)
    out = _frame_metrics(y[valid], pred[valid], names)
    out.update(_segment_level(y, pred, s, names, background, iou_threshold))
    return out


def _frame_metrics(y: np.ndarray, pred: np.ndarray, names: list[str]) -> dict[str, Any]:
    """Accuracy, macro F1 and per-class table of valid frames: y (M,), pred (M,)."""
    cm = _confusion(y, pred, len(names))
    tp = np.diag(cm)
    precision, recall, f1, undefined = _prf(tp, cm.sum(axis=0) - tp, cm.sum(axis=1) - tp)
    return {
        "n_frames": int(len(y)),
        "frame_accuracy": float(tp.sum() / len(y)),
        "frame_macro_f1": float(f1.mean()),
        "frame_per_class": _per_class_table(names, precision, recall, f1, cm.sum(axis=1)),
        "frame_undefined": [name for name, u in zip(names, undefined, strict=True) if u],
    }


def _segment_level(y, pred, scores, names, background, iou_threshold) -> dict[str, Any]:
    """Segment F1 and AP per class and averaged: y, pred (N, T) with -1 ignored, scores (N, T, C)."""
    true_seg = _Segments(_flatten_sequences(y, IGNORE), background)
    pred_seg = _Segments(_flatten_sequences(pred, IGNORE), background)
    pred_hit, true_hit = _match_segments(pred_seg, true_seg, iou_threshold)

    # confidence of a predicted segment: mean score of its class = mean of the per-step maximum, as it is the argmax
    step_max = _flatten_sequences(scores.max(axis=2), 0.0)  # (L,)
    in_seg = pred_seg.of_frame >= 0
    conf = np.bincount(pred_seg.of_frame[in_seg], weights=step_max[in_seg], minlength=len(pred_seg))
    conf = conf / np.maximum(pred_seg.length, 1)  # (P,)

    classes = [c for c in range(len(names)) if c != background]
    n_true = np.array([np.sum(true_seg.label == c) for c in classes])  # (K,)
    n_pred = np.array([np.sum(pred_seg.label == c) for c in classes])
    tp = np.array([np.sum(pred_hit[pred_seg.label == c]) for c in classes])
    precision, recall, f1, undefined = _prf(tp, n_pred - tp, n_true - tp)
    ap = np.array(
        [_class_segment_ap(pred_hit, conf, pred_seg.label == c, k) for c, k in zip(classes, n_true, strict=True)]
    )
    micro_den = 2 * tp.sum() + (n_pred - tp).sum() + (n_true - tp).sum()

    seg_names = [names[c] for c in classes]
    per_class = {
        name: {
            "precision": float(p),
            "recall": float(r),
            "f1": float(f),
            "ap": _float(a),
            "n_true": int(nt),
            "n_pred": int(npr),
        }
        for name, p, r, f, a, nt, npr in zip(seg_names, precision, recall, f1, ap, n_true, n_pred, strict=True)
    }
    defined = np.isfinite(ap)
    return {
        "iou_threshold": float(iou_threshold),
        "segment_precision": float(precision.mean()) if classes else None,
        "segment_recall": float(recall.mean()) if classes else None,
        "segment_f1": float(f1.mean()) if classes else None,
        "segment_micro_f1": float(2 * tp.sum() / micro_den) if micro_den > 0 else 0.0,
        "segment_map": float(ap[defined].mean()) if defined.any() else None,
        "segment_per_class": per_class,
        "segment_undefined": [name for name, u in zip(seg_names, undefined, strict=True) if u],
        "segment_undefined_ap": [name for name, d in zip(seg_names, defined, strict=True) if not d],
    }


def _class_segment_ap(pred_hit: np.ndarray, conf: np.ndarray, of_class: np.ndarray, n_true: int) -> float:
    """AP of one class's predicted segments ranked by confidence; NaN when the class has no true segments."""
    hits, c = pred_hit[of_class], conf[of_class]  # (P_c,)
    return _average_precision(hits, c, int(n_true))


# ----------------------------------------------------------------------------------------------------------------
# accumulation over batches


def _concat_rows(ys: list[np.ndarray], ss: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Batches stacked along the first axis."""
    return np.concatenate(ys, axis=0), np.concatenate(ss, axis=0)


def _pad_time(a: np.ndarray, length: int, fill: float) -> np.ndarray:
    """(B, T, ...) padded with `fill` along axis 1 to (B, length, ...)."""
    widths = [(0, 0), (0, length - a.shape[1])] + [(0, 0)] * (a.ndim - 2)
    return np.pad(a, widths, constant_values=fill)


def _concat_sequences(ys: list[np.ndarray], ss: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Batches of (B, T_b) labels and (B, T_b, C) scores padded to the longest T (labels -1, scores 0) and stacked."""
    length = max(y.shape[1] for y in ys)
    y = np.concatenate([_pad_time(b, length, IGNORE) for b in ys], axis=0)
    s = np.concatenate([_pad_time(b, length, 0.0) for b in ss], axis=0)
    return y, s


_TASKS: dict[str, tuple[Callable[..., tuple[np.ndarray, np.ndarray]], Callable[..., dict[str, Any]]]] = {
    "multiclass": (_concat_rows, multiclass_metrics),
    "multilabel": (_concat_rows, multilabel_metrics),
    "regression": (_concat_rows, regression_metrics),
    "segment": (_concat_sequences, segment_metrics),
}


class Accumulator:
    """Collects per-batch targets and outputs (numpy or torch, any device) and computes metrics on the whole split.

    >>> acc = Accumulator()
    >>> for batch in loader:  # doctest: +SKIP
    ...     acc.add(batch["y"], model(batch["x"]))
    >>> acc.compute("multiclass", class_names=names)  # doctest: +SKIP

    For regression the second argument is the prediction. Tasks: multiclass, multilabel, regression, segment; extra
    keyword arguments go to the task's metric function.
    """

    tasks = tuple(_TASKS)

    def __init__(self) -> None:
        self._y: list[np.ndarray] = []
        self._s: list[np.ndarray] = []

    def add(self, y_true: Any, scores: Any) -> None:
        """Store one batch, copied to CPU numpy."""
        y, s = _to_numpy(y_true), _to_numpy(scores)
        if y.ndim == 0 or s.ndim == 0 or y.shape[0] != s.shape[0]:
            raise ValueError(f"batch y_true {y.shape} and scores {s.shape} need the same leading (batch) size")
        self._y.append(y)
        self._s.append(s)

    def __len__(self) -> int:
        """Number of rows (samples or sequences) collected so far."""
        return sum(len(y) for y in self._y)

    def reset(self) -> None:
        """Forget everything collected."""
        self._y.clear()
        self._s.clear()

    def arrays(self, task: str) -> tuple[np.ndarray, np.ndarray]:
        """The collected y_true and scores, concatenated as the task expects."""
        if task not in _TASKS:
            raise ValueError(f"unknown task {task!r}; expected one of {', '.join(_TASKS)}")
        if not self._y:
            raise ValueError("nothing accumulated")
        concat, _ = _TASKS[task]
        return concat(self._y, self._s)

    def compute(self, task: str, **kwargs: Any) -> dict[str, Any]:
        """Metrics of the task over everything added so far."""
        y, s = self.arrays(task)
        _, metric = _TASKS[task]
        return metric(y, s, **kwargs)
