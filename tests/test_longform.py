"""Long audio: window starts, the long-audio mode of every task, merging window answers."""
from __future__ import annotations

import pytest

from qwen_audio_mt.longform import (LongAudioError, check_long, merge_fields, merge_sequences, merge_text,
                                    merge_timed, window_starts)
from qwen_audio_mt.tasks import CONCAT_KINDS, load_tasks

SR = 16000


@pytest.mark.parametrize("seconds, overlap, starts", [
    (10, 2, [0]), (30, 2, [0]), (30.5, 2, [0, 0.5]),
    (96, 2, [0, 28, 56, 66]),          # hop 28 s; the last window ends at the clip's end
    (84, 2, [0, 28, 54]), (90, 0, [0, 30, 60]), (61, 5, [0, 25, 31])])
def test_window_starts(seconds, overlap, starts):
    got = window_starts(round(seconds * SR), 30, overlap)
    assert [s / SR for s in got] == starts
    assert all(b - a <= (30 - overlap) * SR for a, b in zip(got, got[1:]))
    assert got[-1] + 30 * SR >= round(seconds * SR)  # the clip's end is covered


def test_overlap_must_be_shorter_than_the_window():
    with pytest.raises(LongAudioError, match="overlap 30"):
        window_starts(60 * SR, 30, 30)


def test_every_task_has_a_long_audio_mode():
    reg = load_tasks()
    modes = {t.name: t.long_audio for t in reg}
    assert modes["asr"] == modes["word_timestamps"] == modes["sound_event_detection"] == "concat"
    assert modes["acoustic_scene"] == modes["language_id"] == "window"
    assert modes["caption_clotho"] == "reject"
    assert all(t.target.kind in CONCAT_KINDS for t in reg if t.long_audio == "concat")
    assert check_long(reg.get("caption_clotho"), 12.0) == "short"
    assert check_long(reg.get("asr"), 96.0) == "concat"
    assert check_long(reg.get("instrument"), 96.0) == "window"


def test_reject_names_task_and_duration():
    with pytest.raises(LongAudioError) as e:
        check_long(load_tasks().get("caption_clotho"), 96.04)
    msg = str(e.value)
    assert "caption_clotho" in msg and "96.0 s" in msg and "30 s" in msg and "\n" not in msg
    with pytest.raises(LongAudioError, match="a raw prompt cannot take 40.0 s"):
        check_long(None, 40.0)


def test_text_overlap_said_once():
    a = "and so my fellow americans ask not what your country"
    b = "Your country can do for you, ask what you can do"  # window 2 starts inside the overlap
    assert merge_text([a, b]) == "and so my fellow americans ask not what your country can do for you, ask what you can do"
    # a word cut by the window edge ("coun" / "ntry") is dropped from both sides of the shared run
    assert merge_text(["ask not what your coun", "ntry ask not what your country can do"]) == \
        "ask not what your country can do"
    # no shared run of two words: nothing is dropped
    assert merge_text(["one two three", "four five"]) == "one two three four five"
    assert merge_text(["the cat sat", "the dog ran"]) == "the cat sat the dog ran"  # one shared word is chance
    assert merge_text(["", "hello world"]) == "hello world"


def test_token_sequences_merge_like_words():
    assert merge_sequences([["60", "62", "64", "65"], ["64", "65", "67"]]) == ["60", "62", "64", "65", "67"]


def test_timed_items_cut_at_the_middle_of_the_overlap():
    # windows 0-30 s and 28-58 s overlap 28-30: the cut is at 29 s
    w1 = [{"word": "a", "start": 1.0, "end": 1.5}, {"word": "b", "start": 28.5, "end": 28.9},
          {"word": "c", "start": 29.2, "end": 29.8}]
    w2 = [{"word": "b", "start": 0.5, "end": 0.9}, {"word": "c", "start": 1.2, "end": 1.8},
          {"word": "d", "start": 10.0, "end": 10.4}]
    out = merge_timed([w1, w2], [0.0, 28.0], [30.0, 58.0])
    assert out == [{"word": "a", "start": 1.0, "end": 1.5}, {"word": "b", "start": 28.5, "end": 28.9},
                   {"word": "c", "start": 29.2, "end": 29.8}, {"word": "d", "start": 38.0, "end": 38.4}]


def test_merge_fields_by_kind():
    reg = load_tasks()
    sed = reg.get("sound_event_detection").target
    spans = merge_fields(sed, [({"events": [{"label": "knock", "start": 2.0, "end": 2.5}]}, 0.0, 30.0),
                               ({"events": [{"label": "siren", "start": 5.0, "end": 9.0}]}, 28.0, 58.0)])
    assert spans == {"events": [{"label": "knock", "start": 2.0, "end": 2.5}, {"label": "siren", "start": 33.0, "end": 37.0}]}
    asr = reg.get("asr").target
    assert merge_fields(asr, [({"text": "one two three four"}, 0, 30), ({"text": "three four five"}, 28, 58)]) == \
        {"text": "one two three four five"}
    with pytest.raises(LongAudioError, match="'entities'"):
        merge_fields(reg.get("named_entity_recognition").target, [({"text": "x", "entities": []}, 0, 30)])
