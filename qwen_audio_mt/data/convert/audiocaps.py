"""AudioCaps -> caption_audiocaps.

Layout (`--src` is the dataset folder; the CSVs may also sit in its `dataset/` subfolder, as in
the AudioCaps repository):

    train.csv, val.csv, test.csv   columns audiocap_id, youtube_id, start_time, caption
    audio/{split}/{youtube_id}.wav the 10-s clips cut at start_time by your downloader
                                   ({split} = train | val | test); audio/{youtube_id}.wav is
                                   accepted too

AudioCaps distributes no audio: fetch the clips with a YouTube downloader and save them as
{youtube_id}.wav (only that name is looked up; a clip that could not be fetched is quarantined
as missing_file). One sample per clip: `caption` is the clip's first caption (lowest
audiocap_id) and `captions` all of them (val/test have five, the references CIDEr needs), so a
clip is stored once. Split: train -> train, val -> valid, test -> test. Key: the youtube_id.
"""
from __future__ import annotations

from pathlib import Path

from ..shards import Job
from . import ConvertError, Plan
from .common import checksum, file_key, group, make_raw_any, read_rows

FORMAT = "audiocaps"
DESCRIPTION = "AudioCaps ({train,val,test}.csv + audio/{split}/{youtube_id}.wav) -> caption_audiocaps"
SOURCE = "audiocaps"
TASK = "caption_audiocaps"
SPLITS = {"train": "train", "val": "valid", "test": "test"}


def _order(row: dict):
    cid = (row.get("audiocap_id") or "").strip()
    return (0, int(cid), "") if cid.isdigit() else (1, 0, cid)


def _clips(rows: list[dict]) -> dict[str, list[dict]]:
    """youtube_id -> its rows, in first-seen order, each clip's rows by audiocap_id."""
    clips: dict[str, list[dict]] = {}
    for row in rows:
        clips.setdefault((row["youtube_id"] or "").strip(), []).append(row)
    return {yid: sorted(rs, key=_order) for yid, rs in clips.items()}


def plan(src: Path) -> Plan:
    src = Path(src)
    meta = src if any((src / f"{n}.csv").is_file() for n in SPLITS) else src / "dataset"
    csvs = [(meta / f"{n}.csv", n) for n in SPLITS if (meta / f"{n}.csv").is_file()]
    if not csvs:
        raise ConvertError(f"{src}: missing train.csv, val.csv and test.csv (AudioCaps metadata)")
    jobs = []
    for csv_path, name in csvs:
        split = SPLITS[name]
        for yid, rows in _clips(read_rows(csv_path, required=("youtube_id", "caption"))).items():
            captions = [(r["caption"] or "").strip() for r in rows]
            labels = {"caption": captions[0], "captions": captions}
            key = file_key(yid)
            paths = (str(src / "audio" / name / f"{yid}.wav"), str(src / "audio" / f"{yid}.wav"))
            jobs.append((split, TASK, Job(key, SOURCE, make_raw_any, (paths, key, TASK, split, labels, SOURCE))))
    source = {"format": FORMAT, "dataset": "AudioCaps", "files": checksum(*(p for p, _ in csvs))}
    return Plan(group(jobs), {}, source)
