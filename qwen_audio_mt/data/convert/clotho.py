"""Clotho (v1/v2) -> caption_clotho.

Layout (`--src` is the dataset folder):

    clotho_captions_{development,validation,evaluation}.csv   columns file_name, caption_1..caption_5
    {development,validation,evaluation}/{file_name}            the audio (wav), as the archives
                                                               unpack; clotho_audio_{split}/ is
                                                               accepted too

One sample per audio file, not one per caption: `caption` is caption_1 (the training target) and
`captions` all non-empty captions (the references CIDEr scores against); this stores each clip
once instead of five times. Split: development -> train, validation -> valid, evaluation -> test.
Key: the file name without extension, made tar-safe (Clotho names hold spaces and punctuation;
a name that needed changing gets a short hash of the original so keys stay unique).
"""
from __future__ import annotations

from pathlib import Path

from ..shards import Job
from . import ConvertError, Plan
from .common import checksum, file_key, group, make_raw_any, read_rows

FORMAT = "clotho"
DESCRIPTION = "Clotho (clotho_captions_{split}.csv + {split}/*.wav) -> caption_clotho"
SOURCE = "clotho"
TASK = "caption_clotho"
SPLITS = {"development": "train", "validation": "valid", "evaluation": "test"}


def _captions(row: dict) -> list[str]:
    names = sorted((k for k in row if k and k.startswith("caption_") and k[8:].isdigit()), key=lambda k: int(k[8:]))
    return [row[k].strip() for k in names if row[k] and row[k].strip()]


def plan(src: Path) -> Plan:
    src = Path(src)
    csvs = [(src / f"clotho_captions_{n}.csv", n) for n in SPLITS if (src / f"clotho_captions_{n}.csv").is_file()]
    if not csvs:
        raise ConvertError(f"{src}: missing clotho_captions_development.csv (and the validation/evaluation CSVs)")
    jobs = []
    for csv_path, name in csvs:
        split = SPLITS[name]
        for row in read_rows(csv_path, required=("file_name", "caption_1")):
            fname = row["file_name"] or ""
            captions = _captions(row)
            labels = {"caption": (row["caption_1"] or "").strip(), "captions": captions}
            key = file_key(fname)
            paths = (str(src / name / fname), str(src / f"clotho_audio_{name}" / fname))
            jobs.append((split, TASK, Job(key, SOURCE, make_raw_any, (paths, key, TASK, split, labels, SOURCE))))
    source = {"format": FORMAT, "dataset": "Clotho", "files": checksum(*(p for p, _ in csvs))}
    return Plan(group(jobs), {}, source)
