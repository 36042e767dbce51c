"""Audio constants and the audio -> LLM position arithmetic.

Derivations (Whisper front end, then Qwen-Audio's pooling):
- 16 kHz; STFT window 400 samples (25 ms), hop 160 samples (10 ms) -> 100 mel frames/s.
- Whisper's conv stem: conv1 (k3, s1, p1) keeps the length, conv2 (k3, s2, p1) gives
  (T - 1) // 2 + 1 frames of 20 ms.
- Qwen-Audio's avg-pool (k2, s2): (L - 2) // 2 + 1 positions of 40 ms.
- 30 s -> 480,000 samples -> 3,000 mel frames -> 1,500 encoder frames -> 750 LLM positions.
"""
from __future__ import annotations

SAMPLE_RATE = 16_000
N_FFT = 400                                   # 25 ms window
HOP_LENGTH = 160                              # 10 ms hop
N_MELS = 80
CHUNK_SECONDS = 30
N_SAMPLES = CHUNK_SECONDS * SAMPLE_RATE       # 480,000 samples in 30 s
N_FRAMES = N_SAMPLES // HOP_LENGTH            # 3,000 mel frames in 30 s
CONV_STRIDE = 2                               # Whisper conv2: 10 ms -> 20 ms
POOL_STRIDE = 2                               # Qwen-Audio avg-pool: 20 ms -> 40 ms
SECONDS_PER_POSITION = HOP_LENGTH * CONV_STRIDE * POOL_STRIDE / SAMPLE_RATE  # 0.04 s
# A released model's encoder reads past a clip's last frame: conv1 (k3) one mel frame, conv2 (k3,
# s2) one conv1 frame, which conv1 computed from one more: 2 mel frames of context (encoder.py).
RELEASED_CONTEXT_FRAMES = 2
# Encoder packing (several clips in one mel row, model/packing.py): a clip starts on a multiple of
# conv2's stride x the pool's (its encoder frames then start on conv2's grid and its positions on
# the pool's, as alone), and clips are kept apart by one silent frame, the one frame conv1 (k3)
# reads past either edge, which alone is its zero padding.
PACK_ALIGN = CONV_STRIDE * POOL_STRIDE        # 4 mel frames
PACK_GAP = 1                                  # zero mel frames at least between two packed clips


def n_mel_frames(n_samples: int) -> int:
    """Frames of whisper.log_mel_spectrogram (its STFT drops the last centred frame)."""
    return n_samples // HOP_LENGTH


def n_encoder_frames(mel_frames: int) -> int:
    return (mel_frames - 1) // CONV_STRIDE + 1 if mel_frames > 0 else 0


def n_pooled_positions(encoder_frames: int) -> int:
    return (encoder_frames - POOL_STRIDE) // POOL_STRIDE + 1 if encoder_frames >= POOL_STRIDE else 0


def n_audio_positions(duration_s: float) -> int:
    """LLM positions (placeholders between <audio> and </audio>) for a clip of this length."""
    n_samples = round(duration_s * SAMPLE_RATE)
    return n_pooled_positions(n_encoder_frames(n_mel_frames(n_samples)))


MAX_AUDIO_POSITIONS = n_audio_positions(CHUNK_SECONDS)  # 750
