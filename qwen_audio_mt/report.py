"""The evaluation report of a run: metrics.json, metrics.md, metrics.png and loss_curve.png.

- metrics.json: `evaluation.evaluate_model`'s dict as it is (round-trips through json).
- metrics.md (and the table printed at the end of a run): one row per task, sorted by domain
  then name: the registry metric, its value, the baseline, the margin in points (higher is
  better for every metric, metrics.margin_points), n, and for closed-label tasks the accuracy
  of their generated answers beside the ranking's; then the summary lines.
- Units: accuracy, f1, wer and cer in percent; bleu as sacrebleu prints it; cider as
  pycocoevalcap's CIDEr-D (0-10); timestamp_shift in ms.
- metrics.png: one panel per metric, a bar per task for its value beside its baseline.
- loss_curve.png: train/loss (and val/loss when logged) against step from a Lightning
  CSVLogger `metrics.csv`, whose rows leave the columns they do not log empty. Drawn on an Agg
  canvas (no pyplot, no display); with no log the picture says "no training log", so a report
  always has its files.
"""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

from .metrics import HIGHER_IS_BETTER

COLUMNS = ("task", "domain", "metric", "value", "baseline", "margin (points)", "n", "generated")
CURVES = ("train/loss", "val/loss")
PERCENT = ("accuracy", "f1", "wer", "cer")


def fmt_value(metric: str, x) -> str:
    if x is None:
        return "—"
    if metric in PERCENT:
        return f"{100 * x:.1f}%"
    if metric == "timestamp_shift":
        return f"{x:.0f} ms"
    return f"{x:.3f}" if metric == "cider" else f"{x:.1f}"


def _row(name: str, m: dict) -> list[str]:
    margin = m.get("margin_points")
    return [name, m["domain"], m["metric"], fmt_value(m["metric"], m.get("value")),
            fmt_value(m["metric"], m.get("baseline")), "—" if margin is None else f"{margin:+.1f}", str(m["n"]),
            fmt_value("accuracy", m["generated"]) if m["kind"] == "closed" else ""]


def summary_lines(metrics: dict) -> list[str]:
    s = metrics["summary"]
    lines = [f"{s['beat_baseline']} of {s['scored']} scored tasks beat their baseline"
             + ("" if s.get("aggregate") is None else f"; mean margin {s['aggregate']:+.1f} points")]
    if s.get("closed_tasks"):
        vs_baseline = ("" if s.get("beat_baseline_by_20") is None  # a metrics.json written before the count
                       else f"{s['beat_baseline_by_20']} of {s['closed_tasks']} closed-label tasks beat the larger of "
                            "chance and majority by >= 20 points, ")
        lines.append(f"{vs_baseline}{s['beat_chance_by_20']} of {s['closed_tasks']}"
                     f"{'' if vs_baseline else ' closed-label tasks'} beat chance by >= 20 points; "
                     f"mean closed-label accuracy {100 * s['mean_closed_accuracy']:.1f}%")
    unscored = s["tasks"] - s["scored"]
    if unscored:
        lines.append(f"{unscored} task{'s' * (unscored != 1)} without a value (no samples, or nothing to score)")
    return lines


def format_table(metrics: dict) -> str:
    """The markdown report: the per-task table, then the summary lines."""
    tasks = metrics["tasks"]
    order = sorted(tasks, key=lambda name: (tasks[name]["domain"], name))
    rows = [list(COLUMNS), ["---"] * len(COLUMNS)] + [_row(name, tasks[name]) for name in order]
    table = "\n".join("| " + " | ".join(r) + " |" for r in rows)
    head = f"# Evaluation on split `{metrics.get('split', '?')}`"
    return "\n\n".join([head, table, "\n".join(summary_lines(metrics))]) + "\n"


# ---------------------------------------------------------------------- bar chart
def plot_metrics(metrics: dict, out: Path) -> Path:
    """One panel per metric: each task's value (bar) beside its baseline (hatched bar)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    tasks = metrics["tasks"]
    by_metric: dict[str, list[str]] = {}
    for name in sorted(tasks, key=lambda n: (tasks[n]["domain"], n)):
        by_metric.setdefault(tasks[name]["metric"], []).append(name)
    heights = [max(1.2, 0.32 * len(names) + 0.8) for names in by_metric.values()] or [1.0]
    fig = Figure(figsize=(8, sum(heights) + 0.4), dpi=100)
    FigureCanvasAgg(fig)
    if not by_metric:
        fig.text(0.5, 0.5, "no tasks", ha="center", va="center", fontsize=16)
    axes = fig.subplots(len(by_metric), 1, squeeze=False, gridspec_kw={"height_ratios": heights}) if by_metric else []
    for (metric, names), (ax,) in zip(by_metric.items(), axes):
        scale = 100 if metric in PERCENT else 1
        y = range(len(names))
        val = [scale * (tasks[n].get("value") or 0) for n in names]
        base = [scale * (tasks[n].get("baseline") or 0) for n in names]
        ax.barh([i + 0.2 for i in y], val, height=0.4, color="tab:blue", label="value")
        ax.barh([i - 0.2 for i in y], base, height=0.4, color="lightgray", hatch="//", label="baseline")
        ax.set_yticks(list(y), names, fontsize=8)
        ax.invert_yaxis()
        unit = {"timestamp_shift": "ms", "cider": "CIDEr-D", "bleu": "BLEU"}.get(metric, "%")
        better = "higher is better" if HIGHER_IS_BETTER[metric] else "lower is better"
        ax.set_title(f"{metric} ({unit}, {better})", fontsize=9, loc="left")
        ax.grid(axis="x", alpha=0.3)
    if by_metric:
        axes[0][0].legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(out)
    return out


# ---------------------------------------------------------------------- loss curve
def _float(text: str | None) -> float | None:
    try:
        x = float(text)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def read_columns(metrics_csv: Path | str, keep) -> dict[str, tuple[list[float], list[float]]]:
    """{column: (steps, values)} of the CSVLogger columns `keep(name)` accepts, skipping empty
    and NaN cells (a row leaves the columns it does not log empty)."""
    curves: dict[str, tuple[list[float], list[float]]] = {}
    with open(metrics_csv, newline="") as f:
        for row in csv.DictReader(f):
            step = _float(row.get("step"))
            for col, text in row.items():
                value = _float(text) if col and keep(col) else None
                if step is not None and value is not None:
                    xs, ys = curves.setdefault(col, ([], []))
                    xs.append(step)
                    ys.append(value)
    return curves


def read_curves(metrics_csv: Path | None) -> dict[str, tuple[list[float], list[float]]]:
    """{column: (steps, values)} for train/loss and val/loss ({} without a log)."""
    if metrics_csv is None or not Path(metrics_csv).is_file():
        return {}
    return read_columns(metrics_csv, CURVES.__contains__)


def plot_loss(metrics_csv: Path | None, out: Path) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    curves = read_curves(metrics_csv)
    fig = Figure(figsize=(7, 4.5), dpi=100)  # no pyplot: no global state, no display backend
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    if not curves:
        ax.text(0.5, 0.5, "no training log", ha="center", va="center", fontsize=16, transform=ax.transAxes)
        ax.set_axis_off()
    for col, (xs, ys) in curves.items():
        style = dict(marker="o", markersize=4) if col.startswith("val") else dict(linewidth=1)
        ax.plot(xs, ys, label=col, **style)
    if curves:
        ax.set_xlabel("step")
        ax.set_ylabel("loss (token cross-entropy)")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(out)
    return out


def write_report(metrics: dict, run_dir: Path, metrics_csv: Path | None) -> dict[str, Path]:
    """metrics.json, metrics.md, metrics.png and loss_curve.png in run_dir; their paths by kind."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": run_dir / "metrics.json", "md": run_dir / "metrics.md", "chart": run_dir / "metrics.png",
             "png": run_dir / "loss_curve.png"}
    paths["json"].write_text(json.dumps(metrics, indent=1) + "\n")
    paths["md"].write_text(format_table(metrics))
    plot_metrics(metrics, paths["chart"])
    plot_loss(metrics_csv, paths["png"])
    return paths
