"""SFT conversations from task shards: `qwen-audio-mt shards chat --from DIR --out DIR`.

Any task shard folder works (the embedded corpus, a converted dataset, Audio-FLAN JSONL after
`shards build --format audioflan`, whose instruction tasks become single-turn chats). Per split,
from the samples of every task (chat_tasks.py, pools in tags/instructions.yaml):

- `chat_single`: one question and its answer per chosen sample (`per_task[split]` samples per
  task, chosen at random; all when fewer);
- `chat_followup`: a second exchange on `follow_up` of those samples (word times after a
  transcript, "why" after a label, a fact about a captioned clip);
- `chat_compare`: 2-3 audios of one closed task in one turn, `compare` x per_task of them;
- `chat_text`: audio-free instructions over the split's transcripts and captions
  (`text[split]` of them), plus any `--text-jsonl` file of {"messages": [...]} (train split).

Each conversation is a job of the ordinary shard build (build.py), so it resumes, is
deterministic for a seed, and its audio goes through ingest's path (chat_ingest.py) read straight
from the source tar by offset (no copy of the corpus in memory). The four names are the shard
families a mixture weights (conf/mixture/sft.yaml).
"""
from __future__ import annotations

import hashlib
import io
import json
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

from .chat_ingest import ChatItem
from .chat_pools import load_pools
from .chat_tasks import ChatSampleError, ChatSpec, compare, corpus_texts, follow_up, single_turn, text_from_jsonl, text_only
from .shards import Job, Stream

SOURCE = "task_chat"
MAX_KEY = 64   # tar (USTAR) names stop at 100 characters: long compare keys are shortened


@dataclass(frozen=True)
class TaskChatConfig:
    per_task: dict = field(default_factory=lambda: {"train": 120, "valid": 2, "test": 12})
    follow_up: float = 0.3     # share of the chosen samples that also get a two-exchange conversation
    compare: float = 0.25      # compare conversations per closed task, as a share of per_task
    text: dict = field(default_factory=lambda: {"train": 300, "valid": 0, "test": 30})
    seed: int = 0


@dataclass(frozen=True)
class _Audio:
    """Where a sample's FLAC sits in its tar."""
    shard: str
    offset: int
    size: int


def read_samples(folder: Path) -> dict[tuple[str, str], list[tuple[dict, _Audio]]]:
    """(split, task) -> [(meta, audio location)] of every sample of a task shard folder."""
    index = json.loads((folder / "index.json").read_text())
    out: dict[tuple[str, str], list] = {}
    for entry in index["shards"]:
        path = folder / entry["name"]
        metas, audio = {}, {}
        with tarfile.open(path) as tar:
            for m in tar:
                key, _, ext = m.name.partition(".")
                if ext == "json":
                    metas[key] = json.loads(tar.extractfile(m).read())
                elif ext == "flac":
                    audio[key] = _Audio(str(path), m.offset_data, m.size)
        out.setdefault((entry["split"], entry["task"]), []).extend(
            (metas[k], audio[k]) for k in metas if k in audio)
    return out


def _decode(a: _Audio) -> tuple[np.ndarray, int]:
    with open(a.shard, "rb") as f:
        f.seek(a.offset)
        return sf.read(io.BytesIO(f.read(a.size)), dtype="float32")


def chat_item(spec: dict, audio: list[_Audio], split: str, family: str) -> ChatItem:
    """A job function: the conversation, its audio decoded from the source shards."""
    labels = {k: v for k, v in spec["meta"].items() if k != "task"}
    labels["base_task"] = spec["meta"].get("task")  # `task` of the shard sample is its family
    return ChatItem(spec["key"], split, SOURCE, spec["messages"], [_decode(a) for a in audio], family, labels)


def _short(key: str) -> str:
    return key if len(key) <= MAX_KEY else f"{key[:MAX_KEY - 11]}-{hashlib.sha1(key.encode()).hexdigest()[:10]}"


def _job(spec: ChatSpec, where: dict[str, _Audio], split: str, family: str) -> Job:
    d = {**spec.to_json(), "key": _short(spec.key)}
    return Job(d["key"], SOURCE, chat_item, (d, [where[k] for k in spec.audio_keys], split, family))


def _choose(rng, items: list, n: int) -> list:
    return items if n >= len(items) else [items[i] for i in sorted(rng.choice(len(items), n, replace=False))]


def _task_specs(samples: list[tuple[dict, _Audio]], n: int, rng, pools, cfg: TaskChatConfig) -> dict[str, list]:
    chosen = [m for m, _ in _choose(rng, samples, n)]
    out = {"chat_single": [single_turn(m, rng, pools) for m in chosen], "chat_followup": [], "chat_compare": []}
    for m in chosen:
        if rng.random() < cfg.follow_up and (spec := follow_up(m, rng, pools)) is not None:
            out["chat_followup"].append(spec)
    metas = [m for m, _ in samples]
    for _ in range(int(round(n * cfg.compare)) if len(metas) >= 2 else 0):
        group = _choose(rng, metas, int(rng.integers(2, 4)))
        try:
            out["chat_compare"].append(compare(group, rng, pools))
        except ChatSampleError:  # not a closed task (compare is defined for closed ones only)
            break
    return out


def plan_task_chats(folders: list[Path], cfg: TaskChatConfig = TaskChatConfig(),
                    text_jsonl: list[Path] = ()) -> list[Stream]:
    """The streams (split, family) of conversation jobs built from task shard folders."""
    pools = load_pools()
    rng = np.random.default_rng(cfg.seed)
    samples: dict[tuple[str, str], list] = {}
    for folder in folders:
        for k, v in read_samples(Path(folder)).items():
            samples.setdefault(k, []).extend(v)
    where = {m["key"]: a for v in samples.values() for m, a in v}
    jobs: dict[tuple[str, str], list[Job]] = {}
    for (split, task), items in sorted(samples.items()):
        n = int(cfg.per_task.get(split, 0))
        for family, specs in (_task_specs(items, n, rng, pools, cfg) if n else {}).items():
            jobs.setdefault((split, family), []).extend(_job(s, where, split, family) for s in specs)
    for split in sorted({s for s, _ in samples}):
        texts = corpus_texts(m for (s, _), v in samples.items() if s == split for m, _ in v)
        specs = _choose(rng, text_only(texts, rng, pools), int(cfg.text.get(split, 0)))
        if split == "train":
            specs += [s for p in text_jsonl for s in text_from_jsonl(p)]
        jobs.setdefault((split, "chat_text"), []).extend(_job(s, where, split, "chat_text") for s in specs)
    return [Stream(split, family, js) for (split, family), js in sorted(jobs.items()) if js]
