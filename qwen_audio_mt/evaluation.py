"""Evaluation with the registry's metric for every task, each beside a baseline.

    metrics = evaluate_model(model, renderer, ["shards/embedded"], EvalConfig(split="test"))

For every task of the split (samples read once, in shard order, unaugmented, through
data.reader.read_split; a sample whose labels do not fit its task is skipped and counted):
- Every task is answered by free generation (greedy unless `beam_size` > 1), parsed
  (parse.py) and scored by the metric tags/tasks.yaml names for it (metrics.py) against the
  sample's canonical fields. A clip is encoded once and its prefix (audio and prompt) prefilled
  once; the likelihoods below and the generation all start from that prefill.
- Closed-label tasks (label, tag) are also ranked by likelihood over their label set
  (scoring.py): exact and fast, it is their headline `value`; the generated answers' accuracy
  is reported beside it (`generated`).
- Loss and token accuracy under teacher forcing: closed tasks get them from the ranking (the
  true label's row); open tasks only with `teacher_forcing` (off by default: no registry metric
  needs it, and it costs about as much as the rest of an open task's scoring).
- `max_new_tokens` per task: 1.25 x the longest rendered training target + 4, capped by the
  config (a model that never stops costs that much, not the cap).
- Baselines (baselines.py), from the `baseline_split` (train) labels: closed sets, the larger
  of chance and always answering the most frequent training label; open tasks, always
  answering the most frequent training target, and for wer/cer also the empty answer (the
  better one is `baseline`); word timestamps, the reference words spread evenly over the clip
  (the most frequent target matches almost no word). `margin_points` (metrics.margin_points)
  is value against baseline in points, higher better for every metric; `summary.aggregate` is
  its mean over the tasks that have both.
"""
from __future__ import annotations

import random
from collections import Counter, defaultdict
from dataclasses import dataclass, field

import torch
from tqdm import tqdm

from .baselines import Baselines, train_targets
from .data.loader import Featurizer, LoaderConfig
from .data.mixture import MixtureConfig, label_sets
from .data.reader import as_sources, read_split, split_counts
from .generate import GenerationConfig, Generator
from .metrics import HIGHER_IS_BETTER, margin_points, score_task
from .parse import expected_fields, parse_output
from .render import Renderer
from .scoring import Item, candidates, prompt_of, ranked, requests
from .targets import LABEL_ERRORS
from .tasks import CLOSED_KINDS



@dataclass
class EvalConfig:
    """Not frozen: it is also the Hydra schema of `python -m qwen_audio_mt.eval` (eval.py), and
    OmegaConf makes a frozen dataclass read-only, refusing every override."""
    split: str = "test"
    max_per_task: int | None = None      # the first N samples of every task
    keys: tuple[str, ...] | None = None  # only these sample keys (the in-loop validation subset)
    pad_to_30s: bool = False             # Qwen-Audio's front end (the model must have trained so)
    batch_rows: int = 256                # likelihood rows per forward (ranking, teacher forcing)
    teacher_forcing: bool = False        # open tasks: also the true target's loss and token accuracy
    batch_size: int = 32                 # generation rows per forward
    chunk: int = 64                      # clips of one task held at once (memory ~ chunk x 30 s)
    max_new_tokens: int = 256            # cap of the per-task budget
    beam_size: int = 1
    baseline_split: str = "train"        # where the most frequent targets come from
    progress: bool = True


@dataclass
class _Task:
    """Running results of one task."""
    hyps: list = field(default_factory=list)     # parsed answers (None: did not parse)
    refs: list = field(default_factory=list)     # the samples' canonical fields
    langs: list = field(default_factory=list)    # text language per sample
    n: int = 0
    hits: int = 0                                # ranking picks that were right (closed)
    parse_errors: int = 0
    tf: torch.Tensor = field(default_factory=lambda: torch.zeros(3))  # teacher-forced logprob, tokens, correct


def eval_renderer(renderer: Renderer, sources, pad_to_30s: bool) -> Renderer:
    """The caller's tokenizer and registry, with the eval indexes' own closed label sets
    (ESC-50's 50 classes, ...) where they give one."""
    sets = {t: tuple(v) for t, v in label_sets(MixtureConfig(as_sources(sources))).items() if t in renderer.registry}
    return Renderer(renderer.tok, renderer.registry, pad_to_30s=pad_to_30s, label_sets=sets)


def run_data(datamodule) -> tuple[list, Renderer]:
    """A training run's evaluation sources and the renderer its data was rendered with (its
    tokenizer, its label sets, 30-s padding), given the sources' own label sets."""
    from .tokenizer import Tokenizer
    loader = datamodule.cfg.loader
    sources = list((datamodule.cfg.eval_mixture or datamodule.cfg.mixture).sources)
    base = Renderer(Tokenizer.from_spec(loader.tokenizer), label_sets=datamodule.label_sets or None)
    return sources, eval_renderer(base, sources, loader.pad_to_30s)


def read_items(rend: Renderer, sources, cfg: EvalConfig, n_mels: int, skipped: Counter, compat: str | None = None):
    """(task name, Item) in shard order: the public reader's samples through the loader's own
    featurizer (log-mel, the true target rendered with `rend`), unaugmented."""
    feat = Featurizer(LoaderConfig(n_mels=n_mels, pad_to_30s=cfg.pad_to_30s, tokenizer=rend.tok.spec, compat=compat), {},
                      train=False, renderer=rend)
    for s in read_split(sources, cfg.split, keys=None if cfg.keys is None else set(cfg.keys),
                        max_per_task=cfg.max_per_task, skipped=skipped):
        try:
            example = feat(s, None)
        except LABEL_ERRORS:  # as the training loader skips them
            skipped[s.get("task")] += 1
            continue
        yield s["task"], Item({k: v for k, v in s.items() if k != "audio"}, example)


def _chunks(items, size: int):
    """Consecutive items of one task, at most `size` at a time."""
    group: list = []
    for task, item in items:
        if group and (task != group[0][0] or len(group) >= size):
            yield group[0][0], [it for _, it in group]
            group = []
        group.append((task, item))
    if group:
        yield group[0][0], [it for _, it in group]


def _score_chunk(model, rend: Renderer, gen: Generator, res: _Task, items: list[Item], tf: bool) -> None:
    """One prefill per clip serves the likelihoods (every label, or the true target) and the
    generated answer."""
    task = rend.task(items[0].sample["task"])
    closed = task.target.kind in CLOSED_KINDS
    labels = task.target.labels
    conts = ([candidates(rend, it, labels) for it in items] if closed
             else [[it.example.ids[len(prompt_of(it)):]] for it in items] if tf else None)
    outs, scores = gen.run(requests(model, items, batch=gen.cfg.batch_size), conts)
    if closed:
        picks, truth = ranked(rend, items, labels, scores)
        res.hits += sum(r.pick == r.truth for r in picks)
        res.tf += truth.sum(0)
    elif tf:
        res.tf += torch.cat(scores).sum(0)
    for it, g in zip(items, outs):
        ts = bool(it.sample.get("timestamps", False))
        p = parse_output(task, g.tokens, rend.tok, ts)
        res.parse_errors += p.fields is None
        res.hyps.append(p.fields)
        res.refs.append(expected_fields(task, it.sample, rend.tok, ts))
        res.langs.append(rend.languages(task, it.sample.get("audio_lang"), it.sample.get("text_lang"))[1])
    res.n += len(items)


def evaluate_model(model, renderer: Renderer, sources, cfg: EvalConfig = EvalConfig(),
                   baselines: Baselines | None = None) -> dict:
    """Score every task of `cfg.split` in `sources` (shard folders or SourceConfigs whose `tasks`
    filter holds); returns {"split", "tasks": {name: metrics}, "summary"} (see the module docs).
    `baselines`: train_targets() already read (the in-loop validation reuses them)."""
    rend = eval_renderer(renderer, sources, cfg.pad_to_30s)
    counts = split_counts(sources, cfg.split)
    total = sum(counts.values()) if cfg.keys is None else len(cfg.keys)
    if cfg.max_per_task is not None:
        total = min(total, sum(min(n, cfg.max_per_task) for n in counts.values()))
    targets = baselines or train_targets(rend, sources, cfg.baseline_split, set(counts))
    skipped: Counter = Counter()
    results: dict[str, _Task] = defaultdict(_Task)
    was_training = model.training
    model.eval()
    n_mels = model.encoder.cfg.n_mels
    gens: dict[str, Generator] = {}
    try:
        with torch.no_grad(), tqdm(total=total, desc=f"eval {cfg.split}", unit="clip", disable=not cfg.progress) as bar:
            for name, items in _chunks(read_items(rend, sources, cfg, n_mels, skipped, model.encoder.cfg.compat), cfg.chunk):
                if name not in gens:
                    budget = targets.max_new_tokens(name, cfg.max_new_tokens)
                    gens[name] = Generator(model, rend.tok, GenerationConfig(
                        max_new_tokens=budget, beam_size=cfg.beam_size, batch_size=cfg.batch_size), cfg.batch_rows)
                _score_chunk(model, rend, gens[name], results[name], items, cfg.teacher_forcing)
                bar.update(len(items))
    finally:
        model.train(was_training)
    tasks = {}
    for name in sorted(set(results) | set(skipped)):
        tasks[name] = task_metrics(rend.task(name), results[name], targets, skipped[name])
    return {"split": cfg.split, "tasks": tasks, "summary": summarize(tasks)}


def task_metrics(task, res: _Task, targets: Baselines, skipped: int = 0) -> dict:
    closed = task.target.kind in CLOSED_KINDS
    out = {"domain": task.domain, "kind": "closed" if closed else "open", "metric": task.metric, "n": res.n}
    generated = score_task(task, res.hyps, res.refs, res.langs) if res.n else None
    base = targets.score(task, res.refs, res.langs) if res.n else {}
    if closed:
        value = res.hits / res.n if res.n else None
        out.update(value=value, generated=generated.value if generated else None)
    else:
        value = generated.value if generated else None
        out["value"] = value
    out["higher_is_better"] = HIGHER_IS_BETTER[task.metric]
    out["baseline"] = base.get("baseline")
    out["baselines"] = {k: v for k, v in base.items() if k != "baseline"}
    out["margin_points"] = margin_points(task.metric, value, out["baseline"])
    if generated is not None:
        out["details"] = generated.details
    lp, tokens, correct = res.tf.tolist()
    out["loss"] = -lp / tokens if tokens else None
    out["token_accuracy"] = correct / tokens if tokens else None
    out["parse_errors"] = res.parse_errors
    if skipped:
        out["skipped"] = skipped
    return out


def summarize(tasks: dict[str, dict]) -> dict:
    scored = [m for m in tasks.values() if m["n"] and m.get("value") is not None]
    margins = [m["margin_points"] for m in scored if m.get("margin_points") is not None]
    closed = [m for m in scored if m["kind"] == "closed"]
    mean = lambda xs: sum(xs) / len(xs) if xs else None  # noqa: E731
    return {
        "tasks": len(tasks),
        "scored": len(scored),
        "beat_baseline": sum(x > 0 for x in margins),
        "aggregate": mean(margins),
        "closed_tasks": len(closed),
        "beat_chance_by_20": sum(100 * (m["value"] - m["baselines"]["chance"]) >= 20 for m in closed),
        # the baseline of a closed task is the larger of chance and the majority label's accuracy
        "beat_baseline_by_20": sum(m["margin_points"] >= 20 for m in closed),
        "mean_closed_accuracy": mean([m["value"] for m in closed]),
        "open_tasks": sum(m["kind"] == "open" for m in scored),
    }


def subset_keys(sources, split: str, per_task: int, seed: int = 0) -> tuple[str, ...]:
    """A fixed, seeded choice of `per_task` sample keys of every task (labels read, no audio)."""
    by_task: dict[str, list[str]] = defaultdict(list)
    for s in read_split(sources, split, audio=False):
        by_task[s["task"]].append(str(s["key"]))
    rng = random.Random(seed)
    return tuple(k for task in sorted(by_task) for k in sorted(rng.sample(by_task[task], min(per_task, len(by_task[task])))))

