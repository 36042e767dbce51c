"""What the notebooks show of a training run: its mixture and its loss curves (notebooks 02, 03).

- mixture_shares(shards, run): {"target", "realised", "source"}: the run's mixture.json when it
  has a readable one; else the target computed from the shard index (data.mixture.components
  and probabilities, with the temperature, caps, task / domain / kind weights and the sources'
  task filters of RUN/.hydra/config.yaml, over the one source `shards`) and as realised shares
  the last `mix/<task>` values of RUN/logs/metrics.csv (cumulative over the run); without a
  run, the target alone (and one line saying so).
- plot_mixture(shares): per task, target probability beside realised share.
- columns(csv, prefix): {column: (steps, values)} of a Lightning CSVLogger file, whose rows leave
  the columns they do not log empty (report.read_columns).
- plot_overall_loss(csv): report.plot_loss's picture (train/loss, val/loss) as an image.
- plot_task_losses(csv, tasks, window): `train/loss_<task>` against step, one panel per domain.
- loss_table(csv): each task's first and last logged loss.
- newest_sweep(root), sweep(folder): a multirun folder and its report's data (sweep_report.py),
  None with one line when there is none; sweep_markdown(data) is its sweep.md, sweep_heatmap
  and sweep_mixture(data) its two figures (sweep_plots.py), each None without data (notebook 05).

A missing input (no run, no log) gives None: notebook_views.run_log says what to run first.
"""
from __future__ import annotations

import io
import json
from collections.abc import Sequence
from pathlib import Path

from .notebook_views import DOMAINS, PRETRAIN, Table, figure, shard_index

# what a run's config says of its target mixture (an adaptive mixture starts there; its later
# weights are in the run's mixture.json)
MIXTURE_KEYS = ("temperature", "cap", "caps", "task_weights", "domain_weights", "kind_weights")


# ---------------------------------------------------------------------- mixture
def _run_mixture(run: str | Path | None, shards: str | Path) -> dict:
    """The run's mixture (RUN/.hydra/config.yaml: temperature, caps, task / domain / kind weights,
    the sources' task filters) over the one source `shards`, as MixtureConfig keys."""
    import dataclasses

    import yaml

    from .data.mixture import MixtureConfig
    path = Path(run or "", ".hydra", "config.yaml")
    mix = (yaml.safe_load(path.read_text()) or {}).get("mixture") or {} if run and path.is_file() else {}
    keys = {f.name for f in dataclasses.fields(MixtureConfig)} & set(MIXTURE_KEYS)
    out = {k: mix[k] for k in keys if mix.get(k) is not None}
    filters = [s.get("tasks") for s in mix.get("sources") or () if isinstance(s, dict)]
    tasks = sorted({t for f in filters for t in f}) if filters and all(filters) else None
    return {**out, "sources": [{"path": str(shards), "tasks": tasks}]}


def _last_mix(metrics_csv: Path) -> dict[str, float]:
    shares: dict[str, float] = {}
    for col, (_, values) in columns(metrics_csv, "mix/").items():
        shares[col[len("mix/"):]] = values[-1]
    return shares


def _mixture_json(run: str | Path | None) -> dict | None:
    """RUN/mixture.json as mixture_shares gives it; None when missing or unreadable (one line)."""
    path = Path(run) / "mixture.json" if run else None
    if path is None or not path.is_file():
        return None
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        target, realised = dict(raw["target"]), dict(raw.get("realised") or {})
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as e:
        print(f"{path}: unreadable ({type(e).__name__}: {e}); computing the target from the shards instead")
        return None
    samples = f" ({raw['samples']} samples drawn)" if raw.get("samples") else ""
    return {"target": target, "realised": realised, "source": f"{path}{samples}"}


def mixture_shares(shards: str | Path, run: str | Path | None = None) -> dict | None:
    """{"target": {task: p}, "realised": {task: share} (empty without a run), "source": where from}."""
    from .config import from_dict
    from .data.mixture import MixtureConfig, components, probabilities
    from .errors import UserError
    recorded = _mixture_json(run)
    if recorded is not None:
        return recorded
    if shard_index(shards) is None:
        return None
    target: dict[str, float] = {}
    try:
        cfg = from_dict(MixtureConfig, _run_mixture(run, shards), "mixture")
        comps = components(cfg, "train")
        for comp, p in zip(comps, probabilities(comps, cfg)):
            target[comp.task] = target.get(comp.task, 0.0) + float(p)
    except UserError as e:  # a config this reader does not know, no train shards: said, not raised
        print(f"target mixture: {e}")
        return None
    log = Path(run) / "logs" / "metrics.csv" if run else None
    realised = _last_mix(log) if log and log.is_file() else {}
    if not run:
        print(f"no run folder: target probabilities only (run `{PRETRAIN}` for realised shares)")
    source = f"target from {shards}" + (f"; realised: last mix/ values of {log}" if realised else "")
    return {"target": target, "realised": realised, "source": source}


def plot_mixture(shares: dict | None):
    """Per task, target probability beside realised share, sorted by target."""
    if not shares:
        return None
    target, realised = shares["target"], shares["realised"]
    total = sum(realised.values()) or 1.0
    names = sorted(set(target) | set(realised), key=lambda n: -target.get(n, 0.0))
    fig = figure(8, 0.22 * len(names) + 1.2)
    ax = fig.add_subplot()
    y = range(len(names))
    ax.barh([i - 0.2 for i in y], [100 * target.get(n, 0.0) for n in names], height=0.4, label="target")
    if realised:
        ax.barh([i + 0.2 for i in y], [100 * realised.get(n, 0.0) / total for n in names], height=0.4,
                label="realised")
    ax.set_yticks(list(y), names, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("share of training samples (%)")
    ax.set_title(shares["source"], fontsize=8, loc="left")
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------- loss curves
def columns(metrics_csv: str | Path, prefix: str) -> dict[str, tuple[list[float], list[float]]]:
    """{column: (steps, values)} of every CSVLogger column starting with `prefix`, empty cells skipped."""
    from .report import read_columns
    return read_columns(metrics_csv, lambda col: col.startswith(prefix))


def plot_overall_loss(metrics_csv: Path | None):
    """report.plot_loss's picture (train/loss and val/loss against step), as an image."""
    from IPython.display import Image

    from .report import plot_loss
    if metrics_csv is None:
        return None
    buf = io.BytesIO()
    plot_loss(metrics_csv, buf)
    return Image(data=buf.getvalue(), format="png")


def _smooth(ys: list[float], window: int) -> list[float]:
    out, total = [], 0.0
    for i, y in enumerate(ys):
        total += y - (ys[i - window] if i >= window else 0.0)
        out.append(total / min(i + 1, window))
    return out


def plot_task_losses(metrics_csv: Path | None, tasks: Sequence[str] | None = None, window: int = 5):
    """`train/loss_<task>` against step (running mean over `window` logged points), a panel per domain."""
    from .tasks import load_tasks
    if metrics_csv is None:
        return None
    curves = columns(metrics_csv, "train/loss_")
    reg = load_tasks()
    by_domain: dict[str, list[str]] = {}
    for col in sorted(curves):
        name = col[len("train/loss_"):]
        if tasks is None or name in tasks:
            by_domain.setdefault(reg.get(name).domain if name in reg else "other", []).append(name)
    if not by_domain:
        print(f"no train/loss_<task> columns in {metrics_csv}")
        return None
    fig = figure(9, 3.4 * len(by_domain))
    axes = fig.subplots(len(by_domain), 1, squeeze=False)[:, 0]
    for ax, (domain, names) in zip(axes, sorted(by_domain.items(), key=lambda kv: DOMAINS.index(kv[0])
                                                if kv[0] in DOMAINS else 9)):
        for name in names:
            xs, ys = curves[f"train/loss_{name}"]
            ax.plot(xs, _smooth(ys, window), linewidth=1, label=name)
        ax.set_title(f"{domain}: per-task training loss (running mean of {window})", fontsize=9, loc="left")
        ax.set_ylabel("loss")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, ncol=3, loc="upper right")
    axes[-1].set_xlabel("step")
    fig.tight_layout()
    return fig


def loss_table(metrics_csv: Path | None) -> Table | None:
    """Each task's first and last logged loss and how many steps logged it, lowest last loss first."""
    if metrics_csv is None:
        return None
    rows = [(col[len("train/loss_"):], len(ys), f"{ys[0]:.3f}", f"{ys[-1]:.3f}", f"{ys[-1] - ys[0]:+.3f}")
            for col, (_, ys) in columns(metrics_csv, "train/loss_").items()]
    rows.sort(key=lambda r: float(r[3]))
    return Table(("task", "logged", "first", "last", "change"), rows, "per-task training loss", str(metrics_csv))


# ---------------------------------------------------------------------- sweeps (05)
class Markdown(str):
    """Text a notebook renders as Markdown (sweep.md)."""

    def _repr_markdown_(self) -> str:
        return str(self)


def newest_sweep(root: str | Path = "../outputs/multirun") -> str | None:
    """The multirun folder under `root` changed last, or None (saying what to run)."""
    found = sorted((p for p in Path(root).glob("*") if p.is_dir()), key=lambda p: p.stat().st_mtime)
    if not found:
        print(f"no sweep under {root}: run `make sweep` first")
        return None
    return str(found[-1])


def sweep(folder: str | Path | None) -> dict | None:
    """sweep_report.load_sweep's data of a multirun (or run) folder; None with its one line
    when the folder is missing or holds no run with metrics."""
    from .errors import UserError
    from .sweep_report import load_sweep
    if folder is None:
        return None
    try:
        return load_sweep([folder])
    except UserError as e:
        print(f"{e} (run `make sweep` first)")
        return None


def sweep_markdown(data: dict | None) -> Markdown | None:
    from .sweep_plots import format_markdown
    return Markdown(format_markdown(data)) if data else None


def sweep_heatmap(data: dict | None):
    from .sweep_plots import plot_heatmap
    return plot_heatmap(data) if data else None


def sweep_mixture(data: dict | None):
    from .sweep_plots import plot_mixture
    return plot_mixture(data) if data else None
