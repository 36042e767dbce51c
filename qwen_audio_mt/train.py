"""Training: `train(cfg)` is a plain function (tests call it); `main` is Hydra's thin wrapper.

    python -m qwen_audio_mt.train                          # pretrain_tiny on the embedded corpus
    python -m qwen_audio_mt.train experiment=three_tasks trainer.max_steps=300
    python -m qwen_audio_mt.train ckpt_path=last run_dir=outputs/train/RUN   # resume: newest checkpoint that loads

A bad value (an override Hydra cannot compose, a config key or value the job cannot use) ends in
one line and exit 2 (errors.run_main); QWEN_AUDIO_MT_DEBUG=1 shows the traceback.

The config is turned into the package's dataclasses once; `_target_` is used only for the
trainer, its callbacks and loggers. On rank 0 the run ends with a line of the samples the loader
skipped (by reason and shard; summary["skipped"]), an export folder and, unless
`evaluate=false`, the test-split evaluation (metrics.json, metrics.md, loss_curve.png). Too many
skipped samples stop a run with one line (data.loader.max_skip_fraction, data/skips.py).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import hydra  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

from .config import from_dict, plain  # noqa: E402
from .paths import conf_dir, register_resolvers  # noqa: E402

CONF_DIR = str(conf_dir())  # the checkout's conf/, or the copy an installed wheel carries
register_resolvers()  # conf/paths' ${start_dir:}


def data_config(cfg: dict):
    from .data.loader import DataConfig, LoaderConfig
    from .data.mixture import MixtureConfig
    data = cfg["data"]
    return DataConfig(mixture=from_dict(MixtureConfig, cfg["mixture"], "mixture"),
                      loader=from_dict(LoaderConfig, data["loader"], "data.loader"),
                      valid_split=data.get("valid_split", "valid"), test_split=data.get("test_split", "test"))


def job_config(cfg: DictConfig) -> DictConfig:
    """The job's own keys. A config composed with `return_hydra_config=True` (tests, in the
    lightning-hydra-template way) also holds the `hydra` node, whose sweep fields cannot resolve
    outside a multirun; resolving the whole config would fail on them."""
    if isinstance(cfg, DictConfig) and "hydra" in cfg:
        return OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    return cfg


def set_cpu_runtime(raw: dict) -> None:
    """On CPU, glibc's malloc keeps freed memory for the next step (`malloc_keep_freed`,
    malloc.py: measured in bench_train), and torch gets every core (`cpu_threads: null`) unless
    OMP_NUM_THREADS says otherwise:
    a loader worker is busy only ~5% of the time (1,500x real time against ~50 audio-s per
    step), so it barely contends. Measured on 2 cores, pretrain_tiny, 120 steps: 57 s with 2
    threads + 1 worker, 75 s with 1 thread + 1 worker. Very small models (the tests' shrunken
    ones) are the exception: their ops are too short for 2 threads, so the tests set OMP_NUM_THREADS=1."""
    if raw["trainer"].get("accelerator") != "cpu":
        return
    if raw.get("malloc_keep_freed", True):
        from .malloc import keep_freed_memory
        keep_freed_memory()
    import torch
    threads = raw.get("cpu_threads") or (None if os.environ.get("OMP_NUM_THREADS") else os.cpu_count())
    if threads:
        torch.set_num_threads(threads)


def compile_llm(model, on: bool) -> None:
    """`compile: true`: torch.compile of the LLM's decoder stack, in place (its state-dict keys,
    hence checkpoints and exports, do not change) with dynamic shapes, as lengths change every
    batch. Off by default: on the tiny default (CPU, 2 threads) the compiled stack ran 26.0 vs 66.2
    samples/s eager after a 53-s warm-up for its first 10 steps (measured; GPUs may differ)."""
    if on:
        model.llm.get_decoder().compile(dynamic=True)


def check_mixture(mixture) -> None:
    """Sources readable, weights consistent: a bad mixture fails before the trainer starts."""
    from .data.mixture import components, probabilities
    probabilities(components(mixture, "train"), mixture)


def check_adaptive(mixture, callbacks) -> None:
    from .callbacks import AdaptiveMixtureUpdate
    from .errors import ConfigError
    if mixture.adaptive is not None and not any(isinstance(c, AdaptiveMixtureUpdate) for c in callbacks):
        raise ConfigError("mixture.adaptive is set but callbacks.adaptive_mixture is off: the weights would never "
                          "move (keep conf/callbacks/default.yaml's adaptive_mixture)")


def resolve_init(value: str, output: str) -> Path:
    """`init_from`: a path, or `latest`, the newest export of a pretraining run
    (PATHS.OUTPUT/train/*/export, by modification time)."""
    from .errors import ConfigError
    if value != "latest":
        return Path(value)
    runs = sorted((p for p in Path(output, "train").glob("*/export") if (p / "model.safetensors").exists()),
                  key=lambda p: (p / "model.safetensors").stat().st_mtime)
    if not runs:
        raise ConfigError(f"init_from=latest: no export under {Path(output, 'train')} (run make pretrain first, "
                          "or set init_from=PATH to an export folder or .ckpt)")
    return runs[-1]


def model_config(raw: dict):
    """(ModelConfig, starting weights or None). With `init_from` the architecture and tokenizer
    are the pretrained model's; the stage's trainable flags, LoRA and gradient checkpointing are
    this config's (conf/model's architecture keys are not used)."""
    from dataclasses import replace

    from .model.builders import ModelConfig
    cfg = from_dict(ModelConfig, raw["model"], "model")
    if not raw.get("init_from"):
        return cfg, None
    from .model.export import load_pretrained
    path = resolve_init(str(raw["init_from"]), raw["paths"]["output"])
    model, pre = load_pretrained(path)
    print(f"init_from {path}", file=sys.stderr)
    return replace(pre, trainable=cfg.trainable, lora=cfg.lora, gradient_checkpointing=cfg.gradient_checkpointing), \
        model.state_dict()


def build(cfg: DictConfig):
    """(module, datamodule, trainer) from a composed config; nothing runs yet."""
    import lightning as L

    from .data.datamodule import AudioDataModule
    from dataclasses import replace

    from .lit import AudioLMModule
    from .optim import OptimConfig
    cfg = job_config(cfg)
    raw = plain(cfg)
    L.seed_everything(raw["seed"], workers=True, verbose=False)
    set_cpu_runtime(raw)
    max_steps = raw["trainer"].get("max_steps", -1)
    optim = from_dict(OptimConfig, {**raw["optim"], "total_steps": max(max_steps, 1)}, "optim")
    model_cfg, state = model_config(raw)
    module = AudioLMModule(model_cfg, optim, raw["log_every"], state)
    compile_llm(module.model, raw.get("compile", False))
    data = data_config(raw)  # rendered with the model's own tokenizer and front end
    enc = module.model.encoder.cfg  # as built: an import's mel bins and compat mode are its folder's
    loader = replace(data.loader, tokenizer=model_cfg.tokenizer, n_mels=enc.n_mels, compat=enc.compat)
    datamodule = AudioDataModule(replace(data, loader=loader))
    check_mixture(datamodule.cfg.mixture)
    # an experiment turns a default callback off by setting it to null (sft: the task metrics)
    callbacks = [hydra.utils.instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c is not None]
    check_adaptive(datamodule.cfg.mixture, callbacks)
    loggers = [hydra.utils.instantiate(c) for c in (cfg.get("logger") or {}).values()]
    from .checkpoints import checkpoint_plugins  # atomic checkpoint writes (AtomicCheckpointIO)
    trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False,
                                      **checkpoint_plugins(cfg.trainer))
    return module, datamodule, trainer


def check_config(raw: dict) -> None:
    """Every `optim`, `model`, `data` and `mixture` mistake, before the imports a training needs
    (lightning and transformers' model code take ~5 s): a typo answers in ~2 s."""
    from .model.builders import ModelConfig
    from .optim import OptimConfig
    from_dict(OptimConfig, raw["optim"], "optim")
    from_dict(ModelConfig, raw["model"], "model")
    check_mixture(data_config(raw).mixture)


def train(cfg: DictConfig) -> dict:
    """Fit (or resume), export and evaluate. Returns a summary dict."""
    cfg = job_config(cfg)
    check_config(plain(cfg))
    from lightning.pytorch.utilities.exceptions import SIGTERMException
    from .checkpoints import resolve_resume  # last/auto: the newest checkpoint that loads, said in one line
    ckpt_path = resolve_resume(cfg.run_dir, cfg.get("ckpt_path"))  # before the trainer prints anything
    module, datamodule, trainer = build(cfg)
    run_dir = Path(cfg.run_dir)
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    except SIGTERMException:
        print(f"stopped by SIGTERM at step {trainer.global_step}; resume with ckpt_path=last "
              f"run_dir={run_dir}", file=sys.stderr)
        return {"stopped": "SIGTERM", "step": trainer.global_step, "run_dir": str(run_dir)}
    except RuntimeError as e:  # DDP: a peer rank died or hung (distributed.py); anything else re-raises
        from .distributed import peer_lost
        if (lost := peer_lost(trainer, e)) is None:
            raise
        print(f"{lost}; the run stops, resume with ckpt_path=last run_dir={run_dir}", file=sys.stderr)
        raise SystemExit(1) from None
    summary = {"step": trainer.global_step, "run_dir": str(run_dir), "nan_skipped": module.nan_skipped,
               "realised_mixture": datamodule.realised_mixture(), "skipped": datamodule.skip_summary(),
               "objective": objective(trainer)}
    if trainer.is_global_zero:  # kept beside metrics.json: what each sweep point trained on
        import json
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "mixture.json").write_text(json.dumps(datamodule.mixture_record(), indent=1) + "\n")
    if trainer.is_global_zero:  # corrupt samples the loader skipped, by reason and shard (data/skips.py)
        from .data.skips import summary_line
        print(f"data: {summary_line(summary['skipped'])}", file=sys.stderr)
    perf = next((c for c in trainer.callbacks if type(c).__name__ == "PerfMonitor"), None)
    if perf is not None and perf.seconds:
        summary["perf"] = p = perf.summary()
        if trainer.is_global_zero:
            mfu = f", MFU {p['mfu']:.1%} of {p['peak_tflops']:.3g} TFLOP/s ({p['peak']})" if p["mfu"] else ""
            print(f"perf: {p['samples_per_s']:.1f} train samples/s and {p['tflops']:.3g} model TFLOP/s per device{mfu}",
                  file=sys.stderr)
    if trainer.is_global_zero and cfg.get("export", True) and not trainer.fast_dev_run:
        from .model.export import export
        summary["export"] = str(export(module.model, module.model_cfg, run_dir / "export"))
    if trainer.is_global_zero and cfg.get("evaluate", True) and not trainer.fast_dev_run:
        summary["metrics"] = _evaluate(module, datamodule, run_dir, cfg)
    if trainer.is_global_zero:  # what the run leaves on disk (retention: conf/callbacks/default.yaml)
        from .checkpoints import report_run_folder
        summary.update(report_run_folder(run_dir))
    return summary


def objective(trainer) -> float:
    """What a sweeper optimises: the last val/aggregate (mean margin over the baselines on the
    validation subset, callbacks.ValidationMetrics), nan when no validation ran."""
    value = trainer.callback_metrics.get("val/aggregate")
    return float(value) if value is not None else float("nan")


def _evaluate(module, datamodule, run_dir: Path, cfg: DictConfig) -> dict:
    """The registry's task metrics on the test split; with `chat_eval` (chat SFT), the held-out
    conversations instead, the `init_from` model asked the same questions beside it."""
    import copy

    from .model.lora import has_lora, merge_lora
    # scored as exported: LoRA merged (the same logits), on a copy the trainer keeps its own
    model = merge_lora(copy.deepcopy(module.model)) if has_lora(module.model) else module.model
    if not cfg.get("chat_eval"):
        from .eval import evaluate_run
        return evaluate_run(model, datamodule, run_dir, cfg)
    from .chat_eval import ChatEvalConfig, evaluate_chat, table
    from .model.export import load_model
    from .tokenizer import Tokenizer
    models = {"sft": (model.eval(), Tokenizer.from_spec(module.model_cfg.tokenizer))}
    if cfg.get("init_from"):
        base, renderer = load_model(resolve_init(str(cfg.init_from), cfg.paths.output))
        models["pretrained"] = (base, renderer.tok)
    doc = evaluate_chat(models, datamodule.cfg.mixture, from_dict(ChatEvalConfig, plain(cfg.chat_eval), "chat_eval"),
                        run_dir)
    print(f"chat evaluation, {doc['conversations']} held-out conversations ({run_dir / 'chat_metrics.md'}):\n"
          + table(doc["models"]))
    return doc


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="train")
def main(cfg: DictConfig) -> float:
    """Returns the objective (Hydra's sweepers read it). In a multirun a failed point writes its
    one line to RUN/error.txt and the sweep goes on; a single run exits as errors.py says."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from .errors import exit_on_user_error, sweep_job
    if HydraConfig.get().mode == RunMode.MULTIRUN:
        return sweep_job("qwen_audio_mt.train", lambda: train(cfg).get("objective", float("nan")), Path(cfg.run_dir))
    return exit_on_user_error("qwen_audio_mt.train", train, cfg).get("objective")


if __name__ == "__main__":
    from .errors import run_main
    run_main("qwen_audio_mt.train", main)
