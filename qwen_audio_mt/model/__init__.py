"""The audio-language model: Whisper encoder -> adapter -> LLM (see audio_lm.py)."""
