"""Report files: metrics.json round-trips, metrics.md rows (metric, value, baseline, margin, n)
and summary, metrics.png and loss_curve.png drawn."""
from __future__ import annotations

import json
import math

from qwen_audio_mt.evaluation import summarize
from qwen_audio_mt.metrics import margin_points
from qwen_audio_mt.report import format_table, read_curves, write_report

PNG = b"\x89PNG\r\n\x1a\n"


def closed(domain, n, acc, n_labels, majority, generated=0.1):
    chance = 1 / n_labels
    base = max(chance, majority)
    return {"domain": domain, "kind": "closed", "metric": "accuracy", "n": n, "value": acc, "higher_is_better": True,
            "baseline": base, "baselines": {"chance": chance, "majority": majority},
            "margin_points": margin_points("accuracy", acc, base), "generated": generated}


def opened(domain, metric, n, value, baseline, higher=True):
    return {"domain": domain, "kind": "open", "metric": metric, "n": n, "value": value, "higher_is_better": higher,
            "baseline": baseline, "baselines": {"most_frequent": baseline},
            "margin_points": margin_points(metric, value, baseline)}


def metrics() -> dict:
    tasks = {
        "sound_event": closed("sound", 40, 0.55, 12, 0.15),         # beats chance and baseline by >= 20
        "digit_recognition": closed("speech", 60, 0.35, 10, 0.30),  # beats chance by 25, baseline by 5
        "gender": closed("speech", 20, 0.6, 2, 0.55),
        "asr": opened("speech", "wer", 30, 0.25, 1.0, higher=False),
        "caption_clotho": opened("sound", "cider", 30, 0.512, 0.2),
        "word_timestamps": opened("speech", "timestamp_shift", 30, 80.0, 200.0, higher=False),
        "speech_translation": opened("speech", "bleu", 30, 12.34, 3.0),
        "instrument": closed("music", 16, 0.125, 8, 0.25),
        "melody": opened("music", "wer", 0, None, None, higher=False),
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
    assert (s["tasks"], s["scored"], s["closed_tasks"], s["open_tasks"]) == (9, 8, 4, 4)
    assert s["beat_chance_by_20"] == 2
    assert s["beat_baseline_by_20"] == 1  # digits: 25 points over chance, 5 over the majority label
    # margins: +40, +5, +5, +75 (wer), +31.2 (cider), +60 (shift, relative), +9.34 (bleu), -12.5
    assert s["beat_baseline"] == 7
    assert s["aggregate"] == (40 + 5 + 5 + 75 + 31.2 + 60 + 9.34 - 12.5) / 8


def test_report_files(tmp_path):
    m = metrics()
    csv = write_csv(tmp_path / "metrics.csv")
    paths = write_report(m, tmp_path / "run", csv)
    assert set(paths) == {"json", "md", "chart", "png"} and all(p.parent == tmp_path / "run" for p in paths.values())
    assert json.loads(paths["json"].read_text()) == m

    md = paths["md"].read_text()
    assert md == format_table(m)
    rows = [line for line in md.splitlines() if line.startswith("| ")]
    assert rows[0] == "| task | domain | metric | value | baseline | margin (points) | n | generated |"
    assert set(rows[1][1:-1].replace(" ", "").split("|")) == {"---"}
    names = [r.split(" | ")[0][2:] for r in rows[2:]]
    assert names == ["instrument", "melody", "caption_clotho", "sound_event", "asr", "digit_recognition", "gender",
                     "speech_translation", "word_timestamps"]  # by domain, then name
    cells = {r.split(" | ")[0][2:]: r[2:-2].split(" | ") for r in rows[2:]}
    assert cells["digit_recognition"][3:] == ["35.0%", "30.0%", "+5.0", "60", "10.0%"]
    assert cells["asr"][2:] == ["wer", "25.0%", "100.0%", "+75.0", "30", ""]
    assert cells["caption_clotho"][3:5] == ["0.512", "0.200"] and cells["speech_translation"][3:5] == ["12.3", "3.0"]
    assert cells["word_timestamps"][3:6] == ["80 ms", "200 ms", "+60.0"]
    assert cells["melody"][3:7] == ["—", "—", "—", "0"]
    assert "7 of 8 scored tasks beat their baseline; mean margin +26.6 points" in md
    assert ("1 of 4 closed-label tasks beat the larger of chance and majority by >= 20 points, 2 of 4 beat chance "
            "by >= 20 points; mean closed-label accuracy 40.6%") in md
    assert "1 task without a value" in md
    old = {**m, "summary": {k: v for k, v in m["summary"].items() if k != "beat_baseline_by_20"}}
    assert "2 of 4 closed-label tasks beat chance by >= 20 points; mean" in format_table(old)  # an older metrics.json

    for kind in ("chart", "png"):
        png = paths[kind].read_bytes()
        assert png[:8] == PNG and len(png) > 5_000
    curves = read_curves(csv)
    assert len(curves["train/loss"][0]) == 200 and len(curves["val/loss"][0]) == 4


def test_no_training_log_still_writes_a_png(tmp_path):
    for csv in (None, tmp_path / "missing.csv"):
        paths = write_report(metrics(), tmp_path / str(csv is None), csv)
        png = paths["png"].read_bytes()
        assert png[:8] == PNG and len(png) > 2_000
        assert read_curves(csv) == {}
