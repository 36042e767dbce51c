"""What the notebooks show: their tables, figures and inputs, each one call (run_views.py holds
a training run's mixture and loss curves).

Inputs (a missing one prints one line saying what to run first, and gives None, [] or (None, None)):
- newest_run(root), newest_export(root): the run folder whose logs/metrics.csv, the export whose
  model.safetensors was written last (train.resolve_init's rule for `init_from=latest`).
- run_log(run): RUN/logs/metrics.csv. shard_index(shards): data.commands.inspect's summary.
- load_export(path): (model, renderer) of model.export.load_model.
- shared_clips(names, limit): real clips of the shared data root (paths.data_root), by CLIPS name.

01 tags and tokenizer
- registry_table(renderer): every task's domain, metric, target kind and prompt template.
- task_samples(shards, limit): one train sample (labels only) of every registry task.
- token_tables(renderer, samples): per task its prompt, then token | id | loss mask side by side
  (token_rows; the audio span's placeholders folded into one row).

02 shards (the mixture: run_views)
- corpus_table(shards): per task its domain, samples per split, hours and median duration.
- plot_log_mels(paths): each clip's waveform above its log-mel (the training front end).
- plot_durations(shards): the index's duration histogram.

04 inference
- answer(model, renderer, paths, task, ...): infer.Answerer's answers (greedy).
- answer_table(answers): clip, task, generated text, parsed fields or the parse error.
- plot_words(answers): word timestamps (parsed [{word, start, end}]) over the waveform.

Tables are `Table`s (HTML in a notebook, aligned text elsewhere); figures are matplotlib
`Figure`s on an Agg canvas (no pyplot state; a notebook shows them after `%matplotlib inline`).
"""
from __future__ import annotations

import html
import json
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .paths import data_available, data_missing_reason, data_root

PRETRAIN = "make pretrain"
CLIPS = {  # real clips of the shared data root (see its README), by the name notebooks use
    "librispeech": ("qwen_audio", "1272-128104-0000.flac"),   # LibriSpeech dev-clean, FLAC
    "fsdd_digit": ("fsdd", "7_jackson_0.wav"),                 # a spoken digit, 8-kHz wav
    "robin": ("real_clips", "456440__inspectorj__bird-whistling-robin-single-13.ogg"),
    "jfk": ("real_clips", "jfk.flac"),                         # 11 s, stereo 44.1 kHz
}
REFERENCES = {  # what the clips say (the shared data's README; FSDD's file name gives the digit)
    "1272-128104-0000.flac": "mister quilter is the apostle of the middle classes and we are glad to welcome "
                             "his gospel",
    "7_jackson_0.wav": "7",
    "jfk.flac": "And so my fellow Americans, ask not what your country can do for you, ask what you can do for "
                "your country.",
}
DOMAINS = ("speech", "sound", "music")


# ---------------------------------------------------------------------- tables
def _cell(x, tag: str) -> str:
    return f"<{tag} style='text-align:left'>{html.escape(str(x))}</{tag}>"


@dataclass
class Table:
    columns: Sequence[str]
    rows: list[Sequence]
    title: str = ""
    note: str = ""

    def _repr_html_(self) -> str:
        head = "".join(_cell(c, "th") for c in self.columns)
        body = "".join("<tr>" + "".join(_cell(x, "td") for x in r) + "</tr>" for r in self.rows)
        title = f"<h4>{html.escape(self.title)}</h4>" if self.title else ""
        note = f"<p>{html.escape(self.note)}</p>" if self.note else ""
        return f"{title}{note}<table><tr>{head}</tr>{body}</table>"

    def __repr__(self) -> str:
        text = [[str(c) for c in self.columns]] + [[str(x) for x in r] for r in self.rows]
        widths = [max(len(r[i]) for r in text) for i in range(len(self.columns))]
        lines = ["  ".join(x.ljust(w) for x, w in zip(r, widths)).rstrip() for r in text]
        return "\n".join([s for s in (self.title, self.note) if s] + lines)


class Tables(list):
    """Several tables shown one after the other."""

    def _repr_html_(self) -> str:
        return "".join(t._repr_html_() for t in self)

    def __repr__(self) -> str:
        return "\n\n".join(map(repr, self))


def figure(width: float, height: float):
    """A Figure on its own Agg canvas (report.py's way: no pyplot, no global state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


# ---------------------------------------------------------------------- inputs
def _newest(paths: Iterable[Path]) -> str | None:
    found = sorted(paths, key=lambda p: p.stat().st_mtime)
    return str(found[-1]) if found else None


def newest_run(root: str | Path = "../outputs/train") -> str | None:
    """The run folder under `root` whose logs/metrics.csv was written last (None: no run)."""
    found = _newest(Path(root).glob("*/logs/metrics.csv"))
    return str(Path(found).parent.parent) if found else None


def newest_export(root: str | Path = "../outputs/train") -> str | None:
    """The export folder under `root` whose model.safetensors was written last (None: none)."""
    found = _newest(p for p in Path(root).glob("*/export/model.safetensors") if (p.parent / "config.json").exists())
    return str(Path(found).parent) if found else None


def run_log(run: str | Path | None) -> Path | None:
    """RUN/logs/metrics.csv, or None after one line saying what to run first."""
    path = Path(run) / "logs" / "metrics.csv" if run else None
    if path is None or not path.is_file():
        print(f"no training log {'at ' + str(path) if path else '(no run folder given or found)'}: "
              f"run `{PRETRAIN}` first (or set QWEN_AUDIO_MT_NB_RUN to a run folder)")
        return None
    return path


def shard_index(shards: str | Path) -> dict | None:
    """data.commands.inspect's summary of a shard folder, or None after one line saying what to run."""
    from .data.commands import inspect
    from .errors import UserError
    try:
        return inspect(Path(shards))
    except UserError as e:
        print(f"{e} (run `make shards` first, or set QWEN_AUDIO_MT_NB_SHARDS)")
        return None


def shared_clips(names: Sequence[str], limit: int | None = None) -> list[str]:
    """Paths of the named shared clips that exist (at most `limit`); one line when the root is missing."""
    if not data_available():
        print(f"{data_missing_reason()}: skipping the real clips")
        return []
    found = [str(data_root().joinpath(*CLIPS[n])) for n in names if data_available(*CLIPS[n])]
    return found[:limit]


def load_export(path: str | Path | None):
    """(model, renderer) from an export folder or .ckpt (model.export.load_model), or (None, None)
    after one line saying what to run first."""
    from .model.export import ModelLoadError, load_model
    if not path:
        print(f"no export found: run `{PRETRAIN}` first (or set QWEN_AUDIO_MT_NB_MODEL to an export folder)")
        return None, None
    try:
        with warnings.catch_warnings():  # transformers' tqdm.auto, in a kernel without ipywidgets
            warnings.filterwarnings("ignore", message="IProgress not found")
            return load_model(path)
    except ModelLoadError as e:
        print(f"{e}: run `{PRETRAIN}` first (or set QWEN_AUDIO_MT_NB_MODEL)")
        return None, None


# ---------------------------------------------------------------------- 01 tags and tokenizer
def task_samples(shards: str | Path, limit: int | None = None) -> list[dict]:
    """One train sample (labels only) of each registry task in `shards`, in registry order."""
    from .data.reader import read_split
    from .tasks import load_tasks
    if shard_index(shards) is None:
        return []
    order = load_tasks().names[:limit]
    got = {s["task"]: s for s in read_split([str(shards)], "train", tasks=set(order), max_per_task=1, audio=False)}
    return [got[name] for name in order if name in got]


def registry_table(renderer) -> Table:
    """Every task of the registry: domain, metric, target kind, long-audio mode, prompt template."""
    rows = [(t.name, t.domain, t.metric, t.target.kind, t.long_audio, t.prompt) for t in renderer.registry]
    counts = ", ".join(f"{sum(t.domain == d for t in renderer.registry)} {d}" for d in DOMAINS)
    return Table(("task", "domain", "metric", "target", "long audio", "prompt"), rows,
                 f"{len(rows)} tasks ({counts})", renderer.registry.source)


def _token(tok, i: int) -> str:
    if tok.is_special(i):
        return tok.id_to_special[i]
    return repr(tok.encoding.decode_single_token_bytes(i).decode("utf-8", "backslashreplace"))


def token_rows(renderer, sample: dict) -> list[tuple]:
    """(position, token, id, loss mask) of a rendered sample; the audio placeholders are one row
    (position "a-b", token "[[[AUDIO:modality]]] x N")."""
    ids, mask = renderer.render(sample)
    tok, placeholder = renderer.tok, renderer.tok.role_id("audio_placeholder")
    first = ids.index(placeholder) if placeholder in ids else len(ids)
    n = ids.count(placeholder)  # one contiguous run, right after <audio>
    rows = [(pos, _token(tok, ids[pos]), ids[pos], mask[pos]) for pos in range(first)]
    if n:
        rows.append((f"{first}-{first + n - 1}", f"{tok.id_to_special[placeholder]} x {n}", placeholder, mask[first]))
    rows += [(pos, _token(tok, ids[pos]), ids[pos], mask[pos]) for pos in range(first + n, len(ids))]
    return rows


def token_tables(renderer, samples: Sequence[dict]) -> Tables:
    """Per task: its prompt as text, then token | id | loss mask (1: the token is trained on)."""
    out = Tables()
    for s in samples:
        task = renderer.task(s["task"])
        prompt = renderer.prompt_text(task, s.get("audio_lang"), s.get("text_lang"), bool(s.get("timestamps")), s)
        mask = renderer.render(s).loss_mask
        note = f"{prompt}   ({len(mask)} ids, {sum(mask)} with loss; sample {s.get('key')})"
        out.append(Table(("position", "token", "id", "loss"), token_rows(renderer, s),
                         f"{task.name} ({task.domain}, {task.metric})", note))
    return out


# ---------------------------------------------------------------------- 02 shards and mixture
def corpus_table(shards: str | Path) -> Table | None:
    """Per task: domain, samples per split, hours, median clip length; totals in the note."""
    from .tasks import load_tasks
    info = shard_index(shards)
    if info is None:
        return None
    reg, rows = load_tasks(), []
    for name, t in info["tasks"].items():
        sp = t["splits"]
        rows.append((name, reg.get(name).domain if name in reg else "?", sp.get("train", 0), sp.get("valid", 0),
                     sp.get("test", 0), f"{t['hours']:.3f}", f"{(t['duration'] or {}).get('median', 0):.2f}"))
    note = (f"{info['folder']}: {len(rows)} tasks, {info['inputs']} inputs, {info['shards']} shards, "
            f"{info['hours']:.2f} h; quarantined {info['quarantine']['total']}")
    return Table(("task", "domain", "train", "valid", "test", "hours", "median s"), rows, "embedded corpus", note)


def plot_log_mels(paths: Sequence[str], n_mels: int = 80):
    """Each clip's waveform above its log-mel (data.ingest.load_audio -> data.features.log_mel)."""
    import numpy as np

    from .audio import HOP_LENGTH, SAMPLE_RATE
    from .data.features import log_mel
    from .data.ingest import load_audio
    if not paths:
        return None
    fig = figure(9, 3.2 * len(paths))
    axes = fig.subplots(2 * len(paths), 1, gridspec_kw={"height_ratios": [1, 2] * len(paths)})
    for k, path in enumerate(paths):
        audio = load_audio(path)
        mel = log_mel(audio, n_mels)[0].numpy()
        wave, spec = axes[2 * k], axes[2 * k + 1]
        wave.plot(np.arange(len(audio)) / SAMPLE_RATE, audio, linewidth=0.5)
        wave.set_xlim(0, len(audio) / SAMPLE_RATE)
        wave.set_title(f"{Path(path).name} ({len(audio) / SAMPLE_RATE:.2f} s)", fontsize=9, loc="left")
        spec.imshow(mel, origin="lower", aspect="auto", extent=(0, mel.shape[1] * HOP_LENGTH / SAMPLE_RATE, 0, n_mels))
        spec.set_ylabel("mel bin")
    axes[-1].set_xlabel("seconds")
    fig.tight_layout()
    return fig


def plot_durations(shards: str | Path):
    """The shard index's duration histogram (every split), bins of `bin_seconds`."""
    from .data.mixture import read_index
    if shard_index(shards) is None:
        return None
    hist = read_index(str(shards))["duration_histogram"]
    width, counts = hist["bin_seconds"], hist["counts"]
    last = max((i for i, c in enumerate(counts) if c), default=0) + 1
    fig = figure(7, 3.5)
    ax = fig.add_subplot()
    ax.bar([i * width for i in range(last)], counts[:last], width=width, align="edge", edgecolor="white")
    ax.set_xlabel("clip duration (s)")
    ax.set_ylabel("clips")
    ax.set_title(f"{sum(counts)} clips of {shards} (every split)", fontsize=9, loc="left")
    return fig


# ---------------------------------------------------------------------- 04 inference
def answer(model, renderer, paths: Sequence[str], task: str, audio_lang: str | None = None,
           max_new_tokens: int = 64, **fields) -> list:
    """infer.Answerer's answers (greedy) to `task` for each clip; [] without a model or clips."""
    from .generate import GenerationConfig
    from .infer import Answerer, Query
    if model is None or not paths:
        return []
    gen = GenerationConfig(max_new_tokens=max_new_tokens)
    return Answerer(model, renderer, gen).answer(list(paths), Query(task, audio_lang=audio_lang, fields=fields))


def answer_table(answers: Sequence) -> Table | None:
    """Clip, task, duration, what the clip says (REFERENCES), generated text, parsed fields (or
    the parse error, or the file's error)."""
    if not answers:
        return None
    rows = [(Path(a.audio).name, a.task, f"{a.seconds:.2f}", REFERENCES.get(Path(a.audio).name, ""), a.text[:160],
             a.error or (json.dumps(a.parsed, ensure_ascii=False)[:160] if a.parsed is not None
                         else f"parse error: {a.parse_error}")) for a in answers]
    return Table(("clip", "task", "seconds", "reference", "generated", "parsed"), rows)


def plot_words(answers: Sequence):
    """Per answer, the clip's waveform with each parsed word a shaded span labelled at its centre."""
    answers = [a for a in answers or () if not a.error]
    if not answers:
        return None
    fig = figure(10, 3 * len(answers))
    for ax, ans in zip(fig.subplots(len(answers), 1, squeeze=False)[:, 0], answers):
        _draw_words(ax, ans)
    fig.tight_layout()
    return fig


def _draw_words(ax, ans) -> None:
    import numpy as np

    from .audio import SAMPLE_RATE
    from .data.ingest import load_audio
    audio = load_audio(ans.audio)
    words = (ans.parsed or {}).get("words") or []
    ax.plot(np.arange(len(audio)) / SAMPLE_RATE, audio, linewidth=0.5, color="tab:gray")
    for k, w in enumerate(words):
        ax.axvspan(w["start"], w["end"], alpha=0.25, color=("tab:blue", "tab:orange")[k % 2])
        ax.text((w["start"] + w["end"]) / 2, 0.95, w["word"], transform=ax.get_xaxis_transform(),
                ha="center", va="top", fontsize=8, rotation=45)
    why = "" if words else f"  (no words: {ans.parse_error or 'the output has none'})"
    ax.set_title(f"{Path(ans.audio).name}: {len(words)} words{why}", fontsize=9, loc="left")
    ax.set_xlim(0, len(audio) / SAMPLE_RATE)
    ax.set_xlabel("seconds")

