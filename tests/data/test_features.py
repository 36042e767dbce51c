"""The front end's log-mel against openai-whisper's own, on real clips of every kind and on the
lengths where framing goes wrong first."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import whisper

from qwen_audio_mt.data.features import log_mel, whisper_log_mel
from qwen_audio_mt.data.ingest import load_audio
from conftest import need_data

TOL = 1e-5   # measured: at most 2.4e-7 (float32 rounding in the filterbank product)


def real_clips() -> list[np.ndarray]:
    """Speech, music and sounds of 0.3-30 s (the shared clips decoded and resampled to 16 kHz),
    and FSDD digits (8 kHz recordings)."""
    clips = [load_audio(p) for p in sorted(need_data("real_clips").glob("*.ogg"))]
    clips += [load_audio(p) for p in sorted(need_data("fsdd").glob("*.wav"))[::300]]
    return clips


@pytest.mark.parametrize("n_mels", [80, 128])
def test_equals_whisper_on_real_clips(n_mels):
    clips = real_clips()
    assert len(clips) >= 15 and min(map(len, clips)) < 16000 < 20 * 16000 < max(map(len, clips))
    for audio in clips:
        x = torch.from_numpy(audio)
        ref, ours = whisper.log_mel_spectrogram(x, n_mels), whisper_log_mel(x, n_mels)
        assert ours.shape == ref.shape == (n_mels, len(audio) // 160) and ours.is_contiguous()
        assert (ours - ref).abs().max() < TOL


@pytest.mark.parametrize("n", [201, 399, 400, 401, 480, 16000, 16159, 16161])
def test_equals_whisper_at_framing_edges(n):
    x = torch.from_numpy(np.random.default_rng(n).standard_normal(n).astype(np.float32) * 0.1)
    ref = whisper.log_mel_spectrogram(x)
    assert whisper_log_mel(x, 80).shape == ref.shape
    assert (whisper_log_mel(x, 80) - ref).abs().max() < TOL


def test_silence_is_whispers_floor():
    mel = whisper_log_mel(torch.zeros(8000), 80)
    assert torch.equal(mel, whisper.log_mel_spectrogram(torch.zeros(8000)))
    assert mel.unique().tolist() == [-1.5]   # log10(1e-10) = -10, (-10 + 4) / 4


def test_a_released_models_30_s_window_is_whispers():
    audio = real_clips()[0][: 7 * 16000]
    mel, frames, _ = log_mel(audio, 80, compat="qwen2-audio")
    ref = whisper.log_mel_spectrogram(whisper.pad_or_trim(torch.from_numpy(audio)))
    assert frames == 700 and (mel[:, :frames] - ref[:, :frames]).abs().max() < TOL
