"""Evaluation: score a model on a split, write metrics.json / metrics.md / loss_curve.png.

    python -m qwen_audio_mt.eval model=outputs/train/RUN/export          # an export folder
    python -m qwen_audio_mt.eval model=outputs/train/RUN/checkpoints/last.ckpt split=valid

`evaluate(cfg)` is the plain function behind the Hydra wrapper; `evaluate_run` is what
training calls at its end.
"""
from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from .config import plain  # noqa: E402

CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")


def _score_and_report(model, renderer, sources: list, run_dir: Path, split: str, n_mels: int,
                      pad_to_30s: bool, max_per_task, metrics_csv: Path | None) -> dict:
    from .report import format_table, write_report
    from .scoring import evaluate_model
    metrics = evaluate_model(model, renderer, sources, split, n_mels=n_mels, pad_to_30s=pad_to_30s,
                             max_per_task=max_per_task)
    files = write_report(metrics, run_dir, metrics_csv)
    print(format_table(metrics))
    print(f"wrote {', '.join(str(p) for p in files.values())}")
    return metrics


def evaluate_run(model, datamodule, run_dir: Path, cfg: DictConfig) -> dict:
    """The end of a training run: its model, its eval sources, its run folder."""
    from .render import Renderer
    raw = plain(cfg)
    loader = datamodule.cfg.loader
    mixture = datamodule.cfg.eval_mixture or datamodule.cfg.mixture
    renderer = Renderer(label_sets=datamodule.label_sets or None, pad_to_30s=loader.pad_to_30s,
                        tokenizer=None if loader.tokenizer is None else _tokenizer(loader.tokenizer))
    csv = Path(run_dir) / "logs" / "metrics.csv"
    return _score_and_report(model.eval(), renderer, list(mixture.sources), Path(run_dir),
                             raw["eval"]["split"], loader.n_mels, loader.pad_to_30s, raw["eval"]["max_per_task"],
                             csv if csv.exists() else None)


def _tokenizer(spec):
    from .tokenizer import Tokenizer
    return Tokenizer.from_spec(spec)


def load_any(path: str):
    """(model, renderer, n_mels) from an export folder or a Lightning checkpoint."""
    from .model.export import load_checkpoint, load_exported
    from .render import Renderer
    p = Path(path)
    if p.is_dir():
        model, tok, renderer = load_exported(p)
        return model, renderer, model.encoder.cfg.n_mels
    model, cfg = load_checkpoint(p)
    return model, Renderer(_tokenizer(cfg.tokenizer)), cfg.encoder.n_mels


def evaluate(cfg: DictConfig) -> dict:
    raw = plain(cfg)
    model, renderer, n_mels = load_any(raw["model"])
    out = Path(raw["out"])
    out.mkdir(parents=True, exist_ok=True)
    return _score_and_report(model, renderer, list(raw["sources"]), out, raw["split"], n_mels,
                             raw["pad_to_30s"], raw["max_per_task"], None)


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="eval")
def main(cfg: DictConfig) -> None:
    evaluate(cfg)


if __name__ == "__main__":
    main()
