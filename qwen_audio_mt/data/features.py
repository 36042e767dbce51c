"""16-kHz mono samples -> Whisper log-mel and the number of LLM audio positions: the one front end
of training, evaluation and generation."""
from __future__ import annotations

import numpy as np
import torch
import whisper

from ..audio import MAX_AUDIO_POSITIONS, N_SAMPLES, n_encoder_frames, n_mel_frames, n_pooled_positions


def log_mel(audio: np.ndarray | torch.Tensor, n_mels: int, pad_to_30s: bool = False) -> tuple[torch.Tensor, int, int]:
    """(log-mel [n_mels, frames], real mel frames, LLM positions). With `pad_to_30s` the clip is
    padded to 30 s (Qwen-Audio's front end) and takes all 750 positions."""
    audio = torch.from_numpy(np.ascontiguousarray(audio)) if isinstance(audio, np.ndarray) else audio
    frames = n_mel_frames(len(audio))
    if pad_to_30s:
        audio = whisper.pad_or_trim(audio, N_SAMPLES)
    mel = whisper.log_mel_spectrogram(audio, n_mels)
    n_audio = MAX_AUDIO_POSITIONS if pad_to_30s else n_pooled_positions(n_encoder_frames(mel.shape[1]))
    return mel, frames, n_audio
