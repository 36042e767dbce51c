"""Mozilla Common Voice (one language folder) -> asr.

Layout (`--src` is one language folder of a release, e.g. `cv-corpus-17.0-2024-03-15/de`):

    train.tsv, dev.tsv, test.tsv   tab-separated, columns client_id, path, sentence, ... [locale]
    clips/{path}                   mp3 (`path` holds the file name with its extension)

Other TSVs of the release (validated, other, invalidated, ...) are ignored. At least one of the
three split files and the clips/ folder must exist. Task asr; the sentence is kept as written
(cased, punctuated). Language: the row's `locale` column when present and non-empty, else the
folder name; mapped to the registry by LOCALES (zh-CN -> zh, zh-TW -> zh_tr; other codes pass
through unchanged, so a row in a language the vocabulary lacks - zh-HK, which is Cantonese,
pt, ... - is quarantined by ingest as bad_language). Split: train -> train, dev -> valid,
test -> test. Key: the clip's file name without extension (`common_voice_de_123`).
"""
from __future__ import annotations

from pathlib import Path

from ..shards import Job
from . import ConvertError, Plan
from .common import checksum, file_key, group, make_raw_any, read_rows

FORMAT = "commonvoice"
DESCRIPTION = "Common Voice language folder ({train,dev,test}.tsv + clips/*.mp3) -> asr"
SOURCE = "commonvoice"
SPLITS = {"train": "train", "dev": "valid", "test": "test"}
LOCALES = {"en": "en", "zh-CN": "zh", "zh-TW": "zh_tr", "de": "de", "es": "es", "ko": "ko",
           "fr": "fr", "ja": "ja", "it": "it"}


def lang_code(locale: str) -> str:
    """A Common Voice locale -> the registry's language code (unknown codes pass through, and
    ingest quarantines their items as bad_language)."""
    locale = locale.strip()
    return LOCALES.get(locale, locale)


def plan(src: Path) -> Plan:
    src = Path(src)
    tsvs = [(src / f"{name}.tsv", split) for name, split in SPLITS.items() if (src / f"{name}.tsv").is_file()]
    if not tsvs:
        raise ConvertError(f"{src}: missing train.tsv, dev.tsv and test.tsv (a Common Voice language folder)")
    if not (src / "clips").is_dir():
        raise ConvertError(f"{src}: missing clips/ folder")
    jobs = []
    for tsv, split in tsvs:
        for row in read_rows(tsv, "\t", required=("path", "sentence")):
            name = row["path"] or ""
            key = file_key(name)
            lang = lang_code(row.get("locale") or src.name)
            labels = {"text": (row["sentence"] or "").strip()}
            args = ((str(src / "clips" / name),), key, "asr", split, labels, SOURCE, lang)
            jobs.append((split, "asr", Job(key, SOURCE, make_raw_any, args)))
    source = {"format": FORMAT, "dataset": "Common Voice", "language_folder": src.name,
              "files": checksum(*(t for t, _ in tsvs))}
    return Plan(group(jobs), {}, source)
