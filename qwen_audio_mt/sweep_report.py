"""`qwen-audio-mt sweep-report DIR... [--out DIR]`: the runs of a sweep side by side.

- DIR: a run folder (it has metrics.json, .hydra/ or train.log) or a folder of runs, such as
  a Hydra multirun folder (`0/`, `1/`, ... and multirun.yaml): then its immediate subfolders
  that look like run folders are the runs, numbered ones in numeric order, then the others by
  name. A run named twice (a folder and its parent) counts once. A DIR that does not exist, or
  that is neither a run nor holds one, exits 2 with one line naming it.
- A run's name: its `.hydra/overrides.yaml` joined by a space, without the noise keys
  (hydra.*, paths.*, run_dir=) and without the overrides every run of the report shares; with
  none left, the folder name. A name two runs share gets
  the folder name in brackets (then the parent's too, then a number).
- A run is ok when its metrics.json parses as {"tasks": {task: {"metric", ...}}}; else it is
  failed with the reason: a multirun point's own error line (error.txt, errors.sweep_job),
  else "no metrics.json" (with train.log's last non-empty line, at most 120 characters), the
  parse error, or the missing field. Failed runs are listed, never dropped;
  only ok runs are columns of the tables and the heatmap.
- mixture.json (written by training): {"target": {task: p}, "realised": {task: share},
  "samples": int, "adaptive": null | {"history": [...], "final": {task: p}}}. Missing (older
  runs) or unreadable: the realised mixture is unknown for that run (and said so).
- A task's domain is its metrics.json `domain`, else the registry's (tags/tasks.yaml), else
  "other". Its metric and baseline are the first ok run's that has them (runs on the same
  data share baselines; a baseline that differs between runs is starred in sweep.md, and every
  margin stays its own run's).
- Best run of a task: the best value by its higher_is_better (metrics.HIGHER_IS_BETTER when
  metrics.json lacks it); a run without a value never wins; values equal to 1e-9 relative
  are ties and all are marked. The same rule picks the winners of the aggregates.
- Aggregates, per run, from each task's `margin_points` (metrics.margin_points: value against
  baseline in points, higher better for every metric; computed when metrics.json lacks it):
  a domain's is the mean over that domain's tasks with a margin, the overall one the mean over
  all its tasks with a margin (what summary.aggregate of metrics.json is). `best_overall` is
  the first winner, in report order, of the overall mean.

Files written to --out (default: the first DIR when it is a folder of runs, else
`./sweep_report/`):
- sweep.md: the runs; the task x run table (values formatted as report.fmt_value, the best in
  **bold**), domain and overall aggregates (best in bold), the failed runs with their reasons,
  the realised mixture per run (domain shares with the target's, the largest tasks).
- sweep.json: {"runs": [{"name", "dir", "status": "ok"|"failed", "reason", "split",
  "aggregate", "domains": {domain: mean margin}, "mixture": None | {"samples", "target",
  "realised", "adaptive": None | {"final", "updates"}, "target_domains", "realised_domains"}}],
  "tasks": {task: {"metric", "domain", "higher_is_better", "baseline", "values": {run: v},
  "margins": {run: m}, "best": [run]}}, "domains": {domain: {run: mean margin}},
  "overall": {run: mean margin}, "best_overall": run | None}.
- heatmap.png, mixture.png: see sweep_plots, which also formats sweep.md.
"""
from __future__ import annotations

import functools
import json
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from .errors import UserError
from .metrics import HIGHER_IS_BETTER, MetricError, margin_points

RUN_MARKERS = ("metrics.json", ".hydra", "train.log")
NOISE_KEYS = ("hydra", "paths", "run_dir")
REASON_CHARS = 120
DEFAULT_OUT = "sweep_report"
KNOWN_DOMAINS = ("speech", "sound", "music")


@dataclass
class Run:
    dir: Path
    name: str
    status: str = "ok"  # or "failed"
    reason: str | None = None
    split: str | None = None
    tasks: dict | None = None  # metrics.json's "tasks" when ok
    mixture: dict | None = None  # mixture.json as it is, None when unknown
    mixture_note: str | None = None  # why the mixture is unknown


# ---------------------------------------------------------------------- finding runs
def is_run_dir(path: Path) -> bool:
    return any((path / marker).exists() for marker in RUN_MARKERS)


def _order(path: Path):
    return (0, int(path.name), "") if path.name.isdigit() else (1, 0, path.name)


def run_dirs(folder) -> list[Path]:
    """The run folders `folder` stands for: itself, or its immediate subfolders that are runs."""
    path = Path(folder)
    if not path.exists():
        raise UserError(f"{folder}: no such folder")
    if not path.is_dir():
        raise UserError(f"{folder}: not a folder")
    if is_run_dir(path):
        return [path]
    runs = sorted((p for p in path.iterdir() if p.is_dir() and is_run_dir(p)), key=_order)
    if not runs:
        raise UserError(f"{folder}: not a run folder (no {', '.join(RUN_MARKERS)}) and holds none")
    return runs


def find_runs(folders) -> list[Path]:
    seen, out = set(), []
    for folder in folders:
        for path in run_dirs(folder):
            if path.resolve() not in seen:
                seen.add(path.resolve())
                out.append(path)
    return out


# ---------------------------------------------------------------------- reading one run
def _noise(override: str) -> bool:
    key = override.split("=", 1)[0].lstrip("+~")
    return any(key == k or key.startswith(k + ".") for k in NOISE_KEYS)


def run_overrides(path: Path) -> list[str]:
    """The run's overrides without the noise keys (none when .hydra/ is missing or unreadable)."""
    import yaml
    try:
        overrides = yaml.safe_load((path / ".hydra" / "overrides.yaml").read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        overrides = None
    return [str(o) for o in overrides if not _noise(str(o))] if isinstance(overrides, list) else []


def run_labels(paths: list[Path]) -> list[str]:
    """Each run's overrides joined by a space, without those every run shares (with more than
    one run: what a sweep point changes is its name); with none left, the folder name."""
    lists = [run_overrides(p) for p in paths]
    shared = set.intersection(*(set(x) for x in lists)) if len(lists) > 1 else set()
    return [" ".join(o for o in x if o not in shared) or p.name for p, x in zip(paths, lists)]


def last_line(log: Path, limit: int = REASON_CHARS) -> str | None:
    """The last non-empty line of a log (after its last carriage return: progress bars)."""
    try:
        with open(log, "rb") as f:
            f.seek(max(0, f.seek(0, 2) - 65536))
            text = f.read().decode("utf-8", errors="replace")
    except OSError:
        return None
    lines = [ln.rsplit("\r", 1)[-1].strip() for ln in text.splitlines()]
    lines = [ln for ln in lines if ln]
    if not lines:
        return None
    line = lines[-1]
    return line if len(line) <= limit else line[:limit - 1] + "…"


def _no_metrics_reason(path: Path) -> str:
    if (path / "error.txt").is_file() and (line := last_line(path / "error.txt")):
        return f"failed: {line}"  # a multirun point's own one line (errors.sweep_job)
    if not (path / "train.log").is_file():
        return "no metrics.json (no train.log)"
    line = last_line(path / "train.log")
    return f"no metrics.json; train.log ends: {line}" if line else "no metrics.json (train.log is empty)"


def read_metrics(path: Path) -> tuple[dict | None, str | None, str | None]:
    """(tasks, split, None) for a readable metrics.json, else (None, None, the reason)."""
    file = path / "metrics.json"
    if not file.is_file():
        return None, None, _no_metrics_reason(path)
    try:
        metrics = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        return None, None, f"metrics.json does not parse: {e}"
    tasks = metrics.get("tasks") if isinstance(metrics, dict) else None
    if not isinstance(tasks, dict):
        return None, None, "metrics.json has no 'tasks' object"
    for name, entry in tasks.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("metric"), str):
            return None, None, f"metrics.json: task {name!r} has no metric"
    return tasks, metrics.get("split"), None


def read_mixture(path: Path) -> tuple[dict | None, str | None]:
    """(mixture.json, None), or (None, why the realised mixture is unknown)."""
    file = path / "mixture.json"
    if not file.is_file():
        return None, "no mixture.json"
    try:
        mixture = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        return None, f"mixture.json does not parse: {e}"
    realised = mixture.get("realised") if isinstance(mixture, dict) else None
    if not isinstance(realised, dict) or not realised or any(_num(v) is None for v in realised.values()):
        return None, "mixture.json has no realised shares"
    return mixture, None


def read_run(path: Path) -> Run:
    tasks, split, reason = read_metrics(path)
    mixture, note = read_mixture(path)
    return Run(dir=path, name=path.name, status="failed" if reason else "ok", reason=reason, split=split,
               tasks=tasks, mixture=mixture, mixture_note=note)


def unique_names(runs: list[Run]) -> None:
    """A name two runs share gets the folder name in brackets, then parent/folder, then a number."""
    base = [r.name for r in runs]
    for suffix in (lambda r: r.dir.name, lambda r: f"{r.dir.parent.name}/{r.dir.name}"):
        counts = Counter(r.name for r in runs)
        for r, b in zip(runs, base):
            if counts[r.name] > 1 and b != suffix(r):
                r.name = f"{b} ({suffix(r)})"
    seen: set[str] = set()
    for r in runs:
        stem, i = r.name, 2
        while r.name in seen:
            r.name, i = f"{stem} #{i}", i + 1
        seen.add(r.name)


# ---------------------------------------------------------------------- the tables
@functools.lru_cache(maxsize=1)
def registry_domains() -> dict[str, str]:
    try:
        from .tasks import load_tasks
        return {t.name: t.domain for t in load_tasks()}
    except Exception:  # noqa: BLE001 - the registry is only a fallback for a missing field
        return {}


def _num(x) -> float | None:
    """A finite number, else None (NaN, a string or null in metrics.json count as no value)."""
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) else None


def _margin(entry: dict) -> float | None:
    if "margin_points" in entry:
        return _num(entry["margin_points"])
    try:
        return _num(margin_points(entry["metric"], _num(entry.get("value")), _num(entry.get("baseline"))))
    except MetricError:
        return None


def winners(values: dict[str, float | None], higher: bool) -> list[str]:
    """The names with the best value (ties to 1e-9 relative all win); None never wins."""
    known = {k: v for k, v in values.items() if _num(v) is not None}
    if not known:
        return []
    best = max(known.values()) if higher else min(known.values())
    return [k for k, v in known.items() if math.isclose(v, best, rel_tol=1e-9, abs_tol=1e-12)]


def _mean(xs: list[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def task_table(ok: list[Run]) -> dict[str, dict]:
    """{task: {metric, domain, higher_is_better, baseline, values, margins, best}}, sorted by domain, name."""
    table: dict[str, dict] = {}
    for run in ok:
        for name, e in run.tasks.items():
            t = table.setdefault(name, {"metric": e["metric"], "domain": None, "higher_is_better": None,
                                        "baseline": None, "values": {}, "margins": {}, "best": []})
            t["domain"] = t["domain"] or e.get("domain")
            if t["higher_is_better"] is None and isinstance(e.get("higher_is_better"), bool):
                t["higher_is_better"] = e["higher_is_better"]
            if (base := _num(e.get("baseline"))) is not None:
                if t["baseline"] is not None and not math.isclose(t["baseline"], base, rel_tol=1e-9):
                    t["baseline_varies"] = True
                t["baseline"] = base if t["baseline"] is None else t["baseline"]
            t["values"][run.name] = _num(e.get("value"))
            t["margins"][run.name] = _margin(e)
    for name, t in table.items():
        t["domain"] = t["domain"] or registry_domains().get(name, "other")
        if t["higher_is_better"] is None:
            t["higher_is_better"] = HIGHER_IS_BETTER.get(t["metric"], True)
        t["best"] = winners(t["values"], t["higher_is_better"])
    return dict(sorted(table.items(), key=lambda kv: (kv[1]["domain"], kv[0])))


def domain_means(tasks: dict[str, dict], names: list[str]) -> tuple[dict, dict]:
    """({domain: {run: mean margin}}, {run: mean margin over all tasks}); None where no margin."""
    domains: dict[str, dict] = {}
    for t in tasks.values():
        domains.setdefault(t["domain"], {})
    for domain, row in domains.items():
        for run in names:
            row[run] = _mean([t["margins"][run] for t in tasks.values()
                              if t["domain"] == domain and t["margins"].get(run) is not None])
    overall = {run: _mean([t["margins"][run] for t in tasks.values() if t["margins"].get(run) is not None])
               for run in names}
    return domains, overall


def domain_order(domains) -> list[str]:
    """speech, sound, music, then any other domain by name."""
    return sorted(domains, key=lambda d: (KNOWN_DOMAINS.index(d) if d in KNOWN_DOMAINS else len(KNOWN_DOMAINS), d))


def domain_shares(shares: dict | None, domain_of) -> dict[str, float] | None:
    if not isinstance(shares, dict):
        return None
    out: dict[str, float] = {}
    for task, p in shares.items():
        out[domain_of(task)] = out.get(domain_of(task), 0.0) + (_num(p) or 0.0)
    return out


def mixture_summary(run: Run, domain_of) -> dict | None:
    m = run.mixture
    if m is None:
        return None
    adaptive = m.get("adaptive") if isinstance(m.get("adaptive"), dict) else None
    samples = m.get("samples")
    return {"samples": samples if isinstance(samples, int) else None, "target": m.get("target"),
            "realised": m["realised"],
            "adaptive": None if adaptive is None else {"final": adaptive.get("final"),
                                                       "updates": len(adaptive.get("history") or [])},
            "target_domains": domain_shares(m.get("target"), domain_of),
            "realised_domains": domain_shares(m["realised"], domain_of)}


def build(runs: list[Run]) -> dict:
    """The sweep.json dict of the runs (names already unique)."""
    ok = [r for r in runs if r.status == "ok"]
    names = [r.name for r in ok]
    tasks = task_table(ok)
    domains, overall = domain_means(tasks, names)

    def domain_of(task: str) -> str:
        return tasks[task]["domain"] if task in tasks else registry_domains().get(task, "other")

    best = winners(overall, True)
    return {"runs": [{"name": r.name, "dir": str(r.dir), "status": r.status, "reason": r.reason, "split": r.split,
                      "aggregate": overall.get(r.name), "domains": {d: row.get(r.name) for d, row in domains.items()},
                      "mixture": mixture_summary(r, domain_of), "mixture_note": r.mixture_note} for r in runs],
            "tasks": tasks, "domains": domains, "overall": overall, "best_overall": best[0] if best else None}


# ---------------------------------------------------------------------- the command
def summary_lines(data: dict) -> list[str]:
    ok = sum(r["status"] == "ok" for r in data["runs"])
    lines = [f"{len(data['runs'])} runs: {ok} with metrics, {len(data['runs']) - ok} failed"]
    for label, row in [("overall", data["overall"])] + list(data["domains"].items()):
        best = winners(row, True)
        if best:
            lines.append(f"best {label}: {', '.join(best)} ({row[best[0]]:+.1f} points mean margin)")
    return lines


def default_out(folders) -> Path:
    first = Path(folders[0])
    return first if not is_run_dir(first) else Path(DEFAULT_OUT)


def load_sweep(folders) -> dict:
    """The report's data (what sweep.json holds) of the runs in `folders`."""
    runs = [read_run(p) for p in find_runs(folders)]
    for run, name in zip(runs, run_labels([r.dir for r in runs])):
        run.name = name
    unique_names(runs)
    if not any(r.status == "ok" for r in runs):
        reasons = "; ".join(f"{r.dir}: {r.reason}" for r in runs)
        raise UserError(f"no run with metrics among {len(runs)} run folder(s) ({reasons})")
    return build(runs)


def write_sweep(folders, out=None) -> tuple[dict, dict[str, Path]]:
    """Read the runs, write sweep.md, sweep.json, heatmap.png and mixture.png; (data, paths)."""
    from .sweep_plots import format_markdown, plot_heatmap, plot_mixture
    data = load_sweep(folders)
    out = Path(out) if out is not None else default_out(folders)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"md": out / "sweep.md", "json": out / "sweep.json", "heatmap": out / "heatmap.png",
             "mixture": out / "mixture.png"}
    paths["md"].write_text(format_markdown(data), encoding="utf-8")
    paths["json"].write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    plot_heatmap(data, paths["heatmap"])
    plot_mixture(data, paths["mixture"])
    return data, paths


def cmd_sweep_report(args) -> int:
    data, paths = write_sweep(args.dirs, args.out)
    for path in paths.values():
        print(path)
    print("\n".join(summary_lines(data)))
    return 0


def register(sub) -> None:
    p = sub.add_parser("sweep-report", help="compare a sweep's runs: sweep.md, sweep.json, heatmap.png, mixture.png")
    p.add_argument("dirs", nargs="+", metavar="DIR", help="run folders, or folders of runs (outputs/multirun/DATE)")
    p.add_argument("--out", default=None, metavar="DIR",
                   help=f"where to write (default: the first DIR when it holds runs, else ./{DEFAULT_OUT})")
    p.set_defaults(func=cmd_sweep_report)
