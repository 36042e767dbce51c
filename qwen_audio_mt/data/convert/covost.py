"""CoVoST 2 -> speech_translation.

Layout (`--src` is the folder holding the split TSVs, as written by CoVoST's
get_covost_splits.py, or a folder whose direct subfolders hold them):

    covost_v2.{src}_{tgt}.{train,dev,test}.tsv   tab-separated, columns path, sentence,
                                                 translation, client_id
    clips/{path}                                 the Common Voice mp3 clips of language {src},
                                                 next to the TSVs, else at {--src}/clips

The unsplit release file covost_v2.{src}_{tgt}.tsv is not read: run get_covost_splits.py first.
Task speech_translation: audio_lang {src}, text_lang {tgt} (Common Voice locale codes mapped as
in commonvoice.LOCALES; a pair outside the vocabulary is quarantined item by item as
bad_language), labels {translation, text: sentence}. Split: train -> train, dev -> valid,
test -> test. Key: `{clip stem}-{src}_{tgt}` (a clip is translated into several languages).
"""
from __future__ import annotations

import re
from pathlib import Path

from ..shards import Job
from . import ConvertError, Plan
from .common import checksum, file_key, group, make_raw_any, read_rows
from .commonvoice import lang_code

FORMAT = "covost"
DESCRIPTION = "CoVoST 2 split TSVs (covost_v2.{src}_{tgt}.{split}.tsv) + Common Voice clips/ -> speech_translation"
SOURCE = "covost"
TASK = "speech_translation"
SPLITS = {"train": "train", "dev": "valid", "test": "test"}
NAME = re.compile(r"^covost_v2\.([A-Za-z-]+)_([A-Za-z-]+)\.(train|dev|test)\.tsv$")
COLUMNS = ("path", "sentence", "translation")


def _tsvs(src: Path) -> list[Path]:
    for folder in (src, *sorted(p for p in src.iterdir() if p.is_dir())):
        found = sorted(p for p in folder.glob("covost_v2.*.tsv") if NAME.match(p.name))
        if found:
            return found
    raise ConvertError(f"{src}: no covost_v2.{{src}}_{{tgt}}.{{train,dev,test}}.tsv file "
                       "(run CoVoST's get_covost_splits.py on the release TSV)")


def _clips(tsv: Path, src: Path) -> Path:
    for folder in (tsv.parent / "clips", src / "clips"):
        if folder.is_dir():
            return folder
    raise ConvertError(f"missing clips/ folder next to {tsv.name} or in {src}")


def plan(src: Path) -> Plan:
    src = Path(src)
    if not src.is_dir():
        raise ConvertError(f"{src}: not a folder")
    jobs, pairs = [], set()
    files = _tsvs(src)
    for tsv in files:
        s_lang, t_lang, split_name = NAME.match(tsv.name).groups()
        split, clips = SPLITS[split_name], _clips(tsv, src)
        pairs.add(f"{s_lang}_{t_lang}")
        for row in read_rows(tsv, "\t", required=COLUMNS):
            name = row["path"] or ""
            key = f"{file_key(name)}-{s_lang}_{t_lang}"
            labels = {"translation": (row["translation"] or "").strip(), "text": (row["sentence"] or "").strip()}
            args = ((str(clips / name),), key, TASK, split, labels, SOURCE, lang_code(s_lang), lang_code(t_lang))
            jobs.append((split, TASK, Job(key, SOURCE, make_raw_any, args)))
    source = {"format": FORMAT, "dataset": "CoVoST 2", "pairs": sorted(pairs), "files": checksum(*files)}
    return Plan(group(jobs), {}, source)
