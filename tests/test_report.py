"""Report files: metrics.json round-trips, metrics.md rows and summary, loss_curve.png drawn."""
from __future__ import annotations

import json
import math

from qwen_audio_mt.report import format_table, read_curves, write_report
from qwen_audio_mt.scoring import summarize

PNG = b"\x89PNG\r\n\x1a\n"


def closed(domain, n, acc, n_labels, majority, loss=2.0, tok=0.5):
    chance = 1 / n_labels
    base = max(chance, majority)
    return {"domain": domain, "kind": "closed", "metric": "accuracy", "n": n, "accuracy": acc, "chance": chance,
            "majority": majority, "baseline": base, "margin_points": 100 * (acc - base), "loss": loss,
            "token_accuracy": tok}


def metrics() -> dict:
    tasks = {
        "sound_event": closed("sound", 40, 0.55, 12, 0.15),         # beats chance and baseline by >= 20
        "digit_recognition": closed("speech", 60, 0.35, 10, 0.30),  # beats chance by 25, baseline by 5
        "gender": closed("speech", 20, 0.6, 2, 0.55),               # beats neither
        "asr": {"domain": "speech", "kind": "open", "metric": "wer", "n": 30, "loss": 3.25, "token_accuracy": 0.4},
        "instrument": closed("music", 16, 0.125, 8, 0.25),
    }
    return {"split": "test", "tasks": tasks, "summary": summarize(tasks)}


def write_csv(path, steps=200):
    """A CSVLogger-shaped log: train rows and sparse val rows, cells empty where not logged."""
    lines = ["epoch,step,train/loss,train/lr,val/loss"]
    for s in range(steps):
        lines.append(f"0,{s},{5 * math.exp(-s / 60) + 0.1 * math.sin(s):.4f},0.001,")
        if s % 50 == 49:
            lines.append(f"0,{s},,,{5 * math.exp(-s / 60) + 0.3:.4f}")
    lines.append("0,200,nan,,")  # a NaN cell is skipped, not plotted
    path.write_text("\n".join(lines) + "\n")
    return path


def test_summary_counts():
    s = metrics()["summary"]
    assert (s["closed_tasks"], s["open_tasks"]) == (4, 1)
    assert (s["beat_chance_by_20"], s["beat_baseline_by_20"]) == (2, 1)
    assert s["mean_open_token_accuracy"] == 0.4


def test_report_files(tmp_path):
    m = metrics()
    csv = write_csv(tmp_path / "metrics.csv")
    paths = write_report(m, tmp_path / "run", csv)
    assert set(paths) == {"json", "md", "png"} and all(p.parent == tmp_path / "run" for p in paths.values())
    assert json.loads(paths["json"].read_text()) == m

    md = paths["md"].read_text()
    assert md == format_table(m)
    rows = [line for line in md.splitlines() if line.startswith("| ")]
    assert rows[0].split(" | ")[0] == "| task" and "margin (points)" in rows[0] and "token acc" in rows[0]
    assert set(rows[1][1:-1].replace(" ", "").split("|")) == {"---"}
    names = [r.split(" | ")[0][2:] for r in rows[2:]]
    assert names == ["instrument", "sound_event", "asr", "digit_recognition", "gender"]  # by domain, then name
    assert all(len(r.split(" | ")) == 10 for r in rows)
    digit = rows[2 + names.index("digit_recognition")]
    assert "35.0%" in digit and "10.0%" in digit and "+5.0" in digit
    assert "2 of 4 closed-label tasks beat chance by >= 20 points" in md

    png = paths["png"].read_bytes()
    assert png[:8] == PNG and len(png) > 5_000
    curves = read_curves(csv)
    assert len(curves["train/loss"][0]) == 200 and len(curves["val/loss"][0]) == 4


def test_no_training_log_still_writes_a_png(tmp_path):
    for csv in (None, tmp_path / "missing.csv"):
        paths = write_report(metrics(), tmp_path / str(csv is None), csv)
        png = paths["png"].read_bytes()
        assert png[:8] == PNG and len(png) > 2_000
        assert read_curves(csv) == {}
