"""CLI verbs that use a trained model: `generate`, `export` and `import` (released layouts).

    qwen-audio-mt generate --model DIR --task NAME --audio FILE... [--audio-lang L] [--text-lang L]
        [--timestamps] [--question Q] [--choices A B ...] [--query Q] [--field KEY=VALUE]
        [--beam N] [--max-new-tokens N] [--json]

    qwen-audio-mt export --model DIR --format qwen2-audio|qwen-audio --out DIR
    qwen-audio-mt import --format qwen2-audio|qwen-audio --path DIR --out DIR [--base RANKS]

`export` writes a released layout (model/interop.py): qwen2-audio for transformers'
Qwen2AudioForConditionalGeneration + its processor, qwen-audio for the QWen remote-code layout.
`import` turns such a folder into our export folder (what generate, chat and eval load).

The model is an export folder or a Lightning `.ckpt`. Each file is answered; a file that cannot
be (missing, empty, undecodable, too long for its task) gets one line on stderr naming it and
the reason, and the call exits 2 after answering the others. A bad task, language, prompt field
or model exits 2 at once with one line. `--json` prints one object per file and line:
{"audio", "task", "prompt", "text", "parsed", "tokens", "seconds"} (seconds: the audio's
duration), plus "parse_error", "windows" (long audio) or "error" when they apply.
"""
from __future__ import annotations

import json
import os
import sys


def _fields(args) -> dict:
    fields = {}
    for item in args.field or ():
        key, sep, value = item.partition("=")
        if not sep or not key:
            from .errors import CliError
            raise CliError(f"--field {item!r}: expected KEY=VALUE")
        fields[key] = value
    for name in ("question", "query"):
        if getattr(args, name) is not None:
            fields[name] = getattr(args, name)
    if args.choices:
        fields["choices"] = list(args.choices)
    return fields


def cmd_generate(args) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from .generate import GenerationConfig
    from .infer import Answerer, Query
    from .model.export import load_model
    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    query = Query(args.task, args.audio_lang, args.text_lang, args.timestamps, _fields(args), args.prompt)
    stop = ("<|endoftext|>", "<|im_end|>") if args.prompt and "<|im_start|>" in args.prompt else ("<|endoftext|>",)
    gen = GenerationConfig(max_new_tokens=args.max_new_tokens, beam_size=args.beam, length_penalty=args.length_penalty,
                           temperature=args.temperature, top_p=args.top_p, seed=args.seed, stop=stop,
                           batch_size=args.batch_size)
    model, renderer = load_model(args.model, args.device)
    answerer = Answerer(model, renderer, gen, overlap_s=args.overlap)
    answerer.check(query)  # a bad task, language or field stops the call before any audio is read
    failed = 0
    for a in answerer.answer(args.audio, query):
        if a.error:
            failed += 1
            print(f"qwen-audio-mt: error: {a.error}", file=sys.stderr)
        if args.json:
            print(json.dumps(a.to_json(), ensure_ascii=False), flush=True)
        elif not a.error:
            note = f"  [parse error: {a.parse_error}]" if a.parse_error else ""
            print(f"{a.audio}\t{a.text}{note}", flush=True)
    return 2 if failed else 0


def cmd_export(args) -> int:
    from .conversation import chat_strings
    from .model.export import load_pretrained
    from .tokenizer import Tokenizer
    model, cfg = load_pretrained(args.model)
    tok = Tokenizer.from_spec(cfg.tokenizer)
    if args.format == "qwen2-audio":
        from .model.qwen2_audio import save_qwen2_audio
        out = save_qwen2_audio(model, tok, args.out, chat_strings().system)
    else:
        from .model.qwen_audio import save_qwen_audio
        out = save_qwen_audio(model, tok, args.out)
    mode = model.encoder.cfg.compat
    note = "" if mode == args.format else (f" (this model ran with encoder.compat={mode or 'null'}; {args.format} reads the "
                                          "padded frame at odd lengths, so its numbers differ there by ~1e-3)")
    print(f"wrote {out} in the {args.format} layout{note}")
    return 0


def cmd_import(args) -> int:
    from .model.builders import ModelConfig, ReleasedConfig, build_model
    from .model.export import export
    from .tokenizer import Tokenizer, TokenizerSpec
    spec = TokenizerSpec(base=args.base, pattern=args.pattern)
    cfg = ModelConfig(tokenizer=spec, released=ReleasedConfig(args.format, args.path))
    tok = Tokenizer.from_spec(spec)
    model = build_model(cfg, tok)
    out = export(model, cfg, args.out)  # the model's own shapes, no path back to the release
    print(f"imported {args.path} ({args.format}) into {out}: encoder.compat={model.encoder.cfg.compat}, "
          f"{model.llm.get_input_embeddings().num_embeddings:,} embedding rows")
    return 0


def register(sub) -> None:
    formats = ("qwen2-audio", "qwen-audio")
    p = sub.add_parser("export", help="write a trained model in a released layout (qwen2-audio: transformers)")
    p.add_argument("--model", required=True, help="an export folder (outputs/train/RUN/export) or a .ckpt")
    p.add_argument("--format", required=True, choices=formats)
    p.add_argument("--out", required=True, help="the folder to write")
    p.set_defaults(func=cmd_export)
    p = sub.add_parser("import", help="a released checkpoint folder -> our export folder")
    p.add_argument("--format", required=True, choices=formats)
    p.add_argument("--path", required=True, help="a local folder: config.json + safetensors")
    p.add_argument("--out", required=True, help="the export folder to write")
    p.add_argument("--base", default="whisper", help="tokenizer base ranks: 'whisper' or a .tiktoken path "
                   "(the releases need qwen.tiktoken)")
    p.add_argument("--pattern", choices=("gpt2", "qwen"), default=None)
    p.set_defaults(func=cmd_import)

    p = sub.add_parser("generate", help="answer audio files with a trained model (export folder or .ckpt)")
    p.add_argument("--model", required=True, help="an export folder (outputs/train/RUN/export) or a .ckpt")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--task", help="a registry task (qwen-audio-mt tasks lists them)")
    what.add_argument("--prompt", help="a raw prompt of tags and text, e.g. '<|startoftranscript|><|en|>...'")
    p.add_argument("--audio", nargs="+", required=True, metavar="FILE", help="audio files (wav, flac, ogg, mp3; any rate)")
    p.add_argument("--audio-lang", default=None)
    p.add_argument("--text-lang", default=None)
    p.add_argument("--timestamps", action="store_true", help="word timestamps (SRWT) where the task takes them")
    p.add_argument("--question", default=None, help="the question of a QA / instruction task")
    p.add_argument("--choices", nargs="+", default=None, help="answer options, each after <|choice|>")
    p.add_argument("--query", default=None, help="what to ground (audio_grounding)")
    p.add_argument("--field", action="append", metavar="KEY=VALUE", help="any other free-text prompt field")
    p.add_argument("--beam", type=int, default=1, help="beam size (1: greedy)")
    p.add_argument("--length-penalty", type=float, default=1.0)
    p.add_argument("--temperature", type=float, default=0.0, help="> 0: sample (with --top-p, --seed)")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=16, help="rows per forward (beams count as rows)")
    p.add_argument("--overlap", type=float, default=2.0, help="seconds shared by consecutive 30-s windows of long audio")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: every core)")
    p.add_argument("--json", action="store_true", help="one JSON object per file and line")
    p.set_defaults(func=cmd_generate)
