"""Sweeps: README's `make sweep` commands run as written (real multiruns through Hydra's basic
sweeper, then the report), the mixture presets, a failed point recorded while the sweep goes
on, the 2-trial Optuna search, and the SLURM launcher composed and validated (not run)."""
from __future__ import annotations

import json
import math
import os
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from test_readme import commands
from test_train import QUIET, SHRINK

from qwen_audio_mt.data.mixture import MixtureConfig, SourceConfig, components, probabilities
from qwen_audio_mt.config import from_dict, plain
from qwen_audio_mt.errors import sweep_job
from qwen_audio_mt.data.mixture import MixtureError
from qwen_audio_mt.paths import REPO_ROOT
from qwen_audio_mt.tasks import CLOSED_KINDS, load_tasks
from qwen_audio_mt.train import CONF_DIR

# a sweep point in seconds: 2 steps of the shrunken model, 1 clip per task scored, answers cut
# at 8 tokens (a random model never stops on its own)
TINY = [*SHRINK, *QUIET, "data.loader.limits.max_batch_size=8", "data.loader.limits.pool=32",
        "data.loader.num_workers=0", "trainer.max_steps=2", "trainer.val_check_interval=2",
        "callbacks.validation_metrics.per_task=1", "callbacks.validation_metrics.max_new_tokens=8",
        "eval.max_per_task=1", "eval.max_new_tokens=8", "export=false"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}


def compose_mixture(name: str) -> MixtureConfig:
    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=[f"mixture={name}", "paths.root=/r"])
    return from_dict(MixtureConfig, plain(cfg.mixture), "mixture")


def test_presets_are_derived_from_the_registry(small_corpus):
    reg = load_tasks()
    src = (SourceConfig(str(small_corpus / "embedded")),)
    comps = components(MixtureConfig(src), "train")
    p = {name: dict(zip([c.task for c in comps], probabilities(comps, MixtureConfig(src, **{
        k: v for k, v in vars(compose_mixture(name)).items() if k != "sources"}))))
        for name in ("embedded", "natural", "balanced", "speech_heavy", "sound_heavy", "music_heavy", "closed_heavy")}
    assert np.allclose(list(p["balanced"].values()), 1 / len(comps))
    counts = {c.task: c.samples for c in comps}
    assert p["natural"]["asr"] == pytest.approx(counts["asr"] / sum(counts.values()))
    for domain in ("speech", "sound", "music"):   # x3 for each of the domain's tasks, relative to embedded
        ratio = {t: p[f"{domain}_heavy"][t] / p["embedded"][t] for t in comps_tasks(comps)}
        heavy = {t for t in ratio if reg.get(t).domain == domain}
        assert min(ratio[t] for t in heavy) == pytest.approx(3 * max(ratio[t] for t in ratio if t not in heavy))
    closed = {t for t in comps_tasks(comps) if reg.get(t).target.kind in CLOSED_KINDS}
    ratio = {t: p["closed_heavy"][t] / p["embedded"][t] for t in comps_tasks(comps)}
    assert len(closed) == 18 and all(ratio[t] == pytest.approx(3 * ratio["asr"]) for t in closed)
    with pytest.raises(MixtureError, match="unknown speach"):
        probabilities(comps, MixtureConfig(src, domain_weights={"speach": 2.0}))


def comps_tasks(comps) -> list[str]:
    return [c.task for c in comps]


def test_the_default_sweep_and_the_tiny_default():
    """make sweep: 3 mixtures, the adaptive one among them; the tiny default is closed_heavy."""
    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=["sweep=mixtures"], return_hydra_config=True)
        default = compose("train")
    assert cfg.hydra.sweeper.params.mixture.split(",") == ["closed_heavy", "balanced", "adaptive"]
    assert compose_mixture("adaptive").adaptive is not None
    assert dict(default.mixture.kind_weights) == {"closed": 3.0} and default.mixture.adaptive is None
    dry = subprocess.run(["make", "-n", "sweep"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert "qwen_audio_mt.train -m sweep=mixtures" in dry.stdout and "sweep-report" in dry.stdout


@pytest.mark.parametrize("cmd", commands("make sweep"))
def test_make_sweep_runs_as_readme_writes_it(cmd, small_corpus, tmp_path):
    """Each point trains, is scored on the test split and keeps its mixture; the report at the
    end lists every run with every task. OVERRIDES shrinks each point to seconds."""
    out = tmp_path / "sweep"
    env = {**ENV, "SWEEP_DIR": str(out), "OVERRIDES": " ".join([f"paths.shards={small_corpus}", *TINY])}
    res = subprocess.run(shlex.split(cmd), cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    runs = sorted(p for p in out.iterdir() if p.name.isdigit())
    assert len(runs) == 3
    report = json.loads((out / "sweep.json").read_text())
    assert [r["status"] for r in report["runs"]] == ["ok"] * 3
    assert len(report["tasks"]) == len(load_tasks())
    names = [r["name"] for r in report["runs"]]
    expect = ([f"mixture.temperature={t}" for t in ("1.0", "2.0", "5.0")] if "temperature" in cmd
              else [f"mixture={m}" for m in ("closed_heavy", "balanced", "adaptive")])
    assert names == expect  # what each point changed, the shared overrides left out
    for run in runs:
        mixture = json.loads((run / "mixture.json").read_text())
        assert sum(mixture["realised"].values()) == pytest.approx(1.0) and mixture["samples"] > 0
        assert set(json.loads((run / "metrics.json").read_text())["tasks"]) == set(load_tasks().names)
    for png in ("heatmap.png", "mixture.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
    assert f"{out}/sweep.md" in res.stdout and "best overall:" in res.stdout
    (report_cmd,) = commands("qwen-audio-mt sweep-report")  # README's, on this multirun folder
    (out / "sweep.json").unlink()
    again = subprocess.run(shlex.split(report_cmd.replace("outputs/multirun/DATE", str(out))), cwd=tmp_path,
                           env=ENV, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert json.loads((out / "sweep.json").read_text())["runs"] == report["runs"]


def test_a_failed_point_is_recorded_and_the_sweep_goes_on(tmp_path, capsys):
    def bad_mixture():
        raise MixtureError("mixture.temperature=-1.0: must be > 0 (1 proportional, larger flatter)")

    def bug():
        raise RuntimeError("boom\nsecond line")

    assert math.isnan(sweep_job("qwen_audio_mt.train", bad_mixture, tmp_path / "0"))
    assert math.isnan(sweep_job("qwen_audio_mt.train", bug, tmp_path / "1"))
    assert sweep_job("qwen_audio_mt.train", lambda: 1.5, tmp_path / "2") == 1.5
    assert (tmp_path / "0" / "error.txt").read_text() == "mixture.temperature=-1.0: must be > 0 (1 proportional, larger flatter)\n"
    assert (tmp_path / "1" / "error.txt").read_text().startswith("RuntimeError: boom")
    err = capsys.readouterr().err
    assert "Traceback" in err and "qwen_audio_mt.train: error: mixture.temperature=-1.0" in err  # a bug shows its traceback
    from qwen_audio_mt.sweep_report import read_run
    run = read_run(tmp_path / "0")
    assert run.status == "failed" and run.reason == "failed: mixture.temperature=-1.0: must be > 0 (1 proportional, larger flatter)"


def test_optuna_search_two_trials(small_corpus, tmp_path):
    """README's Optuna command with 2 trials: each trial trains and returns val/aggregate, and
    the study's best is written."""
    cmd = next(c for c in commands("python -m qwen_audio_mt.train -m") if "optuna" in c)
    argv = [*shlex.split(cmd), f"paths.shards={small_corpus}", *TINY, "evaluate=false",
            "hydra.sweeper.n_trials=2", f"hydra.sweep.dir={tmp_path}"]
    res = subprocess.run(argv, cwd=REPO_ROOT, env=ENV, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    best = yaml.safe_load((tmp_path / "optimization_results.yaml").read_text())
    assert math.isfinite(best["best_value"])
    assert set(best["best_params"]) == {"mixture.temperature", "mixture.domain_weights.speech",
                                        "mixture.domain_weights.sound", "mixture.domain_weights.music"}
    trials = [yaml.safe_load((tmp_path / str(i) / ".hydra" / "overrides.yaml").read_text()) for i in (0, 1)]
    assert trials[0] != trials[1]  # two points of the search space
    for i in (0, 1):
        assert json.loads((tmp_path / str(i) / "mixture.json").read_text())["samples"] > 0


def test_slurm_launcher_composes_and_validates(tmp_path, monkeypatch):
    """Composed with the DDP trainer, instantiated, and its sbatch script built by submitit
    (without submitting): one task per GPU on every node. submitit only looks for an `srun`
    on PATH before it builds the script; the stand-in is never called."""
    import submitit
    fake = tmp_path / "bin" / "srun"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}:{os.environ['PATH']}")
    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=["hydra/launcher=slurm", "trainer=ddp", "trainer.devices=8",
                                          "trainer.num_nodes=2", "hydra.launcher.partition=gpu",
                                          f"hydra.sweep.dir={tmp_path}"], return_hydra_config=True)
    launcher = instantiate(cfg.hydra.launcher)
    assert type(launcher).__name__ == "SlurmLauncher"
    params = dict(launcher.params)
    assert (params["nodes"], params["tasks_per_node"], params["gpus_per_node"]) == (2, 8, 8)
    executor = submitit.AutoExecutor(folder=tmp_path / "submitit", cluster="slurm",
                                     slurm_max_num_timeout=params.pop("max_num_timeout"))
    base = {"timeout_min", "cpus_per_task", "gpus_per_node", "tasks_per_node", "mem_gb", "nodes", "name",
            "stderr_to_stdout"}
    params.pop("submitit_folder")
    executor.update_parameters(**{k if k in base else f"slurm_{k}": v for k, v in params.items()})
    script = executor._executor._make_submission_file_text("python -m qwen_audio_mt.train", "uid")
    for line in ("#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=8", "#SBATCH --gpus-per-node=8",
                 "#SBATCH --partition=gpu", "#SBATCH --time=1440"):
        assert line in script, script
