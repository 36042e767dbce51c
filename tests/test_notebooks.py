"""The notebooks: stored without outputs, no logic in their cells, every one runs on tiny inputs
(a kernel each, through `qwen_audio_mt.notebooks.execute`) and says what to run first when its
inputs are missing; and the views they call."""
from __future__ import annotations

import csv
import json
import os
import re
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="the notebook tests need nbformat, nbclient and ipykernel")
from test_sweep_report import make_multirun

from qwen_audio_mt import notebook_views as nv
from qwen_audio_mt import notebooks, run_views

NOTEBOOKS = sorted(notebooks.NOTEBOOK_DIR.glob("*.ipynb"))
NAMES = ["01_tags_and_tokenizer", "02_shards_and_mixture", "03_training_curves", "04_inference", "05_sweep"]
# logic a notebook must leave to the package: definitions, and statements that branch or loop
LOGIC = re.compile(r"\bdef |\bclass |\blambda\b|^\s*(for|while|if|try|with)\b", re.M)
IMPORTS = re.compile(r"^\s*(?:from|import) ([A-Za-z_]+)", re.M)  # top-level package of each import
ENV = ("QWEN_AUDIO_MT_NB_SHARDS", "QWEN_AUDIO_MT_NB_RUN", "QWEN_AUDIO_MT_NB_MODEL", "QWEN_AUDIO_MT_NB_TINY",
       "QWEN_AUDIO_MT_NB_BASE", "QWEN_AUDIO_MT_NB_SWEEP")


def code_cells(path: Path) -> list:
    return [c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]


def test_the_four_notebooks_are_there():
    assert [p.stem for p in NOTEBOOKS] == NAMES


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_stored_without_outputs_and_without_logic(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    first = nb.cells[0]
    assert first.cell_type == "code" and "parameters" in first.metadata.get("tags", [])
    assert "os.environ.get(" in first.source
    for cell in code_cells(path):
        assert cell.outputs == [] and cell.execution_count is None, cell.source
        assert not LOGIC.search(cell.source), cell.source
        assert all(m in ("os", "qwen_audio_mt") for m in IMPORTS.findall(cell.source)), cell.source


def write_run(folder: Path) -> Path:
    """A run folder as training leaves it, as far as the notebooks read it: logs/metrics.csv in
    CSVLogger's shape (each row fills only the columns it logs)."""
    cols = ["epoch", "mix/asr", "mix/gender", "step", "train/loss", "train/loss_asr", "train/loss_gender", "val/loss"]
    rows = [{"epoch": 0, "step": s, "train/loss": 5 - s / 10, "train/loss_asr": 6 - s / 10,
             "train/loss_gender": 3 - s / 20, "mix/asr": 0.4, "mix/gender": 0.6} for s in range(9, 40, 10)]
    rows.append({"epoch": 0, "step": 39, "val/loss": 2.5})
    (folder / "logs").mkdir(parents=True)
    with open(folder / "logs" / "metrics.csv", "w", newline="") as f:
        w = csv.DictWriter(f, cols)
        w.writeheader()
        w.writerows(rows)
    return folder


def test_every_notebook_runs_in_a_kernel_on_tiny_inputs(small_corpus, tiny_export, tmp_path):
    before = {p: p.read_bytes() for p in NOTEBOOKS}
    env = {"QWEN_AUDIO_MT_NB_SHARDS": str(small_corpus / "embedded"), "QWEN_AUDIO_MT_NB_MODEL": str(tiny_export),
           "QWEN_AUDIO_MT_NB_RUN": str(write_run(tmp_path / "run")), "QWEN_AUDIO_MT_NB_TINY": "1",
           "QWEN_AUDIO_MT_NB_BASE": "whisper", "QWEN_AUDIO_MT_NB_SWEEP": str(make_multirun(tmp_path / "multirun"))}
    results = notebooks.execute(NOTEBOOKS, env, timeout=120, out_dir=tmp_path / "out")
    assert [r.error for r in results] == [None] * len(NOTEBOOKS), "\n".join(map(notebooks.line, results))
    assert {p: p.read_bytes() for p in NOTEBOOKS} == before  # executed copies never go back
    outputs = {r.name: [o for c in code_cells(r.out) for o in c.outputs] for r in results}
    assert all(o.output_type != "error" for outs in outputs.values() for o in outs)
    kinds = {name: {k for o in outs for k in o.get("data", {})} for name, outs in outputs.items()}
    assert "text/html" in kinds["01_tags_and_tokenizer"]
    assert {"text/html", "image/png"} <= kinds["02_shards_and_mixture"]
    assert "image/png" in kinds["03_training_curves"] and "text/html" in kinds["04_inference"]
    assert {"text/markdown", "image/png"} <= kinds["05_sweep"]
    sweep_md = " ".join(o.get("data", {}).get("text/markdown", "") for o in outputs["05_sweep"])
    assert "**" in sweep_md and "failed" in sweep_md  # the best runs marked, the failed one listed
    text = {name: " ".join(o.get("data", {}).get("text/plain", "") + o.get("text", "") for o in outs)
            for name, outs in outputs.items()}
    assert "[[[AUDIO:modality]]] x" in text["01_tags_and_tokenizer"]
    assert "train/loss_gender" not in text["03_training_curves"] and "gender" in text["03_training_curves"]
    assert "make pretrain" not in " ".join(text.values())  # every input was there


def run_cells(path: Path) -> None:
    """A notebook's code in this process, magics dropped (what the kernel runs, minus display)."""
    scope: dict = {}
    for cell in code_cells(path):
        exec("\n".join(line for line in cell.source.splitlines() if not line.startswith("%")), scope)


def test_missing_inputs_print_what_to_run_first_and_do_not_raise(tmp_path, monkeypatch, capsys):
    for name in ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("QWEN_AUDIO_MT_DATA", str(tmp_path / "no_data"))
    (tmp_path / "notebooks").mkdir()
    monkeypatch.chdir(tmp_path / "notebooks")  # ../shards, ../outputs: nothing there
    for path in NOTEBOOKS:
        run_cells(path)
    out = capsys.readouterr().out
    assert "make shards" in out and "make pretrain" in out and "real data not found" in out
    assert "no export found: run `make pretrain` first" in out
    assert "no sweep under ../outputs/multirun: run `make sweep` first" in out
    assert "no run folder: target probabilities only" not in out  # no shards either: nothing to plot


def test_mixture_target_only_without_a_run(small_corpus, capsys):
    shares = run_views.mixture_shares(small_corpus / "embedded", None)
    assert shares["realised"] == {} and abs(sum(shares["target"].values()) - 1) < 1e-9
    assert "target probabilities only" in capsys.readouterr().out
    assert run_views.plot_mixture(shares) is not None


def test_mixture_from_mixture_json_else_from_the_log(small_corpus, tmp_path, capsys):
    run = write_run(tmp_path / "run")
    shares = run_views.mixture_shares(small_corpus / "embedded", run)
    assert shares["realised"] == {"asr": 0.4, "gender": 0.6} and "metrics.csv" in shares["source"]
    (run / "mixture.json").write_text(json.dumps({"target": {"asr": 0.5, "gender": 0.5}, "realised": {"asr": 0.3}}))
    shares = run_views.mixture_shares(tmp_path / "no_shards", run)  # mixture.json needs no shards
    assert shares["target"] == {"asr": 0.5, "gender": 0.5} and shares["realised"] == {"asr": 0.3}
    (run / "mixture.json").write_text("{not json")
    shares = run_views.mixture_shares(small_corpus / "embedded", run)  # said, then computed as before
    assert shares["realised"] == {"asr": 0.4, "gender": 0.6}
    assert "mixture.json: unreadable" in capsys.readouterr().out


def test_run_mixture_settings_come_from_the_hydra_config(small_corpus, tmp_path):
    run = write_run(tmp_path / "run")
    (run / ".hydra").mkdir()
    (run / ".hydra" / "config.yaml").write_text(
        "mixture:\n  sources:\n  - path: ${paths.shards}/embedded\n    tasks: [asr, gender]\n"
        "  temperature: 1.0\n  task_weights: {gender: 0.0}\n")
    shares = run_views.mixture_shares(small_corpus / "embedded", run)
    assert shares["target"] == {"asr": 1.0, "gender": 0.0}


def test_task_curves_skip_the_rows_that_do_not_log_them(tmp_path):
    log = write_run(tmp_path / "run") / "logs" / "metrics.csv"
    curves = run_views.columns(log, "train/loss_")
    assert sorted(curves) == ["train/loss_asr", "train/loss_gender"] and curves["train/loss_asr"][0] == [9, 19, 29, 39]
    assert [r[0] for r in run_views.loss_table(log).rows] == ["gender", "asr"]  # lowest last loss (1.05, 2.1) first
    assert run_views.plot_task_losses(log, ["asr"]) is not None and run_views.plot_overall_loss(log) is not None


def test_newest_run_and_export_by_write_time(tmp_path, tiny_export):
    old, new = write_run(tmp_path / "train" / "b_old"), write_run(tmp_path / "train" / "a_new")
    os.utime(old / "logs" / "metrics.csv", (1, 1))
    assert nv.newest_run(tmp_path / "train") == str(new)
    assert nv.newest_export(tmp_path / "train") is None
    (new / "export").symlink_to(tiny_export)
    assert nv.newest_export(tmp_path / "train") == str(new / "export")
    assert nv.newest_run(tmp_path / "nothing") is None


def test_token_rows_fold_the_audio_span(renderer):
    sample = {"task": "asr", "audio_lang": "en", "duration": 1.0, "text": "Hello there."}
    rows = nv.token_rows(renderer, sample)
    ids, mask = renderer.render(sample)
    n = ids.count(renderer.tok.role_id("audio_placeholder"))
    assert rows[1][:2] == (f"1-{n}", f"[[[AUDIO:modality]]] x {n}") and len(rows) == len(ids) - n + 1
    assert [r[3] for r in rows][-4:] == mask[-4:] and rows[-1][1] == "<|endoftext|>"


def test_plot_words_draws_parsed_words(tmp_path):
    import numpy as np
    import soundfile as sf

    from qwen_audio_mt.infer import Answer
    sf.write(tmp_path / "a.wav", np.zeros(16000, dtype="float32"), 16000)
    words = [{"word": "hello", "start": 0.1, "end": 0.4}, {"word": "there", "start": 0.5, "end": 0.9}]
    fig = nv.plot_words([Answer(str(tmp_path / "a.wav"), "word_timestamps", parsed={"words": words})])
    assert [t.get_text() for t in fig.axes[0].texts] == ["hello", "there"]
    assert nv.plot_words([Answer("x.wav", "asr", error="x.wav: no such file")]) is None


def test_the_kernel_is_this_interpreter():
    import sys
    assert notebooks.kernel_manager().kernel_spec.argv[0] == sys.executable


def test_find_and_out_folder_checks(tmp_path):
    assert notebooks.find(["03"]) == [notebooks.NOTEBOOK_DIR / "03_training_curves.ipynb"]
    assert notebooks.find(["04_inference.ipynb"])[0].stem == "04_inference"
    with pytest.raises(notebooks.NotebookError, match="no notebook 'nope'"):
        notebooks.find(["nope"])
    with pytest.raises(notebooks.NotebookError, match="own folder"):
        notebooks.execute(NOTEBOOKS[:1], out_dir=notebooks.NOTEBOOK_DIR)
