"""UrbanSound8K -> sound_event, with the dataset's own 10 classes.

Layout (`--src` is the UrbanSound8K folder):

    metadata/UrbanSound8K.csv   columns slice_file_name, fsID, start, end, salience, fold, classID, class
    audio/fold{fold}/{slice_file_name}

Task sound_event, field `label` = class. The closed label set is the classes found in the CSV,
ordered by classID, returned as label_sets["sound_event"]. UrbanSound8K is meant for 10-fold
cross-validation; here the folds become fixed splits: fold 10 -> test, fold 9 -> valid,
folds 1-8 -> train (a fold outside 1-10 is quarantined as bad_fold). Slices shorter than
ingest's minimum (0.1 s) are quarantined as too_short. Key: the slice file name without
extension (`100032-3-0-0`).
"""
from __future__ import annotations

from pathlib import Path

from . import Plan
from .common import checksum, fold_jobs, group, read_rows
from .esc50 import class_set

FORMAT = "urbansound"
DESCRIPTION = "UrbanSound8K (metadata/UrbanSound8K.csv + audio/fold*/) -> sound_event (10 classes)"
SOURCE = "urbansound8k"
TASK = "sound_event"
FOLDS = {**{str(n): "train" for n in range(1, 9)}, "9": "valid", "10": "test"}


def plan(src: Path) -> Plan:
    src = Path(src)
    meta = src / "metadata" / "UrbanSound8K.csv"
    rows = read_rows(meta, required=("slice_file_name", "fold", "class"))
    jobs = fold_jobs(rows, FOLDS, "slice_file_name", "class", lambda f, fold: src / "audio" / f"fold{fold}" / f, TASK, SOURCE)
    source = {"format": FORMAT, "dataset": "UrbanSound8K",
              "folds": {"train": list(range(1, 9)), "valid": [9], "test": [10]}, "files": checksum(meta)}
    return Plan(group(jobs), {TASK: class_set(rows, "class", "classID")}, source)
