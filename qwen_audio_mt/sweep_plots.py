"""What `qwen-audio-mt sweep-report` writes from sweep_report.build's dict: sweep.md's tables and
the pictures, drawn on an Agg canvas (no pyplot, no display) as report.py's.

- sweep.md (format_markdown): as sweep_report's docstring says; run names are the column
  headers, a `|` in them escaped.
- heatmap.png: tasks (rows, by domain then name, a line between domains) x runs with metrics
  (columns): each task's margin over its baseline in points, a diverging map centred at 0 (red
  worse, blue better than the baseline, limits symmetric, the largest |margin| capped at 100),
  the margin written in each cell, grey where a run has none.
- mixture.png: per run, two stacked bars of domain shares: the realised mixture (samples
  seen) and the target; a run whose realised mixture is unknown (no mixture.json) shows an
  empty bar labelled so; failed runs are labelled "(failed)".
"""
from __future__ import annotations

import textwrap
from pathlib import Path

from .report import fmt_value
from .sweep_report import domain_order, winners

DOMAIN_COLOURS = {"speech": "tab:blue", "sound": "tab:orange", "music": "tab:green"}
CAP = 100.0  # points: heatmap colour limit at most
TOP_TASKS = 3  # sweep.md: the largest tasks of each realised mixture


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, out: Path | None):
    if out is None:
        return fig
    fig.savefig(out)
    return out


def _wrap(name: str, width: int = 22) -> str:
    return "\n".join(textwrap.wrap(name, width)[:3]) or name


def plot_heatmap(data: dict, out: Path | None = None):
    """The task x run margin heatmap, saved to `out` (returns the path), or the Figure itself."""
    import numpy as np
    names = [r["name"] for r in data["runs"] if r["status"] == "ok"]
    tasks = list(data["tasks"])
    grid = np.array([[np.nan if data["tasks"][t]["margins"].get(n) is None else data["tasks"][t]["margins"][n]
                      for n in names] for t in tasks], dtype=float).reshape(len(tasks), len(names))
    fig = _figure(3.5 + 1.3 * max(2, len(names)), 1.6 + 0.24 * max(1, len(tasks)))
    ax = fig.add_subplot()
    if not tasks:
        ax.text(0.5, 0.5, "no tasks", ha="center", va="center", fontsize=16, transform=ax.transAxes)
        ax.set_axis_off()
        return _save(fig, out)
    finite = np.abs(grid[np.isfinite(grid)])
    lim = min(CAP, float(finite.max())) if finite.size and finite.max() > 0 else 1.0
    import matplotlib
    cmap = matplotlib.colormaps["RdBu"].with_extremes(bad="lightgrey")
    image = ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, vmin=-lim, vmax=lim, aspect="auto",
                      interpolation="nearest")
    for i, j in np.ndindex(grid.shape):
        x = grid[i, j]
        text, dark = ("—", False) if np.isnan(x) else (f"{x:+.0f}", abs(x) > 0.6 * lim)
        bold = names[j] in data["tasks"][tasks[i]]["best"]
        ax.text(j, i, text, ha="center", va="center", fontsize=6.5, color="white" if dark else "black",
                fontweight="bold" if bold else "normal")
    ax.set_yticks(range(len(tasks)), [f"{t} ({data['tasks'][t]['domain']})" for t in tasks], fontsize=7)
    ax.set_xticks(range(len(names)), [_wrap(n) for n in names], fontsize=7)
    ax.xaxis.tick_top()
    domains = [data["tasks"][t]["domain"] for t in tasks]
    for i in range(1, len(tasks)):
        if domains[i] != domains[i - 1]:
            ax.axhline(i - 0.5, color="black", linewidth=1)
    fig.colorbar(image, ax=ax, shrink=0.5, label="margin (points)")
    ax.set_title("margin over baseline, points (bold: best run)", fontsize=8, loc="left",
                 pad=6 + 9 * max(_wrap(n).count("\n") + 1 for n in names))
    fig.tight_layout()
    return _save(fig, out)


def _stack(ax, y: float, shares: dict, domains: list[str], height: float, hatch=None) -> None:
    left = 0.0
    for d in domains:
        w = 100 * float(shares.get(d, 0.0))
        if w > 0:
            ax.barh(y, w, left=left, height=height, color=DOMAIN_COLOURS.get(d, "tab:grey"), hatch=hatch,
                    edgecolor="white", alpha=0.55 if hatch else 1.0)
            if w >= 6:
                ax.text(left + w / 2, y, f"{w:.0f}%", ha="center", va="center", fontsize=7)
        left += w


def plot_mixture(data: dict, out: Path | None = None):
    """The realised (and target) domain shares per run, saved to `out`, or the Figure itself."""
    from matplotlib.patches import Patch
    runs = data["runs"]
    domains = domain_order({d for r in runs if r["mixture"] for part in ("realised_domains", "target_domains")
                            for d in (r["mixture"][part] or {})})
    fig = _figure(9.0, 1.4 + 0.7 * max(1, len(runs)))
    ax = fig.add_subplot()
    for i, r in enumerate(runs):
        m = r["mixture"]
        if m is None:
            ax.barh(i, 100, height=0.7, color="white", edgecolor="grey", linestyle="--")
            ax.text(50, i, f"realised mixture unknown ({r['mixture_note']})", ha="center", va="center", fontsize=8)
            continue
        _stack(ax, i - 0.17, m["realised_domains"] or {}, domains, 0.34)
        if m["target_domains"]:
            _stack(ax, i + 0.19, m["target_domains"], domains, 0.3, hatch="//")
    labels = [_wrap(r["name"], 28) + (" (failed)" if r["status"] == "failed" else "") for r in runs]
    ax.set_yticks(range(len(runs)), labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel("share of samples (%): solid = realised, hatched = target")
    handles = [Patch(color=DOMAIN_COLOURS.get(d, "tab:grey"), label=d) for d in domains]
    if handles:
        ax.legend(handles=handles, fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    ax.set_title("realised task mixture per run, by domain", fontsize=9, loc="left")
    fig.tight_layout()
    return _save(fig, out)


# ---------------------------------------------------------------------- sweep.md
def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _table(head: list[str], rows: list[list[str]]) -> str:
    lines = [head, ["---"] * len(head)] + rows
    return "\n".join("| " + " | ".join(_cell(c) for c in r) + " |" for r in lines)


def _points(x: float | None, bold: bool = False) -> str:
    text = "—" if x is None else f"{x:+.1f}"
    return f"**{text}**" if bold and x is not None else text


def _md_tasks(data: dict, names: list[str]) -> str:
    rows = []
    for task, t in data["tasks"].items():
        base = fmt_value(t["metric"], t["baseline"]) + ("*" if t.get("baseline_varies") else "")
        cells = []
        for run in names:
            text = fmt_value(t["metric"], t["values"].get(run)) if run in t["values"] else "n/a"
            cells.append(f"**{text}**" if run in t["best"] else text)
        rows.append([task, t["domain"], t["metric"], base] + cells)
    note = ("\n\n\\* the baseline differs between runs (shown: the first run's); margins use each run's own."
            if any(t.get("baseline_varies") for t in data["tasks"].values()) else "")
    return ("## Tasks\n\nThe registry metric of each task (best run in **bold**; — no value, n/a not evaluated).\n\n"
            + _table(["task", "domain", "metric", "baseline"] + names, rows) + note)


def _md_aggregates(data: dict, names: list[str]) -> str:
    rows = []
    for label, row in list(data["domains"].items()) + [("overall", data["overall"])]:
        best = winners(row, True)
        rows.append([label] + [_points(row.get(n), n in best) for n in names])
    return ("## Aggregates\n\nMean margin over the baseline in points (higher is better for every metric) over the "
            "tasks with a margin, per domain and overall; best in **bold**.\n\n" + _table(["", *names], rows))


def _md_runs(data: dict) -> str:
    rows = [[str(i + 1), r["name"], r["status"], _points(r["aggregate"]), r["dir"]] for i, r in enumerate(data["runs"])]
    return "## Runs\n\n" + _table(["#", "run", "status", "overall margin", "folder"], rows)


def _md_failed(data: dict) -> str:
    failed = [r for r in data["runs"] if r["status"] == "failed"]
    if not failed:
        return "## Failed runs\n\nNone."
    return "## Failed runs\n\n" + "\n".join(f"- `{r['name']}` ({r['dir']}): {r['reason']}" for r in failed)


def _share(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.0f}%"


def _md_mixture(data: dict) -> str:
    doms = domain_order({d for r in data["runs"] if r["mixture"] for d in (r["mixture"]["realised_domains"] or {})})
    rows = []
    for r in data["runs"]:
        m = r["mixture"]
        if m is None:
            rows.append([r["name"], f"unknown ({r['mixture_note']})"] + [""] * (len(doms) + 1))
            continue
        target = m["target_domains"]
        cells = [f"{_share(m['realised_domains'].get(d, 0.0))} ({_share(target.get(d, 0.0) if target else None)})"
                 for d in doms]
        top = sorted(m["realised"].items(), key=lambda kv: -float(kv[1] or 0))[:TOP_TASKS]
        samples = "" if m["samples"] is None else f"{m['samples']:,}"
        if m["adaptive"]:
            samples += f" (adaptive, {m['adaptive']['updates']} updates)"
        rows.append([r["name"], samples] + cells + [", ".join(f"{k} {_share(float(v or 0))}" for k, v in top)])
    return ("## Realised mixture\n\nShare of the samples seen per domain (the target's in brackets), and the "
            f"{TOP_TASKS} largest tasks.\n\n" + _table(["run", "samples", *doms, "largest tasks"], rows))


def format_markdown(data: dict) -> str:
    names = [r["name"] for r in data["runs"] if r["status"] == "ok"]
    splits = sorted({r["split"] for r in data["runs"] if r["status"] == "ok" and r["split"]})
    head = f"# Sweep report: {len(data['runs'])} runs, {len(names)} with metrics (split {', '.join(splits) or '?'})"
    parts = [head, _md_runs(data), _md_tasks(data, names), _md_aggregates(data, names), _md_failed(data),
             _md_mixture(data)]
    return "\n\n".join(parts) + "\n"
