"""Memory planning: `qwen-audio-mt plan --model M --stage S --trainer T [--gpus N]
[--batch-audio-seconds X] [--tokens N] [--gpu-memory-gb G] [--json]`.

Before a launch: parameter counts and the per-GPU memory of a training step, against the GPU's,
and the step's model FLOPs (flops.py; with a GPU's peak and an MFU, the seconds a step takes).
--gpus: GPUs in all (devices x num_nodes, default 8) for ddp/fsdp/deepspeed; a strategy `auto`
(trainer cpu or gpu) counts one device.
`--model` is a conf/model name (composed with `--stage` and `--trainer` through conf/train.yaml)
or an export folder (its config.json; the stage's trainable flags apply). No weights are ever
read: the model is built on the meta device from its architecture (model.llm.config, or the
config.json of model.llm.path when that folder exists; Whisper's dims from model.encoder, a
model.encoder.checkpoint is not opened). Vocabulary rows follow builders.build_llm; without the
tokenizer's ranks file they are model.llm.config.vocab_size and the tag tokens its last rows.

Parameters (per part: encoder, adapter, llm):
- trainable: what learns. LLM frozen with new_token_rows: the tag rows n_base..n_vocab of the
  embeddings (and of the untied head). LoRA (r > 0): r x (in + out) per target nn.Linear, plus
  those rows (peft's trainable tokens); encoder and adapter keep the stage's flags.
- with gradients: what holds a gradient and AdamW state. lit.py keeps whole embedding matrices
  trainable and masks the old rows' gradient, so there it is the full matrices.

Memory per GPU, bytes (W = weight bytes/param, N = GPUs sharding a tensor, else 1):
- weights: sum(params x W) / N_w. W: model.llm.dtype for the LLM, fp32 for encoder and adapter;
  `*-true` 16-bit precisions and DeepSpeed (it casts the module) make every W 2.
- gradients: params with gradients x W / N_g; DDP adds its bucket copy (x2) unless
  gradient_as_bucket_view.
- optimizer: torch AdamW (ddp, fsdp, single device): 2 moments in the param's dtype, no master
  copy (that is what torch.optim.AdamW allocates); DeepSpeed with 16-bit weights: fp32 master +
  2 fp32 moments = 12 bytes/param (8 with fp32 weights); / N_o; offload_optimizer: on the CPU.
- sharding: ddp none; fsdp FULL_SHARD/HYBRID_SHARD all three, SHARD_GRAD_OP grads + optimizer;
  deepspeed stage 1 optimizer, 2 + gradients, 3 + weights. FSDP also holds one unit's full
  weights and gradients while it computes: with auto_wrap_policy null (conf/trainer/fsdp.yaml)
  the whole model is one unit; with a policy, the model outside the LLM's layers + one layer.
  DeepSpeed stage 3 gathers module by module: one LLM layer.
- activations (Korthikanti et al. 2022, "Reducing Activation Recomputation"), 16-bit compute
  (x2 under 32-true), per layer per position: 34 h + 5 a s bytes; the 5 a s term (attention
  scores) only for eager attention, taking s = all tokens (one sequence; SDPA/flash store none).
  Gradient checkpointing: 2 h per layer per position (the layer inputs) + one layer's full set.
  LLM positions: --tokens (data.loader.limits.max_tokens, per rank: padded batch x longest
  sequence); encoder frames: --batch-audio-seconds x 50 (1,500 per 30 s), its attention is SDPA.
  Stored only where a gradient must flow: the LLM when anything trains (its inputs' gradient goes
  through it; frozen weights would let it keep somewhat less: an upper bound), the encoder only
  when it trains. Logits: (tokens - audio positions at 25/s) x vocab x 10 bytes (bf16 head output,
  its fp32 copy, the fp32 log-softmax kept for backward; audio_lm.py scores label tokens only).
- Not counted: CUDA context and allocator fragmentation (~1-3 GiB), autocast's bf16 weight
  copies, communication buckets, the conv stem and adapter activations.
Verdict: fits when the total <= --gpu-memory-gb, in GiB (an "80 GB" A100/H100 has 80 GiB); else
the changes that alone would fit, each recomputed by these formulas: gradient checkpointing,
DeepSpeed ZeRO 2 or 3, LoRA r=8, half the batch.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

from .errors import UserError, one_line
from .flops import Shapes, planned_step_flops

GIB = 2 ** 30
ENCODER_FRAMES_PER_S = 50   # audio.py: 100 mel frames/s, conv2 stride 2
LLM_POSITIONS_PER_S = 25    # audio.py: SECONDS_PER_POSITION = 0.04
PARTS = ("encoder", "adapter", "llm")


class PlanError(UserError):
    """A model the planner cannot count (no architecture), or a bad --model/--stage/--trainer."""


@dataclass
class Shape:
    """What the estimates need from the meta model. params, trainable (learned), grads (with
    gradients and AdamW state) and weight_bytes are per part."""
    params: dict
    trainable: dict
    grads: dict
    weight_bytes: dict
    vocab: int
    hidden: int
    layers: int
    heads: int
    layer_params: int       # one LLM decoder layer
    eager: bool             # eager attention stores its score matrices
    enc_width: int
    enc_layers: int
    lora8: int = 0          # the LLM's trainable params under model.lora.r=8 (a suggestion's figure)
    flop_shapes: object = None  # flops.Shapes: model FLOPs of a step


def compose(model: str, stage: str, trainer: str):
    """(ModelConfig with the stage's flags, the trainer's strategy and precision, loader limits)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from .config import from_dict, plain
    from .model.builders import ModelConfig, Trainable
    from .paths import conf_dir, register_resolvers
    register_resolvers()
    folder = Path(model)
    export = folder.is_dir() or "/" in model  # conf/model names have no slash
    name = "tiny" if export else model  # an export: the stage and trainer still come from conf/
    try:
        with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
            cfg = hydra_compose("train", overrides=[f"model={name}", f"stage={stage}", f"trainer={trainer}"])
        raw = plain(cfg.model)
        limits = plain(cfg.data.loader.limits)
        strategy = cfg.trainer.strategy  # trainer's other keys hold ${hydra:...}: resolve only these
        tr = {"strategy": plain(strategy) if OmegaConf.is_config(strategy) else str(strategy),
              "precision": str(cfg.trainer.precision)}
    except (HydraException, OmegaConfBaseException) as e:  # an unknown model/stage/trainer name
        raise PlanError(one_line(str(e))) from None
    if not export:
        return from_dict(ModelConfig, raw, "model"), tr, limits
    if not (folder / "config.json").is_file():
        raise PlanError(f"--model {folder}: no config.json there (an export folder has config.json + "
                        "model.safetensors; or give a conf/model name)")
    exported = json.loads((folder / "config.json").read_text())
    spec_file = folder / "tokenizer" / "spec.json"
    if spec_file.is_file():  # as export.load_exported: the ranks file travels inside the folder
        spec = json.loads(spec_file.read_text())
        base = spec["base"] if spec["base"] == "whisper" else str(folder / "tokenizer" / spec["base"])
        exported["tokenizer"] = {"base": base, "pattern": spec.get("pattern"),
                                 "tags": str(folder / "tokenizer" / "tokens.yaml")}
    cfg_model = from_dict(ModelConfig, exported, "model")
    return replace(cfg_model, trainable=from_dict(Trainable, raw["trainable"], "model.trainable")), tr, limits


def vocabulary(cfg) -> tuple[int, int, str | None]:
    """(n_base, n_vocab, note): the tokenizer's, or 0s and a note when its ranks file is absent."""
    from .tokenizer import Tokenizer
    try:
        tok = Tokenizer.from_spec(cfg.tokenizer)
        return tok.n_base, tok.n_vocab, None
    except (UserError, FileNotFoundError):
        return 0, 0, (f"tokenizer ranks {cfg.tokenizer.base} not found: vocabulary rows from the LLM's "
                      "vocab_size, its last rows taken as the tag tokens")


def build_llm_meta(llm, n_vocab: int, pad_to: int):
    """The LLM on the meta device (call inside `torch.device("meta")`), from its architecture."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from .model.builders import DTYPES, _round_up, build_llm
    folder = Path(llm.path) if llm.path else None
    if folder is not None and (folder / "config.json").is_file():
        conf = AutoConfig.from_pretrained(folder, local_files_only=True, trust_remote_code=llm.trust_remote_code)
        if conf.vocab_size < n_vocab:  # build_llm resizes a checkpoint's rows to the tokenizer's
            conf.vocab_size = _round_up(n_vocab, pad_to)
        return AutoModelForCausalLM.from_config(conf, dtype=DTYPES[llm.dtype], trust_remote_code=llm.trust_remote_code)
    if not llm.config:
        what = (f"model.llm.path={llm.path} {'has no config.json' if folder.is_dir() else 'not found'}"
                if folder else "model.llm.path is null")
        raise PlanError(f"{what} and model.llm.config is null: no LLM architecture to count (put the checkpoint "
                        "folder there, or give model.llm.config)")
    # no tokenizer (n_vocab 0): the config's rows, else the architecture's default
    n_vocab = n_vocab or llm.config.get("vocab_size") or AutoConfig.for_model(llm.model_type).vocab_size
    return build_llm(replace(llm, path=None), n_vocab, pad_to)[0]


def lora_params(llm, cfg) -> int:
    from torch import nn
    head = llm.get_output_embeddings()
    return sum(cfg.r * (m.in_features + m.out_features) for name, m in llm.named_modules()
               if isinstance(m, nn.Linear) and m is not head and name.rsplit(".", 1)[-1] in cfg.target_modules)


def shape(cfg) -> tuple[Shape, list[str]]:
    """Build encoder, adapter and LLM on the meta device, as build_model assembles them."""
    import torch
    from torch import nn

    from .model.adapter import AudioAdapter
    from .model.encoder import WhisperEncoder
    from .tags import load_vocab
    notes = []
    n_base, n_vocab, note = vocabulary(cfg)
    with torch.device("meta"):
        encoder = WhisperEncoder(replace(cfg.encoder, checkpoint=None)).whisper
        encoder.ln_post = nn.Identity()  # build_model moves it into the adapter
        llm = build_llm_meta(cfg.llm, n_vocab, cfg.pad_vocab_to)
        width = llm.get_input_embeddings().embedding_dim
        adapter = AudioAdapter(cfg.encoder.n_state, width)
    rows = llm.get_input_embeddings().num_embeddings
    if note:
        n_base, n_vocab = rows - len(load_vocab(cfg.tokenizer.tags).tokens), rows
        notes.append(note)
    if cfg.encoder.checkpoint:
        notes.append(f"encoder dims from model.encoder ({cfg.encoder.checkpoint} is not opened)")
    params = {p: sum(t.numel() for t in m.parameters()) for p, m in zip(PARTS, (encoder, adapter, llm))}
    t = cfg.trainable
    mats = 1 if llm.get_output_embeddings().weight is llm.get_input_embeddings().weight else 2
    new_rows = (n_vocab - n_base) * width * mats if t.new_token_rows else 0
    grads = {"encoder": params["encoder"] * t.encoder, "adapter": params["adapter"] * t.adapter}
    trainable = dict(grads)
    if cfg.lora.r:
        grads["llm"] = trainable["llm"] = lora_params(llm, cfg.lora) + new_rows
    elif t.llm:
        grads["llm"] = trainable["llm"] = params["llm"]
    else:  # lit.py: whole embedding matrices get gradients, a hook zeroes the old rows'
        grads["llm"] = rows * width * mats if t.new_token_rows else 0
        trainable["llm"] = new_rows
    layers = max((m for m in llm.modules() if isinstance(m, nn.ModuleList)), key=len)
    heads = getattr(llm.config, "num_attention_heads", 1)
    wbytes = {"encoder": 4, "adapter": 4, "llm": llm.get_input_embeddings().weight.element_size()}
    return Shape(params, trainable, grads, wbytes, rows, width, len(layers), heads,
                 sum(p.numel() for p in layers[0].parameters()), llm.config._attn_implementation == "eager",
                 cfg.encoder.n_state, cfg.encoder.n_layer, lora_params(llm, replace(cfg.lora, r=8)) + new_rows,
                 Shapes.from_parts(cfg.encoder, llm)), notes


@dataclass(frozen=True)
class Strategy:
    name: str               # ddp | fsdp | deepspeed | single
    shard: frozenset        # of "weights", "grads", "optimizer"
    detail: str
    offload: bool = False
    wrapped: bool = False   # fsdp: an auto_wrap_policy is set
    bucket_view: bool = False  # ddp: gradient_as_bucket_view (no second copy of the gradients)


def strategy(trainer: dict) -> Strategy:
    s = trainer["strategy"]
    target = s.get("_target_", "") if isinstance(s, dict) else str(s)
    if "FSDP" in target:
        kind = s.get("sharding_strategy", "FULL_SHARD")
        shard = {"NO_SHARD": (), "SHARD_GRAD_OP": ("grads", "optimizer")}.get(kind, ("weights", "grads", "optimizer"))
        return Strategy("fsdp", frozenset(shard), f"fsdp {kind}", wrapped=s.get("auto_wrap_policy") is not None)
    if "DeepSpeed" in target:
        stage = int(s.get("stage", 2))
        shard = ((), ("optimizer",), ("grads", "optimizer"), ("weights", "grads", "optimizer"))[min(max(stage, 0), 3)]
        offload = bool(s.get("offload_optimizer"))
        return Strategy("deepspeed", frozenset(shard), f"deepspeed ZeRO stage {stage}", offload)
    if "DDP" in target:
        view = isinstance(s, dict) and s.get("gradient_as_bucket_view")
        return Strategy("ddp", frozenset(), "ddp" + (" (gradient_as_bucket_view)" * bool(view)), bucket_view=bool(view))
    return Strategy("single", frozenset(), f"strategy {target or 'auto'}: one device, nothing sharded")


def sixteen_bit(precision: str) -> bool:
    """Lightning's precision computes in 16 bits: 16-mixed, bf16-mixed, 16-true, bf16-true."""
    return str(precision).split("-")[0] in ("16", "bf16")


def activations(sh: Shape, tokens: int, audio_s: float, ckpt: bool, half: bool) -> dict:
    """Bytes kept for backward (module docstring): LLM layers, encoder layers, logits."""
    f = 1 if half else 2  # Korthikanti's 34 h counts 16-bit activations

    def stack(layers: int, positions: float, width: int, attn: float) -> float:
        full = positions * (34 * width + attn) * f  # one layer, everything it keeps
        return layers * positions * 2 * width * f + full if ckpt else layers * full

    learns = sum(sh.grads.values()) > 0
    llm = stack(sh.layers, tokens, sh.hidden, 5 * sh.heads * tokens if sh.eager else 0) if learns else 0
    enc = stack(sh.enc_layers, audio_s * ENCODER_FRAMES_PER_S, sh.enc_width, 0) if sh.grads["encoder"] else 0
    labels = max(tokens - audio_s * LLM_POSITIONS_PER_S, 0)
    logits = labels * sh.vocab * ((2 if half else 4) + 8) if learns else 0
    return {"activations_llm": llm, "activations_encoder": enc, "logits": logits}


def memory(sh: Shape, st: Strategy, precision: str, gpus: int, tokens: int, audio_s: float, ckpt: bool) -> dict:
    """Bytes per GPU, line by line (module docstring)."""
    half = sixteen_bit(precision)
    cast = half and (st.name == "deepspeed" or precision.endswith("-true"))
    wb = {p: 2 if cast else sh.weight_bytes[p] for p in PARTS}
    n = {k: gpus if k in st.shard else 1 for k in ("weights", "grads", "optimizer")}
    grad = sum(sh.grads[p] * wb[p] for p in PARTS)
    copies = 2 if st.name == "ddp" and gpus > 1 and not st.bucket_view else 1
    if st.name == "deepspeed":  # fp32 master + 2 fp32 moments for 16-bit weights
        optim = sum(sh.grads[p] * (12 if wb[p] < 4 else 8) for p in PARTS)
    else:  # torch.optim.AdamW: exp_avg and exp_avg_sq like the param
        optim = 2 * grad
    out = {"weights": sum(sh.params[p] * wb[p] for p in PARTS) / n["weights"],
           "gradients": grad * copies / n["grads"], "optimizer": 0 if st.offload else optim / n["optimizer"],
           "gathered": 0.0}
    total = sum(sh.params.values())
    if "weights" in st.shard and gpus > 1:  # the unit being computed is whole again
        cb = 2 if half else max(wb.values())
        unit = sh.layer_params if st.name == "deepspeed" else (
            total - (sh.layers - 1) * sh.layer_params if st.wrapped else total)
        out["gathered"] = unit * cb + (0 if st.name == "deepspeed" else sum(sh.grads.values()) * unit / total * cb)
    out.update(activations(sh, tokens, audio_s, ckpt, half))
    out["total"] = sum(out.values())
    return out


def alternatives(sh: Shape, st: Strategy, run: dict, ckpt: bool, lora: bool) -> list[tuple[str, float]]:
    """(what to change, its total bytes per GPU), one change at a time."""
    def total(s=sh, t=st, c=ckpt, k=1, gpus=run["gpus"]):
        return memory(s, t, run["precision"], gpus, run["tokens"] // k, run["audio_s"] / k, c)["total"]
    out = []
    if not ckpt:
        out.append(("model.gradient_checkpointing=true", total(c=True)))
    g = run["gpus_flag"]
    if st.name not in ("deepspeed", "fsdp"):
        out.append((f"trainer=deepspeed ({g} GPUs)",
                    total(t=Strategy("deepspeed", frozenset(("grads", "optimizer")), ""), gpus=g)))
    if st.name != "deepspeed" or "weights" not in st.shard:
        out.append((f"trainer=deepspeed trainer.strategy.stage=3 ({g} GPUs)",
                    total(t=Strategy("deepspeed", frozenset(("weights", "grads", "optimizer")), ""), gpus=g)))
    if not lora and sh.grads["llm"] == sh.params["llm"]:
        out.append(("model.lora.r=8", total(s=replace(sh, grads={**sh.grads, "llm": sh.lora8}))))
    out.append((f"a smaller batch: --tokens {run['tokens'] // 2} --batch-audio-seconds {run['audio_s'] / 2:g} "
                "(data.loader.limits)", total(k=2)))
    return out


def plan(model: str, stage: str = "all", trainer: str = "cpu", gpus: int = 8, gpu_gib: float = 80.0,
         audio_s: float | None = None, tokens: int | None = None) -> dict:
    """Every figure of `qwen-audio-mt plan` (what --json prints)."""
    if gpus < 1 or (tokens is not None and tokens < 1) or (audio_s is not None and audio_s < 0) or gpu_gib <= 0:
        raise PlanError(f"--gpus {gpus}, --tokens {tokens}, --batch-audio-seconds {audio_s}, --gpu-memory-gb "
                        f"{gpu_gib}: GPUs and tokens must be >= 1, seconds >= 0, memory > 0")
    cfg, tr, limits = compose(model, stage, trainer)
    sh, notes = shape(cfg)
    st = strategy(tr)
    run = {"precision": tr["precision"], "gpus": 1 if st.name == "single" else gpus, "gpus_flag": gpus,
           "tokens": int(limits["max_tokens"] if tokens is None else tokens),
           "audio_s": float(limits["max_audio_seconds"] if audio_s is None else audio_s)}
    ckpt = cfg.gradient_checkpointing
    mem = memory(sh, st, run["precision"], run["gpus"], run["tokens"], run["audio_s"], ckpt)
    budget = gpu_gib * GIB
    fits = mem["total"] <= budget
    if fits:
        verdict = f"fits: {mem['total'] / GIB:.1f} of {gpu_gib:g} GiB ({mem['total'] / budget:.0%})"
    else:
        alts = alternatives(sh, st, run, ckpt, bool(cfg.lora.r))
        ok = [f"{what}: {b / GIB:.1f} GiB" for what, b in alts if b <= budget]
        best = min(alts, key=lambda a: a[1])
        verdict = (f"does not fit: {mem['total'] / GIB:.1f} > {gpu_gib:g} GiB; " +
                   (f"it fits with {'; or '.join(ok)}" if ok else
                    f"no single change is enough (best: {best[0]}: {best[1] / GIB:.1f} GiB), combine them"))
    params = {p: {"total": sh.params[p], "trainable": sh.trainable[p], "with_grads": sh.grads[p]} for p in PARTS}
    params["total"] = {k: sum(params[p][k] for p in PARTS) for k in ("total", "trainable", "with_grads")}
    return {"model": model, "stage": stage, "trainer": trainer, "strategy": st.detail, "gpus": run["gpus"],
            "precision": run["precision"], "llm_dtype": cfg.llm.dtype, "gradient_checkpointing": ckpt,
            "lora_r": cfg.lora.r, "tokens": run["tokens"], "audio_seconds": run["audio_s"], "params": params,
            "memory_gib": {k: v / GIB for k, v in mem.items()}, "gpu_memory_gib": gpu_gib, "fits": fits,
            "step_tflop": planned_step_flops(sh.flop_shapes, run["tokens"], run["audio_s"]) / 1e12,
            "verdict": verdict, "assumptions": assumptions(sh, st, cfg, run) + notes}


def assumptions(sh: Shape, st: Strategy, cfg, run: dict) -> list[str]:
    half = sixteen_bit(run["precision"])
    n, frames = run["gpus"], run["audio_s"] * ENCODER_FRAMES_PER_S
    out = [("weights: every part 16-bit (DeepSpeed casts the module)" if half and st.name == "deepspeed" else
            f"weights: LLM {cfg.llm.dtype}, encoder and adapter float32, {run['precision']}"),
           ("optimizer: DeepSpeed AdamW, fp32 master copy + 2 fp32 moments (12 bytes/param)" if st.name == "deepspeed"
            else "optimizer: torch AdamW (lit.py), 2 moments in each param's dtype, no fp32 master copy"),
           (f"{st.detail}: {', '.join(sorted(st.shard))} sharded over {n} GPUs" if st.shard and n > 1 else
            f"{st.detail}: everything replicated on each of {n} GPU(s)" +
            (" + DDP's gradient bucket copy" if st.name == "ddp" and n > 1 and not st.bucket_view else ""))]
    if st.offload:
        out.append("offload_optimizer: the optimizer state lives in CPU memory")
    if "weights" in st.shard and n > 1:
        out.append("gathered: one LLM layer (stage 3 fetches module by module)" if st.name == "deepspeed" else
                   "gathered: the unit FSDP computes is whole again: " + (
                       "the model outside the LLM's layers + one layer" if st.wrapped else
                       "auto_wrap_policy null, so the whole model (weights + gradients)"))
    out.append(f"activations per GPU: {run['tokens']:,} LLM positions, {run['audio_s']:g} s of audio = {frames:,.0f} "
               f"encoder frames; 34h{' + 5as' if sh.eager else ''} bytes per position per layer (Korthikanti et al. "
               "2022)" + ("; gradient checkpointing: 2h per layer + one layer's" if cfg.gradient_checkpointing else
                          "; no gradient checkpointing"))
    if not sh.eager:
        out.append("attention: SDPA kernels keep no score matrices (the 5as term is 0)")
    out.append("frozen parts: the encoder keeps activations only when it trains; the LLM whenever anything trains "
               "(gradients flow through it): an upper bound when it is frozen")
    out.append("logits: positions minus 25/s of audio are label tokens, 10 bytes each per vocabulary row")
    if not cfg.trainable.llm and cfg.trainable.new_token_rows and not cfg.lora.r:
        out.append("LLM frozen: the tag-token rows (n_base..n_vocab) learn, but the whole embedding and head "
                   "matrices hold gradients and AdamW state (lit.py masks the old rows' gradients)")
    out.append("not counted: CUDA context, fragmentation (~1-3 GiB), autocast weight copies, comm buckets")
    return out


def _count(n: float) -> str:
    for unit, k in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= k:
            return f"{n / k:.2f}{unit}" if unit == "B" else f"{n / k:.1f}{unit}"
    return f"{n:.0f}"


def format_plan(d: dict) -> str:
    lines = [f"model {d['model']}, stage {d['stage']}, trainer {d['trainer']} ({d['strategy']}, {d['gpus']} device(s), "
             f"{d['precision']}, LLM {d['llm_dtype']}, "
             f"gradient checkpointing {'on' if d['gradient_checkpointing'] else 'off'}"
             f"{', LoRA r=%d' % d['lora_r'] if d['lora_r'] else ''})",
             f"{'part':<9} {'params':>9} {'trainable':>10} {'with grads':>11}"]
    lines += [f"{p:<9} {_count(v['total']):>9} {_count(v['trainable']):>10} {_count(v['with_grads']):>11}"
              for p, v in d["params"].items()]
    lines.append(f"memory per GPU (GiB), {d['tokens']:,} tokens + {d['audio_seconds']:g} s audio per GPU:")
    mem = d["memory_gib"]
    lines += [f"  {k.replace('_', ' '):<20} {v:>7.1f}" for k, v in mem.items() if k != "total" and
              (v or k != "gathered")]  # a line only where a unit is gathered
    lines.append(f"  {'total':<20} {mem['total']:>7.1f} of {d['gpu_memory_gib']:g}")
    lines.append(f"verdict: {d['verdict']}")
    lines.append(f"compute: {d['step_tflop']:,.1f} model TFLOP per GPU per step (flops.py: forward + backward, the "
                 "audio as 30-s clips, tokens in rows of 2,048; seconds per step = that / (MFU x the GPU's peak))")
    return "\n".join(lines + ["assumptions:"] + [f"- {a}" for a in d["assumptions"]])


def cmd_plan(args) -> None:
    d = plan(args.model, args.stage, args.trainer, args.gpus, args.gpu_memory_gb, args.batch_audio_seconds, args.tokens)
    print(json.dumps(d, indent=1) if args.json else format_plan(d))


def register(sub) -> None:
    p = sub.add_parser("plan", help="parameter counts and per-GPU training memory, before a launch")
    p.add_argument("--model", required=True, help="a conf/model name (qwen2_audio_7b, tiny, ...) or an export folder")
    p.add_argument("--stage", default="all", help="conf/stage: all, pretrain, sft")
    p.add_argument("--trainer", default="cpu", help="conf/trainer: cpu, gpu, ddp, fsdp, deepspeed")
    p.add_argument("--gpus", type=int, default=8, help="GPUs in all (devices x num_nodes) for ddp/fsdp/deepspeed")
    p.add_argument("--gpu-memory-gb", type=float, default=80.0, help="memory per GPU, GiB (default 80)")
    p.add_argument("--batch-audio-seconds", type=float, default=None,
                   help="audio per GPU per step (default data.loader.limits.max_audio_seconds)")
    p.add_argument("--tokens", type=int, default=None, help="LLM positions per GPU per step (default "
                   "data.loader.limits.max_tokens)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_plan)
