"""CLI verbs for data: `corpus build`, `shards build`, `shards chat`, `shards inspect`.

A build ends with a summary; it exits 1 when the quarantined share of inputs passes
--max-quarantine (default 5%), 2 on bad arguments.
"""
from __future__ import annotations

import json
import sys
from inspect import signature as inspect_signature
from pathlib import Path

from .ingest import IngestConfig
from .shards import ShardConfig


def _shard_cfg(args) -> ShardConfig:
    return ShardConfig(max_samples=args.shard_samples, max_bytes=int(args.shard_mb * (1 << 20)),
                       workers=args.workers, max_quarantine_fraction=args.max_quarantine,
                       ingest=IngestConfig(min_seconds=args.min_seconds, max_seconds=args.max_seconds))


def _report(index: dict, out: Path, limit: float) -> int:
    secs = sum(s["seconds"] for s in index["shards"])
    elapsed = index.get("_elapsed_s", 0.0)
    q = index["quarantine"]
    print(f"built {out}: {sum(t['samples'] for t in index['tasks'].values())} samples, "
          f"{len(index['tasks'])} tasks, {len(index['shards'])} shards, {secs / 3600:.2f} h of audio"
          + (f", {secs / elapsed:,.0f} audio-s/s" if elapsed else ""))
    for split, s in index["splits"].items():
        print(f"  {split:<6} {s['samples']:>7} samples  {s['hours']:.3f} h")
    print(f"  quarantined {q['total']} of {index['inputs']} inputs ({q['fraction']:.1%})"
          + "".join(f"\n    {r}: {n}" for r, n in q["by_reason"].items()))
    skipped = index["source"].get("skipped") or {}
    for task, why in skipped.items():
        print(f"  skipped {task}: {why}")
    if q["fraction"] > limit:
        print(f"error: quarantined fraction {q['fraction']:.1%} is above the limit {limit:.1%} "
              f"(see {out / 'quarantine.jsonl'})", file=sys.stderr)
        return 1
    return 0


def cmd_corpus_build(args) -> int:
    from .corpus.build import CorpusConfig, build_corpus
    index = build_corpus(Path(args.out), CorpusConfig(scale=args.scale, seed=args.seed), _shard_cfg(args))
    return _report(index, Path(args.out), _shard_cfg(args).max_quarantine_fraction)


def cmd_shards_build(args) -> int:
    from ..errors import CliError
    from .build import build
    from .convert import ConvertError, formats
    fmts = formats()
    if args.format not in fmts:
        raise CliError(f"unknown format {args.format!r}; known: {', '.join(sorted(fmts))}")
    src = Path(args.src)
    if not src.exists():
        raise CliError(f"source not found: {src}")
    try:
        extra = {"audio_root": args.audio_root} if args.audio_root else {}
        if extra and "audio_root" not in inspect_signature(fmts[args.format].plan).parameters:
            raise CliError(f"--audio-root: format {args.format!r} finds its audio itself (only qwen_chat takes it)")
        plan = fmts[args.format].plan(src, **extra)
    except ConvertError as e:
        raise CliError(str(e)) from None
    index = build(plan.streams, Path(args.out), _shard_cfg(args), plan.source, plan.label_sets)
    return _report(index, Path(args.out), _shard_cfg(args).max_quarantine_fraction)


def cmd_shards_chat(args) -> int:
    """Conversation shards for chat SFT from task shard folders (chat_build.py)."""
    from ..errors import CliError
    from .build import build
    from .chat_build import TaskChatConfig, plan_task_chats
    for folder in args.from_:
        if not (Path(folder) / "index.json").exists():
            raise CliError(f"--from {folder}: no index.json (not a finished shard folder)")
    for f in args.text_jsonl:
        if not Path(f).is_file():
            raise CliError(f"--text-jsonl {f}: no such file")
    cfg = TaskChatConfig(per_task={"train": args.per_task, "valid": args.valid_per_task, "test": args.test_per_task},
                         text={"train": args.text, "valid": 0, "test": args.test_text}, seed=args.seed)
    streams = plan_task_chats([Path(f) for f in args.from_], cfg, [Path(f) for f in args.text_jsonl])
    from .convert import qwen_chat
    for f in args.chatml:  # Qwen-Audio-Chat's own format, beside the generated conversations
        if not Path(f).exists():
            raise CliError(f"--chatml {f}: no such file")
        streams += qwen_chat.plan(Path(f), args.audio_root).streams
    source = {"format": "task_chat", "from": [str(f) for f in args.from_], "config": cfg.__dict__,
              "text_jsonl": list(args.text_jsonl), "chatml": list(args.chatml)}
    index = build(streams, Path(args.out), _shard_cfg(args), source)
    return _report(index, Path(args.out), _shard_cfg(args).max_quarantine_fraction)


def inspect(folder: Path) -> dict:
    path = folder / "index.json"
    if not path.exists():
        from ..errors import CliError
        raise CliError(f"no index.json in {folder}: not a shard folder, or its build did not finish "
                       "(run the build again to resume it)")
    index = json.loads(path.read_text())
    return {"folder": str(folder), "inputs": index["inputs"], "shards": len(index["shards"]),
            "hours": round(sum(t["hours"] for t in index["tasks"].values()), 4),
            "tasks": {name: {"samples": t["samples"], "hours": t["hours"], "splits": t["splits"],
                             "duration": t.get("duration")} for name, t in index["tasks"].items()},
            "quarantine": index["quarantine"]}


def cmd_shards_inspect(args) -> int:
    info = inspect(Path(args.dir))
    if args.json:
        print(json.dumps(info, indent=1))
        return 0
    print(f"{info['folder']}: {info['shards']} shards, {info['hours']:.3f} h, {len(info['tasks'])} tasks")
    print(f"  {'task':<26}{'samples':>8}{'train':>7}{'valid':>7}{'test':>7}{'hours':>9}  duration min/median/max s")
    for name, t in info["tasks"].items():
        d, sp = t["duration"] or {}, t["splits"]
        print(f"  {name:<26}{t['samples']:>8}{sp.get('train', 0):>7}{sp.get('valid', 0):>7}"
              f"{sp.get('test', 0):>7}{t['hours']:>9.4f}  "
              f"{d.get('min', 0):.2f}/{d.get('median', 0):.2f}/{d.get('max', 0):.2f}")
    q = info["quarantine"]
    print(f"  quarantined: {q['total']}" + "".join(f", {r} {n}" for r, n in q["by_reason"].items()))
    return 0


def _build_args(p) -> None:
    p.add_argument("--out", required=True, help="shard folder to build or resume")
    p.add_argument("--shard-samples", type=int, default=1000, help="samples per shard")
    p.add_argument("--shard-mb", type=float, default=256, help="MiB per shard")
    p.add_argument("--workers", type=int, default=ShardConfig().workers)
    p.add_argument("--max-quarantine", type=float, default=0.05, help="fail above this share of bad inputs")
    p.add_argument("--min-seconds", type=float, default=0.1)
    p.add_argument("--max-seconds", type=float, default=30.0)


def register(sub) -> None:
    corpus = sub.add_parser("corpus", help="the embedded multitask corpus").add_subparsers(
        dest="corpus_verb", required=True)
    p = corpus.add_parser("build", help="generate the embedded corpus into shards")
    _build_args(p)
    p.add_argument("--scale", type=float, default=1.0, help="multiply the items per task and split")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_corpus_build)
    shards = sub.add_parser("shards", help="convert datasets to shards, inspect shard folders").add_subparsers(
        dest="shards_verb", required=True)
    p = shards.add_parser("build", help="convert a dataset folder into shards")
    p.add_argument("--format", required=True)
    p.add_argument("--src", required=True)
    p.add_argument("--audio-root", help="qwen_chat: the folder its <audio> paths are relative to (default: the file's)")
    _build_args(p)
    p.set_defaults(func=cmd_shards_build)
    p = shards.add_parser("chat", help="conversations for chat SFT from task shard folders")
    p.add_argument("--from", dest="from_", action="append", required=True, help="a task shard folder (repeatable)")
    p.add_argument("--per-task", type=int, default=120, help="train samples per task asked about")
    p.add_argument("--valid-per-task", type=int, default=2, help="validation conversations per task (the in-loop loss)")
    p.add_argument("--test-per-task", type=int, default=12, help="held-out conversations per task (evaluation)")
    p.add_argument("--text", type=int, default=300, help="text-only train conversations")
    p.add_argument("--test-text", type=int, default=30)
    p.add_argument("--text-jsonl", action="append", default=[], help="a JSONL of {messages} added to train")
    p.add_argument("--chatml", action="append", default=[], help="a Qwen-Audio-Chat ChatML file (format qwen_chat) to add")
    p.add_argument("--audio-root", help="--chatml: the folder its <audio> paths are relative to (default: the file's)")
    p.add_argument("--seed", type=int, default=0)
    _build_args(p)
    p.set_defaults(func=cmd_shards_chat)
    p = shards.add_parser("inspect", help="per-task counts, hours, durations, quarantine")
    p.add_argument("dir")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_shards_inspect)
