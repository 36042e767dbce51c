import torch

from qwen_audio_mt.model.encoder import EncoderConfig, WhisperEncoder


def test_clip_output_does_not_depend_on_its_batch():
    """An odd-length clip encoded alone equals the same clip padded beside a longer one."""
    torch.manual_seed(0)
    enc = WhisperEncoder(EncoderConfig(n_state=64, n_head=2, n_layer=2)).eval()
    short, long_ = torch.randn(80, 201), torch.randn(80, 400)
    batch = torch.zeros(2, 80, 400)
    batch[0, :, :201], batch[1] = short, long_
    with torch.no_grad():
        alone, n_alone = enc(short[None], torch.tensor([201]))
        both, n_both = enc(batch, torch.tensor([201, 400]))
    assert int(n_alone[0]) == int(n_both[0]) == 101
    assert torch.allclose(alone[0], both[0, :101], atol=1e-5)
