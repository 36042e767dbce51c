"""ESC-50 -> sound_event, with the dataset's own 50 classes.

Layout (`--src` is the repository/archive root):

    meta/esc50.csv   columns filename, fold, target, category, esc10, src_file, take
    audio/{filename} 5-s wav clips

Task sound_event, field `label` = category. The closed label set is collected from the CSV (every
non-empty category, ordered by the dataset's class index `target`) and returned as
label_sets["sound_event"], replacing the registry's set for this build; a row with an empty
category is quarantined as bad_label. ESC-50 is meant for 5-fold cross-validation; here the folds
become fixed splits: fold 5 -> test, fold 4 -> valid, folds 1-3 -> train (a fold outside 1-5 is
quarantined as bad_fold). The esc10 column is ignored (filter the CSV for the ESC-10 subset).
Key: the file name without extension (`1-100032-A-0`).
"""
from __future__ import annotations

from pathlib import Path

from . import Plan
from .common import checksum, fold_jobs, group, is_utf8, read_rows

FORMAT = "esc50"
DESCRIPTION = "ESC-50 (meta/esc50.csv + audio/*.wav) -> sound_event (50 classes)"
SOURCE = "esc50"
TASK = "sound_event"
FOLDS = {"1": "train", "2": "train", "3": "train", "4": "valid", "5": "test"}


def class_set(rows: list[dict], name: str, index: str) -> list[str]:
    """The non-empty class names of the rows, ordered by their integer class index column."""
    order: dict[str, tuple] = {}
    for row in rows:
        label = (row.get(name) or "").strip()
        idx = (row.get(index) or "").strip()
        if label and is_utf8(label):  # a garbled name is left out: its rows fail on their own
            order.setdefault(label, (0, int(idx), label) if idx.isdigit() else (1, 0, label))
    return sorted(order, key=order.get)


def plan(src: Path) -> Plan:
    src = Path(src)
    meta = src / "meta" / "esc50.csv"
    rows = read_rows(meta, required=("filename", "fold", "category"))
    jobs = fold_jobs(rows, FOLDS, "filename", "category", lambda f, _: src / "audio" / f, TASK, SOURCE)
    source = {"format": FORMAT, "dataset": "ESC-50", "folds": {"train": [1, 2, 3], "valid": [4], "test": [5]},
              "files": checksum(meta)}
    return Plan(group(jobs), {TASK: class_set(rows, "category", "target")}, source)
