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


def write_report(result, data, model: ModelConfig, run: str, baselines: dict | None = None) -> dict:
    """report.json + report.md (+ PNGs) in the run directory; returns the JSON summary. `model`
    gives the task and fusion, `run` the run directory as given (the report's title)."""
    out = Path(result.out)
    final = result.test or result.val
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
    }
    (out / "report.json").write_text(json.dumps(summary, indent=1, default=str))
    plot_curves(result.history, result.monitor, out / "curves.png")
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
    ]
    for name, counts in (d.get("missing") or {}).items():
        lines.append(f"- field {name}: samples without it (masked, never zero-filled): {counts}")
    final = summary["test"] or summary["val"]
    if final and "per_class" in final:
        lines += [
            "",
            "## Per class (" + ("test" if summary["test"] else "val") + ")",
            "",
            "| class | precision | recall | f1 | support |",
            "|---|---|---|---|---|",
        ]
        for c, m in final["per_class"].items():
            lines.append(
                f"| {c} | {_fmt(m.get('precision'))} | {_fmt(m.get('recall'))} | {_fmt(m.get('f1'))} | "
                f"{m.get('support')} |"
            )
    lines += ["", "![curves](curves.png)"] + (
        ["", "![confusion](confusion.png)"] if final and "confusion" in final else []
    )
    return "\n".join(lines) + "\n"


def _fmt(v) -> str:
    return "n/a" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v)
