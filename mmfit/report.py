"""Run outputs a person looks at: report.md/.json, loss/metric curves and confusion matrix PNGs."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .config import ModelConfig  # noqa: E402

MAIN = {
    "multiclass": ("accuracy", "macro_f1"),
    "multilabel": ("mAP", "micro_f1"),
    "regression": ("mae", "rmse"),
    "segment": ("segment_f1", "frame_accuracy"),
}


def headline(task: str, metrics: dict | None) -> dict:
    if not metrics:
        return {}
    return {k: metrics.get(k) for k in MAIN[task] if k in metrics}


def plot_curves(history: list[dict], monitor: str, path: Path) -> None:
    epochs = [h["epoch"] for h in history]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    a.plot(epochs, [h["train/loss"] for h in history], label="train")
    a.plot(epochs, [h["val/loss"] for h in history], label="val")
    a.set(xlabel="epoch", ylabel="loss", title="loss")
    a.legend()
    b.plot(epochs, [h.get(monitor) for h in history], color="tab:green")
    b.set(xlabel="epoch", ylabel=monitor, title=monitor)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_confusion(confusion: list[list[int]], classes: list[str], path: Path) -> None:
    cm = np.asarray(confusion)
    size = max(3.5, 0.45 * len(classes) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(cm, cmap="Blues")
    ax.set(
        xticks=range(len(classes)),
        yticks=range(len(classes)),
        xlabel="predicted",
        ylabel="true",
        title="confusion (test)" if cm.sum() else "confusion",
    )
    ax.set_xticklabels(classes, rotation=45, ha="right")
    ax.set_yticklabels(classes)
    for i in range(len(classes)):
        for j in range(len(classes)):
            ax.text(
                j,
                i,
                int(cm[i, j]),
                ha="center",
                va="center",
                color="white" if cm[i, j] > cm.max() / 2 else "black",
                fontsize=8,
            )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_ablation(rows: list[dict], metric: str, split: str, path: Path) -> None:
    """One bar chart of `metric`: all fields, without each field, and each field's unimodal baseline."""
    bars = [("all fields", rows[0]["all"], "tab:blue")]
    bars += [(f"without {r['field']}", r["without"], "tab:orange") for r in rows]
    bars += [(f"only {r['field']} (unimodal)", r["unimodal"], "tab:green") for r in rows if r["unimodal"] is not None]
    names = [b[0] for b in bars]
    values = [np.nan if b[1] is None else b[1] for b in bars]
    fig, ax = plt.subplots(figsize=(6.4, 0.45 * len(bars) + 1.4))
    ax.barh(range(len(bars)), np.nan_to_num(values), color=[b[2] for b in bars])
    ax.set(yticks=range(len(bars)), xlabel=f"{metric} ({split})", title="modality contributions")
    ax.set_yticklabels(names)
    ax.invert_yaxis()
    ax.margins(x=0.15)  # room for the value labels
    for i, v in enumerate(values):
        ax.text(0 if np.isnan(v) else v, i, " n/a" if np.isnan(v) else f" {v:.3f}", va="center", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def contribution_summary(ablation: dict | None, task: str) -> dict | None:
    """The ablation (ablate.ablate's dict with "split" and "unimodal") with its table for the task's main
    metric: "metric" and "rows" (ablate.contributions) added; None stays None."""
    from .ablate import contributions  # torch and the loader, only when there is an ablation

    if not ablation:
        return None
    metric = MAIN[task][0]
    return {**ablation, "metric": metric, "rows": contributions(ablation, metric, ablation.get("unimodal"))}


def write_report(result, data, model: ModelConfig, run: str, baselines: dict | None = None) -> dict:
    """report.json + report.md (+ PNGs) in the run directory; returns the JSON summary. `model`
    gives the task and fusion, `run` the run directory as given (the report's title). With 2 fields
    or more, the modality contributions (each field masked out at test time) on the test split, or
    val without one, using the trained model and task that `result` holds."""
    from .ablate import run_contributions

    out = Path(result.out)
    final = result.test or result.val
    contrib = contribution_summary(run_contributions(result, data, baselines), model.task)
    summary = {
        "task": model.task,
        "fusion": model.fusion,
        "fields": data.field_names,
        "monitor": result.monitor,
        "best_epoch": result.best_epoch,
        "best_score": result.best_score,
        "epochs_run": len(result.history),
        "data": data.report,
        "val": result.val,
        "test": result.test,
        "classes": data.classes,
        "baselines": baselines or {},
        "contributions": contrib,
    }
    (out / "report.json").write_text(json.dumps(summary, indent=1, default=str))
    plot_curves(result.history, result.monitor, out / "curves.png")
    if contrib:
        plot_ablation(contrib["rows"], contrib["metric"], contrib["split"], out / "ablation.png")
    if final and "confusion" in final:
        plot_confusion(final["confusion"], data.classes, out / "confusion.png")
    (out / "report.md").write_text(markdown(summary, run))
    return summary


def comparison_rows(summary: dict) -> list[tuple[str, dict]]:
    rows = [(f"fused ({summary['fusion']}: {', '.join(summary['fields'])})", summary)]
    rows += [(f"unimodal: {name}", s) for name, s in summary["baselines"].items()]
    return rows


def markdown(summary: dict, run: str) -> str:
    """report.md: results with the unimodal baselines, data counts, per-class table, plots."""
    task = summary["task"]
    keys = MAIN[task]
    lines = [
        f"# mmfit report: {run}",
        "",
        f"Task **{task}**, fusion **{summary['fusion']}**, fields {', '.join(summary['fields'])}. "
        f"Best epoch {summary['best_epoch']} of {summary['epochs_run']} by `{summary['monitor']}` = "
        f"{summary['best_score']:.4f}; best weights restored.",
        "",
        "## Results",
        "",
        "| model | " + " | ".join(f"val {k}" for k in keys) + " | " + " | ".join(f"test {k}" for k in keys) + " |",
        "|---" * (1 + 2 * len(keys)) + "|",
    ]
    for name, s in comparison_rows(summary):
        vals = [_fmt((s["val"] or {}).get(k)) for k in keys] + [_fmt((s["test"] or {}).get(k)) for k in keys]
        lines.append(f"| {name} | " + " | ".join(vals) + " |")
    d = summary["data"]
    lines += [
        "",
        "## Data",
        "",
        f"- samples in cache (ok): {d.get('samples')}, labelled: {d.get('labelled')}, "
        f"unlabelled: {d.get('unlabelled')}",
        f"- splits: {d.get('splits')}",
        f"- label ids not in the cache: {d.get('unknown_label_count', 0)}"
        + (f" (e.g. {', '.join(d['unknown_label_ids'][:5])})" if d.get("unknown_label_ids") else ""),
        f"- normalisation: {NORMALISATION.get(d.get('norm'), d.get('norm'))}",
    ]
    for name, counts in (d.get("missing") or {}).items():
        lines.append(f"- field {name}: samples without it (masked, never zero-filled): {counts}")
    final = summary["test"] or summary["val"]
    if final and "per_class" in final:
        lines += ["", "## Per class (" + ("test" if summary["test"] else "val") + ")", ""]
        lines += per_class_lines(final)
    lines += contribution_lines(summary.get("contributions"))
    lines += ["", "![curves](curves.png)"] + (
        ["", "![confusion](confusion.png)"] if final and "confusion" in final else []
    )
    return "\n".join(lines) + "\n"


NORMALISATION = {  # data.report["norm"] -> what report.md says; no key: normalize was off
    None: "off (features as stored)",
    "off": "off (features as stored)",
    "train": "per-field mean/std of the train split",
    "cache": "per-field mean/std recorded in the cache by `mmcache stats` (every sample of the cache, all splits), "
    "not the train split's",
}
NO_POSITIVES, NONE_PREDICTED = "n/a (no positives)", "n/a (none predicted)"


def per_class_lines(final: dict) -> list[str]:
    """The per-class table. What the metrics leave undefined (report.json: None, or named in "undefined")
    reads n/a here, never 0.0000: a class without positives has no recall, F1 or AP; a class never
    predicted has no precision. Multilabel adds each class's AP."""
    with_ap = any("ap" in m for m in final["per_class"].values())
    undefined = set(final.get("undefined") or [])
    lines = [
        "| class | precision | recall | f1 | " + ("ap | " if with_ap else "") + "support |",
        "|---" * (5 + with_ap) + "|",
    ]
    for c, m in final["per_class"].items():
        if not m.get("support"):
            cells = [NO_POSITIVES] * (4 if with_ap else 3)
        else:
            precision = NONE_PREDICTED if c in undefined else _fmt(m.get("precision"))
            cells = [precision, _fmt(m.get("recall")), _fmt(m.get("f1"))]
            cells += [NO_POSITIVES if m.get("ap") is None else _fmt(m["ap"])] if with_ap else []
        lines.append(f"| {c} | " + " | ".join(cells) + f" | {m.get('support')} |")
    return lines


def contribution_lines(contrib: dict | None) -> list[str]:
    """The "Modality contributions" section (nothing with fewer than 2 fields)."""
    if not contrib:
        return []
    metric, split = contrib["metric"], contrib["split"]
    lines = [
        "",
        f"## Modality contributions ({split})",
        "",
        f"`{metric}` on the {split} split ({contrib['n']} samples) with every field, and with each field masked "
        "out as missing for every sample at test time (masked, never zero-filled). Contribution: how much worse "
        f"`{metric}` is without the field. Unimodal: the baseline trained on that field alone "
        "(`--unimodal-baselines`), on the samples that have the field.",
        "",
        "| field | all fields | without it | contribution | unimodal |",
        "|---|---|---|---|---|",
    ]
    for r in contrib["rows"]:
        change = "n/a" if r["contribution"] is None else f"{r['contribution']:+.4f}"
        lines.append(f"| {r['field']} | {_fmt(r['all'])} | {_fmt(r['without'])} | {change} | {_fmt(r['unimodal'])} |")
    empty = [f"{r['field']}: {r['left_empty']}" for r in contrib["rows"] if r["left_empty"]]
    if empty:
        lines += ["", f"Samples left with no field when one is masked (scored with no evidence): {', '.join(empty)}."]
    return lines + ["", "![modality contributions](ablation.png)"]


def _fmt(v) -> str:
    return "n/a" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v)
