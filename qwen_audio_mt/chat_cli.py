"""`qwen-audio-mt chat`: talk to a chat model, typed or from a script (the code is chat.ChatSession's).

    qwen-audio-mt chat --model DIR [--script FILE] [--json] [--system TEXT] [--window TOKENS]
        [--max-new-tokens N] [--beam N] [--temperature T] [--top-p P] [--seed S] [--device D]

One user message per line (typed, or a script's lines):
    /audio PATH    attach an audio (any format; over 30 s in 30-s windows) to the next question
    /reset         forget the conversation (and audio attached but not asked about yet)
    /save FILE     write the conversation as JSON (messages, audio paths inline)
    /quit          stop; the end of the input does too
    anything else  a question about the audios attached so far; its reply is printed
Blank lines are skipped; PATH and FILE are taken relative to the working folder, as a shell would.
A bad line (an audio that cannot be read, an unknown /command, a question that alone does not fit
the window) prints one line `qwen-audio-mt: error: ...` on stderr and the conversation goes on
(a question that fails is dropped with the audios attached to it); a --script run then exits 2
after its last line (0 when every line went through).

Output: each reply as printed text, or with --json one object per reply and line:
{"turn": exchanges so far, "question": the text, "attached": the audios attached to this turn,
"audios": the audios the model input held, in order (the window may have dropped the oldest),
"dropped": earlier exchanges left out of the window, "reply": the text, "tokens": reply tokens,
"finished": false when it stopped at --max-new-tokens}.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from .errors import CliError, UserError, report

PROG = "qwen-audio-mt"
PROMPT = "> "
# chat.DEFAULT_WINDOW and DEFAULT_MAX_NEW_TOKENS (not imported: chat.py loads torch, and the parser
# of every verb is built at start; tests/test_chat.py checks they agree)
DEFAULT_WINDOW, DEFAULT_MAX_NEW_TOKENS = 6144, 512


class _Loop:
    """The commands of one chat, on a session; `line(text)` runs one line (False: /quit)."""

    def __init__(self, session, as_json: bool):
        self.session, self.as_json = session, as_json
        self.pending: list = []   # Clips attached for the next question
        self.failed = 0

    def line(self, text: str) -> bool:
        text = text.rstrip("\r\n")
        if not text.strip():
            return True
        try:
            return self._run(text)
        except UserError as e:
            self.failed += 1
            report(PROG, e)
            return True

    def _run(self, text: str) -> bool:
        cmd, _, arg = text.strip().partition(" ")
        if not text.startswith("/"):
            self._ask(text)
        elif cmd == "/quit":
            return False
        elif cmd == "/audio":
            if not arg.strip():
                raise CliError("/audio needs a path: /audio PATH")
            self.pending.append(self.session.clip(arg.strip()))
        elif cmd == "/reset":
            self.session.reset()
            self.pending = []
        elif cmd == "/save":
            if not arg.strip():
                raise CliError("/save needs a file: /save FILE")
            self.session.save(arg.strip())
        else:
            raise CliError(f"unknown command {cmd!r} (/audio PATH, /reset, /save FILE, /quit)")
        return True

    def _ask(self, text: str) -> None:
        s = self.session
        attached, self.pending = self.pending, []  # a turn that fails takes its audios with it
        reply = s.ask(text, audio=attached)
        if not self.as_json:
            print(reply, flush=True)
            return
        clips = s.audios
        out = {"turn": sum(m.role == "assistant" for m in s.history.messages), "question": text,
               "attached": [c.ref for c in attached], "audios": [clips[i].ref for i in s.last.audios],
               "dropped": s.dropped(), "reply": reply, "tokens": s.last.tokens, "finished": s.last.finished}
        print(json.dumps(out, ensure_ascii=False), flush=True)


def _lines(script: str | None):
    """The script's lines, else stdin's (with a prompt when a person types)."""
    if script is not None:
        try:
            yield from Path(script).read_text(encoding="utf-8").splitlines()
        except OSError as e:
            raise CliError(f"--script {script}: cannot read it ({e.strerror or e})") from None
        return
    if not sys.stdin.isatty():
        yield from sys.stdin
        return
    while True:
        try:
            yield input(PROMPT)
        except EOFError:
            return


def cmd_chat(args) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from .chat import ChatSession
    from .generate import GenerationConfig
    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    gen = GenerationConfig(max_new_tokens=args.max_new_tokens, beam_size=args.beam, temperature=args.temperature,
                           top_p=args.top_p, seed=args.seed)
    if args.window < 0:
        raise CliError(f"--window {args.window}: must be >= 0 (0: no limit)")
    if args.script is not None and not Path(args.script).is_file():
        raise CliError(f"--script {args.script}: no such file")
    session = ChatSession.load(args.model, args.device, system=args.system, max_tokens=args.window or None,
                               generation=gen)
    loop = _Loop(session, args.json)
    try:
        for text in _lines(args.script):
            if not loop.line(text):
                break
    except KeyboardInterrupt:  # Ctrl-C ends a typed chat without a traceback
        print(file=sys.stderr)
        return 130
    return 2 if args.script is not None and loop.failed else 0


def register(sub) -> None:
    p = sub.add_parser("chat", help="talk to a chat model about audio (interactive, or --script FILE)")
    p.add_argument("--model", required=True, help="an export folder (outputs/.../export) or a .ckpt")
    p.add_argument("--script", default=None, metavar="FILE",
                   help="replay a conversation: one user message per line, /audio PATH lines included")
    p.add_argument("--json", action="store_true", help="one JSON object per reply and line")
    p.add_argument("--system", default=None, help="the system message (default: tags/chat.yaml's; '' for none)")
    p.add_argument("--window", type=int, default=DEFAULT_WINDOW, metavar="TOKENS",
                   help="prompt tokens kept; whole earlier exchanges are dropped, oldest first (0: no limit)")
    p.add_argument("--max-new-tokens", type=int, default=DEFAULT_MAX_NEW_TOKENS)
    p.add_argument("--beam", type=int, default=1, help="beam size (1: greedy)")
    p.add_argument("--temperature", type=float, default=0.0, help="> 0: sample (with --top-p, --seed)")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: every core)")
    p.set_defaults(func=cmd_chat)
