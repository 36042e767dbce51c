"""NSynth -> music_pitch, music_velocity, instrument.

Layout (`--src` is the folder holding the split folders, or one split folder):

    nsynth-{train,valid,test}/examples.json   {note_str: {pitch, velocity, instrument_family_str,
                                              instrument_source_str, qualities_str, ...}}
    nsynth-{train,valid,test}/audio/{note_str}.wav   4-s 16-kHz notes

Split from the folder name (nsynth-train -> train, nsynth-valid -> valid, nsynth-test -> test).
One job per (note, task), key `{note_str}-{task}`: music_pitch {pitch} and music_velocity
{velocity} (MIDI numbers, rendered as tag tokens), instrument {instrument: instrument_family_str}
with the 11 NSynth families as label_sets["instrument"] (a note of another family, or missing a
field, is quarantined as bad_label). Each note's audio is decoded once per task.
"""
from __future__ import annotations

import json
from pathlib import Path

from ..shards import Job
from . import ConvertError, Plan
from .common import checksum, file_key, group, make_raw_any

FORMAT = "nsynth"
DESCRIPTION = "NSynth (nsynth-{split}/examples.json + audio/*.wav) -> music_pitch, music_velocity, instrument"
SOURCE = "nsynth"
SPLITS = {"nsynth-train": "train", "nsynth-valid": "valid", "nsynth-test": "test"}
FAMILIES = ["bass", "brass", "flute", "guitar", "keyboard", "mallet", "organ", "reed", "string",
            "synth_lead", "vocal"]  # instrument_family 0..10
TASKS = {"music_pitch": ("pitch", "pitch"), "music_velocity": ("velocity", "velocity"),
         "instrument": ("instrument", "instrument_family_str")}  # task -> (label field, JSON field)


def _folders(src: Path) -> list[Path]:
    if src.name in SPLITS:
        return [src]
    found = [src / name for name in SPLITS if (src / name).is_dir()]
    if not found:
        raise ConvertError(f"{src}: no nsynth-train, nsynth-valid or nsynth-test folder, and not one itself")
    return found


def _notes(path: Path) -> dict:
    if not path.is_file():
        raise ConvertError(f"missing {path}")
    try:
        notes = json.loads(path.read_bytes())
    except (ValueError, UnicodeDecodeError) as e:
        raise ConvertError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(notes, dict):
        raise ConvertError(f"{path}: expected an object of note_str -> attributes")
    return notes


def plan(src: Path) -> Plan:
    src = Path(src)
    jobs, files = [], []
    for folder in _folders(src):
        split, meta = SPLITS[folder.name], folder / "examples.json"
        notes = _notes(meta)
        files.append(meta)
        for note in sorted(notes):
            attrs = notes[note] if isinstance(notes[note], dict) else {}
            paths = (str(folder / "audio" / f"{note}.wav"),)
            for task, (field, column) in TASKS.items():
                key = f"{file_key(note)}-{task}"
                args = (paths, key, task, split, {field: attrs.get(column)}, SOURCE)
                jobs.append((split, task, Job(key, SOURCE, make_raw_any, args)))
    source = {"format": FORMAT, "dataset": "NSynth", "files": {f"{p.parent.name}/{k}": v for p in files
                                                               for k, v in checksum(p).items()}}
    return Plan(group(jobs), {"instrument": list(FAMILIES)}, source)
