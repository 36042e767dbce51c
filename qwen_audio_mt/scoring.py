"""Score a model on a split: closed-label tasks by ranking their label set, open tasks by
teacher-forced loss and token accuracy.

Choices:
- Data: the eval path of training (mixture.components for the split, stream.eval_samples,
  loader.Featurizer with train=False): every sample once, in shard order, unaugmented, so the
  result is deterministic. `max_per_task` keeps the first N scored samples of a task. Samples
  whose labels do not fit the task are skipped and counted, as the loaders do.
- Rendering: the caller's renderer (tokenizer, registry); a task's closed label set is the
  eval indexes' own set (ESC-50's 50 classes, ...) when they give one, else the renderer's.
- Closed tasks (target kind "label" or "tag"): one candidate per label (the sample with its
  target field set to that label, same prompt); the pick is the label whose target tokens plus
  the end token have the highest summed log-probability under teacher forcing. Summed, not
  length-normalised: every candidate is a complete answer from one closed set, and the end token
  already charges a label for stopping early. Ties go to the label listed first.
- Audio: each clip is encoded once, alone at its own length (its score never depends on its
  batch-mates, and equals a forward of the clip by itself); its positions are reused for all its
  candidate rows, which are batched up to `batch_rows` rows (memory ~ rows x length x width).
- Baselines: chance = 1/|labels|; majority = share of the most frequent true label among the
  scored samples; baseline = the larger; margin in points (x100).
- Open tasks: mean token cross-entropy and token accuracy (argmax == label) over the real
  targets (end token included), pooled over tokens. Closed tasks report the same on their true
  label.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
from torch.nn.utils.rnn import pad_sequence
from tqdm import tqdm

from .data.collate import Example
from .render import IGNORE
from .data.loader import Featurizer, LoaderConfig
from .data.mixture import Component, MixtureConfig, SourceConfig, components, label_sets
from .data.stream import SkipCounter, eval_samples
from .render import Renderer
from .targets import TargetError
from .tasks import TaskError

CLOSED_KINDS = ("label", "tag")
SKIPPABLE = (TargetError, TaskError, KeyError, ValueError)  # as loader._examples skips them


class Item(NamedTuple):
    sample: dict        # the decoded sample without its audio (labels, languages, ...)
    example: Example    # mel and rendered ids of its true target


class Ranked(NamedTuple):
    scores: list[float]  # summed log-probability of each label's target, in label order
    pick: int            # index of the chosen label
    truth: int           # index of the true label


@dataclass
class TaskTally:
    """Running sums for one task."""
    labels: tuple[str, ...] = ()   # closed label set; () for an open task
    n: int = 0
    hits: int = 0
    logprob: float = 0.0           # summed over the true targets' tokens
    tokens: float = 0.0
    correct: float = 0.0
    truths: Counter = field(default_factory=Counter)
    skipped: int = 0


# ---------------------------------------------------------------------- reading
def eval_renderer(renderer: Renderer, mixture: MixtureConfig, comps: list[Component], pad_to_30s: bool) -> Renderer:
    """The caller's tokenizer and registry; label sets from the eval indexes, else the caller's."""
    sets = {c.task: renderer.task(c.task).target.labels for c in comps}
    sets.update({t: tuple(v) for t, v in label_sets(mixture).items() if t in sets})
    return Renderer(renderer.tok, renderer.registry, pad_to_30s=pad_to_30s, label_sets=sets)


def read_items(feat: Featurizer, comps: list[Component], max_per_task: int | None,
               skipped: Counter) -> Iterator[Item]:
    """Every sample of the components in shard order, featurised; skips counted per task."""
    kept: Counter = Counter()
    for comp in comps:
        if max_per_task is not None and kept[comp.task] >= max_per_task:
            continue
        bad = SkipCounter()
        for sample in eval_samples(comp, 0, 1, bad):
            try:
                example = feat(sample, None)
            except SKIPPABLE as e:
                bad.skip("bad_label", f"{sample.get('key')}: {e}")
                continue
            kept[comp.task] += 1
            yield Item({k: v for k, v in sample.items() if k != "audio"}, example)
            if max_per_task is not None and kept[comp.task] >= max_per_task:
                break
        skipped[comp.task] += sum(bad.values())


# ---------------------------------------------------------------------- forward
def _device_dtype(model) -> tuple[torch.device, torch.dtype]:
    w = model.encoder.whisper.conv1.weight
    return w.device, w.dtype


@torch.no_grad()
def clip_audio(model, example: Example) -> tuple[torch.Tensor, int]:
    """One clip's LLM positions [N, D] (N = its count), encoded alone at its own length."""
    device, dtype = _device_dtype(model)
    mel = example.mel[None].to(device, dtype)
    positions, counts = model.audio_embeddings(mel, torch.tensor([mel.shape[-1]], device=device))
    return positions[0, : int(counts[0])], int(counts[0])


@torch.no_grad()
def score_rows(model, rows: list[tuple[int, list[int], list[int]]], audio: list[tuple[torch.Tensor, int]],
               pad_id: int, batch_rows: int) -> torch.Tensor:
    """rows (clip index, ids, loss mask) -> [R, 3]: summed logprob, tokens, correct tokens."""
    device = _device_dtype(model)[0]
    out = []
    for start in range(0, len(rows), batch_rows):
        chunk = rows[start: start + batch_rows]
        clips = sorted({c for c, _, _ in chunk})
        where = {c: i for i, c in enumerate(clips)}
        positions = pad_sequence([audio[c][0] for c in clips], batch_first=True)
        idx = torch.tensor([where[c] for c, _, _ in chunk], device=device)
        counts = torch.tensor([audio[c][1] for c, _, _ in chunk], device=device)
        ids = pad_sequence([torch.tensor(r[1]) for r in chunk], batch_first=True, padding_value=pad_id).to(device)
        mask = pad_sequence([torch.tensor(r[2], dtype=torch.bool) for r in chunk], batch_first=True).to(device)
        attention = pad_sequence([torch.ones(len(r[1]), dtype=torch.long) for r in chunk], batch_first=True).to(device)
        labels = torch.where(mask, ids, IGNORE)
        res = model(ids, attention, None, None, labels, audio=(positions.index_select(0, idx), counts))
        out.append(torch.stack([res.sample_logprob, res.sample_tokens, res.sample_correct], 1).float().cpu())
    return torch.cat(out) if out else torch.zeros(0, 3)


# ---------------------------------------------------------------------- closed and open
def candidates(renderer: Renderer, item: Item, labels: tuple[str, ...]) -> list[tuple[list[int], list[int]]]:
    """(ids, loss mask) per label: the sample with its target field set to that label."""
    ex, name = item.example, renderer.task(item.sample["task"]).target.field
    prompt = ex.ids[: ex.loss_mask.index(1)]
    out = []
    for label in labels:
        ids, mask = renderer.render({**item.sample, name: label}, n_audio=ex.n_audio)
        if ids[: len(prompt)] != prompt or mask.index(1) != len(prompt):
            raise ValueError(f"task {item.sample['task']}: candidate {label!r} changes the prompt "
                             f"(its target field {name!r} is also a prompt field): cannot rank labels")
        out.append((ids, mask))
    return out


def rank_labels(model, renderer: Renderer, items: list[Item], labels: tuple[str, ...],
                batch_rows: int = 256) -> tuple[list[Ranked], torch.Tensor]:
    """Rank each item's label set; also [len(items), 3] logprob/tokens/correct of the true label."""
    audio = [clip_audio(model, it.example) for it in items]
    rows = [(i, ids, mask) for i, it in enumerate(items) for ids, mask in candidates(renderer, it, labels)]
    scores = score_rows(model, rows, audio, renderer.tok.end_id, batch_rows).view(len(items), len(labels), 3)
    field_ = renderer.task(items[0].sample["task"]).target.field if items else None
    ranked, truth_rows = [], []
    for it, s in zip(items, scores):
        lp = s[:, 0].tolist()
        pick = max(range(len(labels)), key=lambda j: (lp[j], -j))  # ties: the first label
        truth = labels.index(str(it.sample[field_]))
        ranked.append(Ranked(lp, pick, truth))
        truth_rows.append(s[truth])
    return ranked, torch.stack(truth_rows) if truth_rows else torch.zeros(0, 3)


def teacher_forced(model, items: list[Item], pad_id: int, batch_rows: int = 256) -> torch.Tensor:
    """[len(items), 3]: summed logprob, tokens and correct tokens of each item's own target."""
    audio = [clip_audio(model, it.example) for it in items]
    rows = [(i, it.example.ids, it.example.loss_mask) for i, it in enumerate(items)]
    return score_rows(model, rows, audio, pad_id, batch_rows)


def _score_group(model, renderer: Renderer, tally: TaskTally, items: list[Item], batch_rows: int) -> None:
    if tally.labels:
        ranked, truth = rank_labels(model, renderer, items, tally.labels, batch_rows)
        tally.hits += sum(r.pick == r.truth for r in ranked)
        tally.truths.update(tally.labels[r.truth] for r in ranked)
    else:
        truth = teacher_forced(model, items, renderer.tok.end_id, batch_rows)
    tally.n += len(items)
    tally.logprob += float(truth[:, 0].sum())
    tally.tokens += float(truth[:, 1].sum())
    tally.correct += float(truth[:, 2].sum())


# ---------------------------------------------------------------------- metrics
def task_metrics(task, tally: TaskTally) -> dict:
    out = {"domain": task.domain, "kind": "closed" if tally.labels else "open", "metric": task.metric,
           "n": tally.n}
    if tally.labels:
        acc = tally.hits / tally.n if tally.n else None
        chance = 1 / len(tally.labels)
        majority = max(tally.truths.values()) / tally.n if tally.n else None
        baseline = max(chance, majority or 0.0)
        out.update(accuracy=acc, chance=chance, majority=majority, baseline=baseline,
                   margin_points=None if acc is None else 100 * (acc - baseline))
    out["loss"] = -tally.logprob / tally.tokens if tally.tokens else None
    out["token_accuracy"] = tally.correct / tally.tokens if tally.tokens else None
    if tally.skipped:
        out["skipped"] = tally.skipped
    return out


def summarize(tasks: dict[str, dict]) -> dict:
    closed = [m for m in tasks.values() if m["kind"] == "closed" and m["n"]]
    opened = [m for m in tasks.values() if m["kind"] == "open" and m["n"]]
    mean = lambda xs: sum(xs) / len(xs) if xs else None  # noqa: E731
    return {
        "closed_tasks": len(closed),
        "beat_baseline_by_20": sum(m["margin_points"] >= 20 for m in closed),
        "beat_chance_by_20": sum(100 * (m["accuracy"] - m["chance"]) >= 20 for m in closed),
        "mean_closed_accuracy": mean([m["accuracy"] for m in closed]),
        "open_tasks": len(opened),
        "mean_open_token_accuracy": mean([m["token_accuracy"] for m in opened]),
    }


# ---------------------------------------------------------------------- entry point
def eval_sources(sources: list) -> tuple[SourceConfig, ...]:
    """Shard folders (str) or training sources as they are: a source's `tasks` filter holds (a run
    trained on three tasks of a folder is scored on those three); weights play no part in scoring."""
    return tuple(s if isinstance(s, SourceConfig) else SourceConfig(str(s)) for s in sources)


def prepare(renderer: Renderer, sources: list, split: str, n_mels: int = 80,
            pad_to_30s: bool = False) -> tuple[Renderer, Featurizer, list[Component]]:
    """(eval renderer, eval featurizer, components) of `split` in `sources` (see eval_sources)."""
    mixture = MixtureConfig(eval_sources(sources))
    comps = components(mixture, split)
    rend = eval_renderer(renderer, mixture, comps, pad_to_30s)
    feat = Featurizer(LoaderConfig(n_mels=n_mels, pad_to_30s=pad_to_30s, tokenizer=rend.tok.spec), {}, train=False)
    feat.renderer = rend  # render with the caller's tokenizer and registry and the eval label sets
    return rend, feat, comps


def evaluate_model(model, renderer: Renderer, sources: list, split: str = "test", *, n_mels: int = 80,
                   pad_to_30s: bool = False, max_per_task: int | None = None, batch_rows: int = 256,
                   progress: bool = True) -> dict:
    """Score every task of `split` in `sources` (shard folders or SourceConfigs; see the module docstring)."""
    rend, feat, comps = prepare(renderer, sources, split, n_mels, pad_to_30s)
    tallies = {}
    for c in comps:
        target = rend.task(c.task).target
        tallies[c.task] = TaskTally(target.labels if target.kind in CLOSED_KINDS else ())
    per_task: Counter = Counter()
    for c in comps:
        per_task[c.task] += c.samples
    total = sum(n if max_per_task is None else min(n, max_per_task) for n in per_task.values())
    skipped: Counter = Counter()
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), tqdm(total=total, desc=f"eval {split}", unit="clip", disable=not progress) as bar:
            _run(model, rend, tallies, read_items(feat, comps, max_per_task, skipped), batch_rows, bar)
    finally:
        model.train(was_training)
    for name, n in skipped.items():
        tallies[name].skipped = n
    tasks = {name: task_metrics(rend.task(name), t) for name, t in sorted(tallies.items())}
    return {"split": split, "tasks": tasks, "summary": summarize(tasks)}


def _run(model, renderer: Renderer, tallies: dict[str, TaskTally], items: Iterator[Item], batch_rows: int, bar) -> None:
    """Score items in groups of one task holding about `batch_rows` rows."""
    group: list[Item] = []
    rows = 0

    def flush():
        if group:
            _score_group(model, renderer, tallies[group[0].sample["task"]], group, batch_rows)
            bar.update(len(group))
            group.clear()

    for it in items:
        if group and it.sample["task"] != group[0].sample["task"]:
            flush()
            rows = 0
        group.append(it)
        rows += len(tallies[it.sample["task"]].labels) or 1
        if rows >= batch_rows:
            flush()
            rows = 0
    flush()
