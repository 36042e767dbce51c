"""LibriSpeech (OpenSLR 12) -> asr.

Layout (`--src` is the LibriSpeech root holding the subset folders, or one subset folder):

    {subset}/{speaker}/{chapter}/{speaker}-{chapter}.trans.txt   lines "{utt} {TRANSCRIPT}"
    {subset}/{speaker}/{chapter}/{utt}.flac

Task asr, audio_lang en. Transcripts are lowercased (LibriSpeech ships them in upper case with no
punctuation; lowercase is how Qwen-Audio/Whisper-style targets write them); nothing else changes.
Split from the subset folder name: train-* -> train, dev-* -> valid, test-* -> test. Key: the
utterance id (`1272-128104-0000`), unique across the corpus. A transcript line without a
transcript is quarantined as bad_transcript_line; a line whose .flac is absent, as missing_file.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

from ..shards import Job
from . import ConvertError, Plan
from .common import bad_row, file_key, group, make_raw_any

FORMAT = "librispeech"
DESCRIPTION = "LibriSpeech subsets ({subset}/{speaker}/{chapter}/*.trans.txt + .flac) -> asr"
SOURCE = "librispeech"
SPLITS = {"train": "train", "dev": "valid", "test": "test"}


def subset_split(name: str) -> str | None:
    """train-clean-100 -> train, dev-other -> valid, test-clean -> test; None otherwise."""
    prefix = name.split("-", 1)[0]
    return SPLITS.get(prefix) if "-" in name else None


def _subsets(src: Path) -> list[Path]:
    if subset_split(src.name):
        return [src]
    found = sorted(p for p in src.iterdir() if p.is_dir() and subset_split(p.name))
    if not found:
        raise ConvertError(f"{src}: no LibriSpeech subset folder (train-*, dev-*, test-*) and not one itself")
    return found


def _jobs(trans: Path, split: str, digest) -> list[tuple[str, str, Job]]:
    data = trans.read_bytes()
    digest.update(trans.name.encode("utf-8", "surrogateescape") + b"\0" + data)
    out = []
    for n, line in enumerate(data.decode("utf-8", errors="surrogateescape").splitlines(), 1):
        utt, _, text = line.strip().partition(" ")
        if not utt:
            continue
        key = file_key(utt)
        if not text.strip():
            job = Job(key, SOURCE, bad_row, ("bad_transcript_line", f"{trans.name} line {n}: no transcript"))
        else:
            labels = {"text": text.strip().lower()}
            paths = (str(trans.parent / f"{utt}.flac"),)
            job = Job(key, SOURCE, make_raw_any, (paths, key, "asr", split, labels, SOURCE, "en"))
        out.append((split, "asr", job))
    return out


def plan(src: Path) -> Plan:
    src = Path(src)
    if not src.is_dir():
        raise ConvertError(f"{src}: not a folder (expected the LibriSpeech root or a subset folder)")
    jobs, digest, subsets = [], hashlib.sha256(), {}
    for subset in _subsets(src):
        files = sorted(subset.glob("*/*/*.trans.txt"))
        if not files:
            raise ConvertError(f"{subset}: no {{speaker}}/{{chapter}}/*.trans.txt transcript files")
        subsets[subset.name] = len(files)
        for trans in files:
            jobs += _jobs(trans, subset_split(subset.name), digest)
    source = {"format": FORMAT, "dataset": "LibriSpeech", "subsets": subsets,
              "transcripts_sha256": digest.hexdigest(), "text": "lowercased"}
    return Plan(group(jobs), {}, source)
