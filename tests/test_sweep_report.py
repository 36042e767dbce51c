"""`qwen-audio-mt sweep-report`: a fake multirun of three runs with hand-made metrics (five tasks over
speech, sound and music), one failed run with a train.log and one run without mixture.json:
the best run per task (ties, a missing value), the domain and overall means, sweep.md's bold
cells and failed runs, sweep.json, the PNGs, and the command's exit codes."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from qwen_audio_mt.errors import UserError
from qwen_audio_mt.metrics import margin_points
from qwen_audio_mt.sweep_report import Run, default_out, last_line, read_run, run_dirs, unique_names

PNG = b"\x89PNG\r\n\x1a\n"
# task: (domain, metric, higher_is_better, baseline, [value of run 0, 1, 2])
TASKS = {
    "asr": ("speech", "wer", False, 1.0, [0.30, 0.25, 0.25]),                   # runs 1 and 2 tie
    "gender": ("speech", "accuracy", True, 0.5, [0.8, 0.6, None]),              # run 2 has no value
    "sound_event": ("sound", "accuracy", True, 0.1, [0.5, 0.7, 0.4]),
    "caption_clotho": ("sound", "cider", True, 0.1, [0.3, 0.2, 0.1]),
    "instrument": (None, "accuracy", True, 0.125, [0.2, 0.3, 0.9]),             # domain from the registry
}
OVERRIDES = [["mixture=balanced", "hydra.job.num=0", "run_dir=/somewhere", "paths.output=/x"],
             ["mixture=balanced", "mixture.temperature=2"],
             ["mixture=balanced"],                                           # clashes with run 0
             ["mixture=natural"]]
NAMES = ["mixture=balanced (0)", "mixture=balanced mixture.temperature=2", "mixture=balanced (2)", "mixture=natural"]
LONG = "RuntimeError: CUDA out of memory. " + "x" * 300


def margin(task: str, run: int) -> float | None:
    _, metric, _, base, values = TASKS[task]
    return margin_points(metric, values[run], base)


def metrics(run: int) -> dict:
    tasks = {}
    for name, (domain, metric, higher, base, values) in TASKS.items():
        entry = {"kind": "open", "metric": metric, "n": 10, "value": values[run], "higher_is_better": higher,
                 "baseline": base, "baselines": {"most_frequent": base}}
        if domain:
            entry["domain"] = domain
        if run != 2:  # run 2's margins are computed by the report
            entry["margin_points"] = margin(name, run)
        tasks[name] = entry
    return {"split": "test", "tasks": tasks, "summary": {"aggregate": 0.0}}


MIXTURES = {
    0: {"target": {"asr": 0.25, "gender": 0.25, "sound_event": 0.25, "instrument": 0.25},
        "realised": {"asr": 0.4, "gender": 0.2, "sound_event": 0.3, "instrument": 0.1}, "samples": 640,
        "adaptive": None},
    1: {"target": {"asr": 0.5, "sound_event": 0.5}, "realised": {"asr": 0.5, "sound_event": 0.25, "instrument": 0.25},
        "samples": 1280, "adaptive": {"history": [{"step": 10, "weights": {"asr": 0.6, "sound_event": 0.4}},
                                                   {"step": 20, "weights": {"asr": 0.5, "sound_event": 0.5}}],
                                      "final": {"asr": 0.5, "sound_event": 0.5}}},
}


def make_multirun(root: Path) -> Path:
    mr = root / "multirun" / "2026-12-02" / "12-00-00"
    for i, overrides in enumerate(OVERRIDES):
        run = mr / str(i)
        (run / ".hydra").mkdir(parents=True)
        (run / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
        (run / ".hydra" / "config.yaml").write_text("seed: 0\n")
        (run / "train.log").write_text("starting\n")
        if i < 3:
            (run / "metrics.json").write_text(json.dumps(metrics(i)))
        if i in MIXTURES:
            (run / "mixture.json").write_text(json.dumps(MIXTURES[i]))
    (mr / "3" / "train.log").write_text(f"step 1\r{LONG}\n\n  \n")
    (mr / "multirun.yaml").write_text("hydra: {}\n")
    (mr / "not_a_run").mkdir()  # no metrics.json, .hydra/ or train.log: not a run
    return mr


def cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "qwen_audio_mt", "sweep-report", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, timeout=120)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """The command run once on the fake multirun, without --out: (its folder, the process)."""
    mr = make_multirun(tmp_path_factory.mktemp("sweep"))
    return mr, cli(mr)


def table_row(md: str, first: str) -> list[str]:
    [line] = [ln for ln in md.splitlines() if ln.startswith(f"| {first} |")]
    return [c.strip() for c in line.strip("|").split(" | ")]


def test_command_writes_the_files_into_the_multirun_folder(sweep):
    mr, done = sweep
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[:4] == [str(mr / f) for f in ("sweep.md", "sweep.json", "heatmap.png", "mixture.png")]
    assert "4 runs: 3 with metrics, 1 failed" in lines
    assert "best overall: mixture=balanced (2) (+45.6 points mean margin)" in lines
    assert "best sound: mixture=balanced mixture.temperature=2 (+35.0 points mean margin)" in lines
    for name in ("heatmap.png", "mixture.png"):
        data = (mr / name).read_bytes()
        assert data[:8] == PNG and len(data) > 5000


def test_sweep_json_values(sweep):
    mr, _ = sweep
    data = json.loads((mr / "sweep.json").read_text())
    assert [r["name"] for r in data["runs"]] == NAMES
    assert [r["status"] for r in data["runs"]] == ["ok", "ok", "ok", "failed"]
    tasks = data["tasks"]
    assert list(tasks) == ["instrument", "caption_clotho", "sound_event", "asr", "gender"]  # domain, then name
    assert tasks["instrument"]["domain"] == "music"
    assert {t: tasks[t]["best"] for t in tasks} == {
        "asr": [NAMES[1], NAMES[2]], "gender": [NAMES[0]], "sound_event": [NAMES[1]],
        "caption_clotho": [NAMES[0]], "instrument": [NAMES[2]]}
    assert tasks["gender"]["values"][NAMES[2]] is None and tasks["gender"]["margins"][NAMES[2]] is None
    assert tasks["asr"]["margins"][NAMES[2]] == pytest.approx(75.0, abs=1e-9)  # computed: none in metrics.json
    expect = {"speech": [(margin("asr", i), margin("gender", i)) for i in range(3)],
              "sound": [(margin("sound_event", i), margin("caption_clotho", i)) for i in range(3)],
              "music": [(margin("instrument", i),) for i in range(3)]}
    for domain, per_run in expect.items():
        for name, ms in zip(NAMES, per_run):
            ms = [m for m in ms if m is not None]
            assert abs(data["domains"][domain][name] - sum(ms) / len(ms)) < 1e-9
    assert abs(data["domains"]["speech"][NAMES[2]] - 75.0) < 1e-9  # gender has no margin in run 2
    assert [data["overall"][n] for n in NAMES[:3]] == pytest.approx([33.5, 34.5, 45.625], abs=1e-9)
    assert data["best_overall"] == NAMES[2]
    assert data["runs"][2]["aggregate"] == pytest.approx(45.625, abs=1e-9)


def test_sweep_json_failed_run_and_mixtures(sweep):
    mr, _ = sweep
    runs = json.loads((mr / "sweep.json").read_text())["runs"]
    failed = runs[3]
    assert failed["reason"].startswith("no metrics.json; train.log ends: RuntimeError: CUDA out of memory. xxx")
    assert len(failed["reason"].split("ends: ", 1)[1]) == 120 and failed["reason"].endswith("…")
    assert runs[0]["mixture"]["realised_domains"] == pytest.approx({"speech": 0.6, "sound": 0.3, "music": 0.1})
    assert runs[0]["mixture"]["samples"] == 640 and runs[0]["mixture"]["adaptive"] is None
    assert runs[1]["mixture"]["adaptive"] == {"final": {"asr": 0.5, "sound_event": 0.5}, "updates": 2}
    assert runs[2]["mixture"] is None and runs[2]["mixture_note"] == "no mixture.json"


def test_sweep_md_marks_the_best_and_lists_failures(sweep):
    mr, _ = sweep
    md = (mr / "sweep.md").read_text()
    head = table_row(md, "task")
    assert head == ["task", "domain", "metric", "baseline", *NAMES[:3]]  # the failed run is no column
    assert table_row(md, "asr") == ["asr", "speech", "wer", "100.0%", "30.0%", "**25.0%**", "**25.0%**"]
    assert table_row(md, "gender")[4:] == ["**80.0%**", "60.0%", "—"]
    assert table_row(md, "caption_clotho")[4:] == ["**0.300**", "0.200", "0.100"]
    assert table_row(md, "instrument")[1] == "music" and table_row(md, "instrument")[6] == "**90.0%**"
    assert table_row(md, "overall")[1:] == ["+33.5", "+34.5", "**+45.6**"]
    assert table_row(md, "sound")[1:] == ["+30.0", "**+35.0**", "+15.0"]
    failed = md.split("## Failed runs", 1)[1].split("##", 1)[0]
    assert f"`mixture=natural` ({mr / '3'}): no metrics.json; train.log ends: RuntimeError" in failed
    mixture = md.split("## Realised mixture", 1)[1]
    assert "| mixture=balanced (2) | unknown (no mixture.json) |" in mixture
    assert ("| mixture=balanced (0) | 640 | 60% (50%) | 30% (25%) | 10% (25%) | asr 40%, sound_event 30%, gender 20% |"
            in mixture)
    assert "1,280 (adaptive, 2 updates)" in mixture


def test_missing_dir_and_no_metrics_exit_2(tmp_path):
    missing = tmp_path / "nope"
    done = cli(missing, "--out", tmp_path / "out")
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip().splitlines() == [f"qwen-audio-mt: error: {missing}: no such folder"]
    mr = tmp_path / "mr"
    (mr / "0").mkdir(parents=True)
    (mr / "0" / "train.log").write_text("Killed\n")
    (mr / "1" / ".hydra").mkdir(parents=True)
    done = cli(mr)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("qwen-audio-mt: error: no run with metrics among 2 run folder(s)") and "Killed" in line
    assert not (mr / "sweep.md").exists()


def test_reading_runs(tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "metrics.json").write_text("{not json")
    run = read_run(bad)
    assert run.status == "failed" and run.reason.startswith("metrics.json does not parse: ")
    assert run.name == "bad" and run.mixture is None
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="not a run folder"):
        run_dirs(tmp_path / "empty")
    assert run_dirs(bad) == [bad] and default_out([bad]) == Path("sweep_report")
    assert default_out([tmp_path]) == tmp_path
    log = tmp_path / "train.log"
    log.write_text("a\nEpoch 0: 10%\rEpoch 0: 100%\n\n")
    assert last_line(log) == "Epoch 0: 100%"


def test_unique_names_across_two_multiruns():
    runs = [Run(Path("a/0"), "m=x"), Run(Path("b/0"), "m=x"), Run(Path("a/1"), "1"), Run(Path("b/1"), "1")]
    unique_names(runs)
    assert [r.name for r in runs] == ["m=x (a/0)", "m=x (b/0)", "1 (a/1)", "1 (b/1)"]
