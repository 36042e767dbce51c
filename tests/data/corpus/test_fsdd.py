"""FSDD tasks: real recordings by split, and digit_recognition's espeak voices in train only."""
from __future__ import annotations

import shutil
from collections import Counter

import numpy as np
import pytest

from qwen_audio_mt.data.corpus import fsdd
from qwen_audio_mt.data.corpus import speech_texts as tx
from qwen_audio_mt.data.corpus.base import SourceMissing
from conftest import need_data

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")


@pytest.fixture(autouse=True)
def _fsdd():
    need_data("fsdd", "metadata.json")


def items(split: str, n: int, task: str = "digit_recognition"):
    return [fsdd.make(task, i, np.random.default_rng([7, i]), split) for i in range(n)]


def test_train_digits_mix_real_recordings_and_espeak_voices_at_the_configured_share():
    got = items("train", 200)
    by_source = Counter(it.source for it in got)
    share = tx.texts()["digit_voices"]["share"]
    assert set(by_source) == {"fsdd", "espeak"}
    assert abs(by_source["espeak"] / 200 - share) < 0.1
    for it in got:
        digit = it.labels["text_itn"]
        assert digit in {str(d) for d in range(10)}
        if it.source == "fsdd":  # a real file whose name says the digit
            assert it.audio is None and it.path.rsplit("/", 1)[1].split("_")[0] == digit
        else:
            assert it.path is None and it.audio.dtype == np.float32
            assert 0.5 <= len(it.audio) / 16000 <= 3.0 and 0.2 < np.abs(it.audio).max() <= 1.0


@pytest.mark.parametrize("split", ["valid", "test"])
def test_valid_and_test_digits_stay_real_recordings(split):
    assert {it.source for it in items(split, 60)} == {"fsdd"}


def test_other_fsdd_tasks_are_real_recordings_only():
    assert {it.source for it in items("train", 60, "fsdd_speaker") + items("train", 60, "accent")} == {"fsdd"}


def test_spoken_digits_vary_in_voice_and_repeat_for_the_same_seed():
    a = [fsdd.spoken_digit(i, np.random.default_rng(i), "train") for i in range(12)]
    b = [fsdd.spoken_digit(i, np.random.default_rng(i), "train") for i in range(12)]
    assert all(np.array_equal(x.audio, y.audio) and x.labels == y.labels for x, y in zip(a, b))
    assert len({len(x.audio) for x in a}) >= 10  # accents, voices, speeds: clips differ


def test_without_fsdd_the_digit_task_is_skipped_with_the_reason(monkeypatch, tmp_path):
    monkeypatch.setenv("QWEN_AUDIO_MT_DATA", str(tmp_path))
    fsdd.metadata.cache_clear(), fsdd.recordings.cache_clear()
    try:
        with pytest.raises(SourceMissing, match="fsdd"):
            fsdd.make("digit_recognition", 0, np.random.default_rng(0), "train")
    finally:
        fsdd.metadata.cache_clear(), fsdd.recordings.cache_clear()


def test_each_synthetic_clip_speaks_the_word_of_its_label(monkeypatch):
    words = "zero one two three four five six seven eight nine".split()  # not number_words: its check
    spoken = []
    real = fsdd.speak_as

    def listen(text, voice, prosody, short=False):
        spoken.append(text)
        return real(text, voice, prosody, short)

    monkeypatch.setattr(fsdd, "speak_as", listen)
    synthetic = [it for it in items("train", 60) if it.source == "espeak"]
    assert len(synthetic) == len(spoken) > 10
    assert [words[int(it.labels["text_itn"])] for it in synthetic] == spoken
