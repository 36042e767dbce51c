"""Evaluation entry point: every task of a split scored with its registry metric, beside a baseline.

    make eval ARGS="model=outputs/train/RUN/export"                           # an export folder
    python -m qwen_audio_mt.eval model=outputs/train/RUN/checkpoints/last.ckpt eval.split=valid
    python -m qwen_audio_mt.eval model=DIR 'sources=[shards/librispeech]' eval.max_per_task=50

Prints one table (task, metric, value, baseline, margin, n) and writes metrics.json, metrics.md,
metrics.png (value against baseline per task) and loss_curve.png into `out` (default
outputs/eval/DATE). The config is the `EvalJob` dataclass, registered in Hydra's ConfigStore
rather than read from conf/: `model=` is then a plain value (with conf/ on the search path,
Hydra reads `model=` as training's conf/model/ group and refuses the override).
`evaluate(cfg)` is the plain function behind the Hydra wrapper; `evaluate_run` is what training
calls at its end.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import hydra  # noqa: E402
from hydra.core.config_store import ConfigStore  # noqa: E402
from omegaconf import MISSING, DictConfig, OmegaConf  # noqa: E402

from .config import from_dict, plain  # noqa: E402
from .evaluation import EvalConfig  # noqa: E402
from .paths import register_resolvers  # noqa: E402

register_resolvers()  # ${start_dir:} in ROOT

ROOT = "${oc.env:QWEN_AUDIO_MT_ROOT,${start_dir:}}"  # as conf/paths/default.yaml's root


@dataclass
class EvalJob:
    model: str = MISSING                 # an export folder or a Lightning checkpoint (.ckpt)
    sources: list[str] = field(default_factory=lambda: [f"{ROOT}/shards/embedded"])
    out: str = "${hydra:runtime.output_dir}"
    eval: EvalConfig = field(default_factory=EvalConfig)


_store = ConfigStore.instance()
_store.store(name="eval_job", node=EvalJob)
_store.store(name="eval", node={"defaults": ["eval_job", "_self_"],
                                "hydra": {"run": {"dir": f"{ROOT}/outputs/eval/${{now:%Y-%m-%d_%H-%M-%S}}"},
                                          "job": {"chdir": False}}})


def score_and_report(model, renderer, sources: list, run_dir: Path, cfg: EvalConfig,
                     metrics_csv: Path | None = None) -> dict:
    from .evaluation import evaluate_model
    from .report import format_table, write_report
    metrics = evaluate_model(model, renderer, sources, cfg)
    files = write_report(metrics, run_dir, metrics_csv)
    print(format_table(metrics))
    print(f"wrote {', '.join(str(p) for p in files.values())}")
    return metrics


def evaluate_run(model, datamodule, run_dir: Path, cfg: DictConfig) -> dict:
    """The end of a training run: its model, its eval sources, its run folder."""
    from .evaluation import run_data
    sources, renderer = run_data(datamodule)
    ecfg = from_dict(EvalConfig, {**plain(cfg).get("eval", {}), "pad_to_30s": datamodule.cfg.loader.pad_to_30s})
    csv = Path(run_dir) / "logs" / "metrics.csv"
    return score_and_report(model.eval(), renderer, sources, Path(run_dir), ecfg, csv if csv.exists() else None)


def evaluate(cfg: DictConfig) -> dict:
    from .model.export import ModelLoadError, load_model
    if OmegaConf.is_missing(cfg, "model"):
        raise ModelLoadError('no model given: make eval ARGS="model=outputs/train/RUN/export" (an export '
                             "folder or a .ckpt)")
    raw = plain(cfg)
    model, renderer = load_model(raw["model"])
    out = Path(raw["out"])
    out.mkdir(parents=True, exist_ok=True)
    return score_and_report(model, renderer, list(raw["sources"]), out, from_dict(EvalConfig, raw["eval"], "eval"))


@hydra.main(version_base="1.3", config_path=None, config_name="eval")
def main(cfg: DictConfig) -> None:
    from .errors import exit_on_user_error
    exit_on_user_error("qwen_audio_mt.eval", evaluate, cfg)


if __name__ == "__main__":  # a bad path or value: one line, exit 2 (errors.run_main)
    from .errors import run_main
    run_main("qwen_audio_mt.eval", main)
