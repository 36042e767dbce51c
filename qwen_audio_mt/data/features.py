"""16-kHz mono samples -> Whisper log-mel and the number of LLM audio positions: the one front end
of training, evaluation and generation.

Three ways, by the model's `encoder.compat` (model/encoder.py):
- None (ours): the mel of the clip itself, `samples // 160` frames; a batch pads it with 0.
- "qwen-audio" / "qwen2-audio" (a released model's numbers): the clip padded with zeros to 30 s,
  the mel of the whole window (so past the clip's end lies the log-mel of that silence, as
  WhisperFeatureExtractor and Qwen-Audio's audio.py compute it) and the clip's frames counted
  `samples // 160` (Qwen-Audio) or `ceil(samples / 160)` (Qwen2-Audio's processor, from its
  attention mask taken every 160th sample). The mel is cut to those frames plus the 2 frames
  of context the release's convolutions read past them (audio.RELEASED_CONTEXT_FRAMES; zeros past
  the 30-s window, as its conv padding), so the mel's width still says where a clip ends and a
  batch pads and masks the rest as for ours; the encoder (compat) takes the 2 off. Qwen-Audio's
  encoder first cuts the mel to 2 x the after-conv length (one padded frame for an odd length,
  none for an even one), so its context past that is zero (a lone clip's numbers; in its batches
  a clip's numbers depend on the longest clip's length).

The log-mel is openai-whisper's `log_mel_spectrogram` in its numbers (`whisper_log_mel`: at most
2.4e-7 from it on real clips, tested to 1e-5), computed with less work per clip: the window built
once, not per call (whisper caches its filters itself); the power spectrum as re^2 + im^2, not as
whisper's complex magnitude (a square root) squared again; the log and its floors in place. Measured 1.5-1.6x
whisper's speed on 360 real clips of the embedded shards (one thread, medians of 15 interleaved
rounds); whisper's had taken 40 % of the training loader's time (py-spy over bench/bench_loader.py).
"""
from __future__ import annotations

import numpy as np
import torch
import whisper

from ..audio import (HOP_LENGTH, MAX_AUDIO_POSITIONS, N_FFT, N_FRAMES, N_SAMPLES, RELEASED_CONTEXT_FRAMES,
                     n_encoder_frames, n_mel_frames, n_pooled_positions)

_WINDOW = torch.hann_window(N_FFT)   # whisper's periodic Hann window, built on every call there

# frames of a clip of n samples, as each released front end counts them
_RELEASED_FRAMES = {"qwen-audio": lambda n: n // HOP_LENGTH, "qwen2-audio": lambda n: -(-n // HOP_LENGTH)}


def log_mel(audio: np.ndarray | torch.Tensor, n_mels: int, pad_to_30s: bool = False,
            compat: str | None = None) -> tuple[torch.Tensor, int, int]:
    """(log-mel [n_mels, frames], real mel frames, LLM positions). With `pad_to_30s` the clip is
    padded to 30 s and takes all 750 positions; `compat`: a released model's front end (above)."""
    audio = torch.from_numpy(np.ascontiguousarray(audio)) if isinstance(audio, np.ndarray) else audio
    if compat is not None:
        if pad_to_30s:
            raise ValueError("pad_to_30s and a released model's front end (compat) exclude each other")
        frames = min(_RELEASED_FRAMES[compat](len(audio)), N_FRAMES)
        mel = whisper_log_mel(whisper.pad_or_trim(audio, N_SAMPLES), n_mels)
        mel = torch.cat([mel, mel.new_zeros(n_mels, RELEASED_CONTEXT_FRAMES)], 1)[:, : frames + RELEASED_CONTEXT_FRAMES]
        if compat == "qwen-audio":  # its AudioEncoder cuts the mel to 2 x the after-conv length first
            mel[:, 2 * n_encoder_frames(frames):] = 0
        return mel, frames, n_pooled_positions(n_encoder_frames(frames))
    frames = n_mel_frames(len(audio))
    if pad_to_30s:
        audio = whisper.pad_or_trim(audio, N_SAMPLES)
    mel = whisper_log_mel(audio, n_mels)
    n_audio = MAX_AUDIO_POSITIONS if pad_to_30s else n_pooled_positions(n_encoder_frames(mel.shape[1]))
    return mel, frames, n_audio


def whisper_log_mel(audio: torch.Tensor, n_mels: int) -> torch.Tensor:
    """whisper.log_mel_spectrogram(audio, n_mels) [n_mels, len(audio) // 160] for float32 samples:
    its centred STFT (reflect padding of N_FFT // 2, the last frame dropped), power, mel filters,
    log10 floored at 1e-10 and at the clip's maximum - 8, then (x + 4) / 4."""
    padded = torch.nn.functional.pad(audio[None], (N_FFT // 2, N_FFT // 2), mode="reflect")[0]
    spec = torch.fft.rfft(padded.unfold(0, N_FFT, HOP_LENGTH)[:-1] * _WINDOW)   # [frames, N_FFT // 2 + 1]
    power = torch.addcmul(spec.real.square(), spec.imag, spec.imag)   # |z|^2 without whisper's sqrt
    filters = whisper.audio.mel_filters("cpu", n_mels)   # lru-cached by whisper
    mel = (filters @ power.T).clamp_(min=1e-10).log10_()
    mel = torch.maximum(mel, mel.max() - 8.0, out=mel).add_(4.0).mul_(0.25)   # * 0.25 is / 4 exactly
    return mel
