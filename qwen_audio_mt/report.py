"""The evaluation report of a run: metrics.json, metrics.md and loss_curve.png.

- metrics.json: `scoring.evaluate_model`'s dict as it is (round-trips through json).
- metrics.md: one table row per task, sorted by domain then name; accuracy, chance, majority
  and token accuracy in percent, margin in points over the larger of chance and majority; then
  the summary lines ("X of Y closed-label tasks beat chance by >= 20 points", ...).
- loss_curve.png: train/loss (and val/loss when logged) against step from a Lightning
  CSVLogger `metrics.csv`, whose rows leave the columns they do not log empty. Drawn on an Agg
  canvas (no pyplot, no display); with no log the picture says "no training log", so a report
  always has its three files.
"""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

COLUMNS = ("task", "domain", "kind", "n", "accuracy", "chance", "majority", "margin (points)", "loss", "token acc")
CURVES = ("train/loss", "val/loss")


def _pct(x) -> str:
    return "—" if x is None else f"{100 * x:.1f}%"


def _num(x, fmt: str) -> str:
    return "—" if x is None else format(x, fmt)


def _row(name: str, m: dict) -> list[str]:
    return [name, m["domain"], m["kind"], str(m["n"]), _pct(m.get("accuracy")), _pct(m.get("chance")),
            _pct(m.get("majority")), _num(m.get("margin_points"), "+.1f"), _num(m.get("loss"), ".3f"),
            _pct(m.get("token_accuracy"))]


def summary_lines(metrics: dict) -> list[str]:
    s = metrics["summary"]
    lines = [f"{s['beat_chance_by_20']} of {s['closed_tasks']} closed-label tasks beat chance by >= 20 points",
             f"{s['beat_baseline_by_20']} of {s['closed_tasks']} closed-label tasks beat the majority/chance "
             f"baseline by >= 20 points"]
    if s.get("mean_closed_accuracy") is not None:
        lines.append(f"mean closed-label accuracy: {_pct(s['mean_closed_accuracy'])}")
    if s.get("open_tasks"):
        n = s["open_tasks"]
        lines.append(f"{n} open task{'s' * (n != 1)}, mean token accuracy: {_pct(s['mean_open_token_accuracy'])}")
    return lines


def format_table(metrics: dict) -> str:
    """The markdown report: the per-task table, then the summary lines."""
    tasks = metrics["tasks"]
    order = sorted(tasks, key=lambda name: (tasks[name]["domain"], name))
    rows = [list(COLUMNS), ["---"] * len(COLUMNS)] + [_row(name, tasks[name]) for name in order]
    table = "\n".join("| " + " | ".join(r) + " |" for r in rows)
    head = f"# Evaluation on split `{metrics.get('split', '?')}`"
    return "\n\n".join([head, table, "\n".join(summary_lines(metrics))]) + "\n"


# ---------------------------------------------------------------------- loss curve
def _float(text: str | None) -> float | None:
    try:
        x = float(text)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def read_curves(metrics_csv: Path | None) -> dict[str, tuple[list[float], list[float]]]:
    """{column: (steps, values)} for train/loss and val/loss, skipping empty and NaN cells."""
    if metrics_csv is None or not Path(metrics_csv).is_file():
        return {}
    curves: dict[str, tuple[list[float], list[float]]] = {}
    with open(metrics_csv, newline="") as f:
        for row in csv.DictReader(f):
            step = _float(row.get("step"))
            for col in CURVES:
                value = _float(row.get(col))
                if step is not None and value is not None:
                    xs, ys = curves.setdefault(col, ([], []))
                    xs.append(step)
                    ys.append(value)
    return curves


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
    """metrics.json, metrics.md and loss_curve.png in run_dir; returns their paths by kind."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": run_dir / "metrics.json", "md": run_dir / "metrics.md", "png": run_dir / "loss_curve.png"}
    paths["json"].write_text(json.dumps(metrics, indent=1) + "\n")
    paths["md"].write_text(format_table(metrics))
    plot_loss(metrics_csv, paths["png"])
    return paths
