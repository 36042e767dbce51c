"""qwen-audio-mt."""
