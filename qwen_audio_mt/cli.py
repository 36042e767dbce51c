"""`qwen-audio-mt VERB ...`: one verb per job.

Errors a user can cause (unknown task, language or file; errors.UserError from any verb) exit 2
with one line naming the bad value and no traceback (QWEN_AUDIO_MT_DEBUG=1 shows it).
"""
from __future__ import annotations

import argparse
import json
import sys

from .errors import CliError, UserError, debugging, report
from .tags import Text

USER_ERRORS = (UserError, FileNotFoundError)  # a missing file named on the command line


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, not usage + message
        raise CliError(f"{message} (see {self.prog} --help)")


def _tokenizer(args):
    from .tokenizer import Tokenizer, TokenizerSpec
    return Tokenizer.from_spec(TokenizerSpec(base=args.base, pattern=args.pattern))


def cmd_tasks(args) -> None:
    from .render import Renderer
    renderer = Renderer(_tokenizer(args))
    rows = []
    for task in renderer.registry:
        rows.append({"name": task.name, "domain": task.domain, "family": task.family,
                     "metric": task.metric, "target": task.target.kind, "long_audio": task.long_audio,
                     "labels": list(task.closed_labels), "prompt": task.prompt,
                     "example": renderer.prompt_text(task, audio_lang=_example_lang(task)),
                     "description": task.description})
    if args.json:
        print(json.dumps(rows, ensure_ascii=False, indent=1))
        return
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        print(f"{r['name']:<{width}}  {r['domain']:<6}  {r['metric']:<15}  {r['prompt']}")
    counts = {d: sum(r["domain"] == d for r in rows) for d in ("speech", "sound", "music")}
    print(f"{len(rows)} tasks: " + ", ".join(f"{n} {d}" for d, n in counts.items()))


def _example_lang(task) -> str | None:
    return None if task.defaults.get("audio_lang") or "audio_lang" not in task.placeholders else "en"


def cmd_render(args) -> None:
    from .render import Renderer
    tok = _tokenizer(args)
    renderer = Renderer(tok)
    task = renderer.registry.get(args.task)
    try:
        pieces = renderer.prompt_pieces(task, args.audio_lang, args.text_lang, args.timestamps)
    except ValueError as e:  # unknown language codes come from the vocabulary as ValueError
        raise CliError(str(e)) from None
    prompt = "".join(pieces)
    ids = []
    for p in pieces:  # tags by name, free text (Text) as ordinary text
        ids += tok.encode(p) if isinstance(p, Text) else [tok.token_id(p)]
    if args.json:
        print(json.dumps({"task": task.name, "prompt": prompt, "ids": ids}, ensure_ascii=False))
    else:
        print(prompt)
        print(" ".join(map(str, ids)))


def cmd_tokens(args) -> None:
    tok = _tokenizer(args)
    ids = {t: tok.token_id(t) for t in tok.vocab.tokens}
    if args.json:
        print(json.dumps({"base": str(tok.spec.base_path()), "n_base": tok.n_base,
                          "n_vocab": tok.n_vocab, "ids": ids}, ensure_ascii=False))
        return
    print(f"base {tok.spec.base_path()} ({tok.n_base} ranks), {tok.n_vocab} tokens")
    for group, toks in tok.vocab.groups.items():
        print(f"  {group:<20} {len(toks):>5}  {toks[0]} {ids[toks[0]]} .. {toks[-1]} {ids[toks[-1]]}")


def _base_args(p) -> None:
    p.add_argument("--base", default="whisper",
                   help="base BPE ranks: 'whisper' (bundled multilingual.tiktoken) or a .tiktoken path")
    p.add_argument("--pattern", choices=("gpt2", "qwen"), default=None,
                   help="pre-tokenisation pattern (default: qwen for qwen*.tiktoken, else gpt2)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="qwen-audio-mt", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="verb", required=True, parser_class=_Parser)
    p = sub.add_parser("tasks", help="list the task registry")
    p.add_argument("--json", action="store_true")
    _base_args(p)
    p.set_defaults(func=cmd_tasks)
    p = sub.add_parser("render", help="render a task's prompt to text and ids")
    p.add_argument("--task", required=True)
    p.add_argument("--audio-lang", default=None)
    p.add_argument("--text-lang", default=None)
    p.add_argument("--timestamps", action="store_true")
    p.add_argument("--json", action="store_true")
    _base_args(p)
    p.set_defaults(func=cmd_render)
    p = sub.add_parser("tokens", help="the tag tokens and their ids")
    p.add_argument("--json", action="store_true")
    _base_args(p)
    p.set_defaults(func=cmd_tokens)
    for register in _extra_verbs():
        register(sub)
    return parser


def _extra_verbs():
    """Verbs defined beside the code they drive (data building, training...)."""
    from . import chat_cli, commands, notebooks, plan, sweep_report
    from .data import commands as data_commands
    return [data_commands.register, commands.register, chat_cli.register, sweep_report.register, notebooks.register,
            plan.register]


def main(argv=None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return args.func(args) or 0
    except USER_ERRORS as e:
        if debugging():
            raise
        return report("qwen-audio-mt", e)
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
