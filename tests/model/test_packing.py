"""Encoder-side packing: a packed clip encodes, and its sample scores, as it would alone (fp32)."""
import pytest
import torch
from conftest import need_data, tiny_model_config

from qwen_audio_mt.audio import PACK_ALIGN, PACK_GAP, n_encoder_frames, n_pooled_positions
from qwen_audio_mt.data.collate import Example, collate
from qwen_audio_mt.data.features import log_mel
from qwen_audio_mt.data.ingest import load_audio
from qwen_audio_mt.data.packing import pack_mels, plan_rows
from qwen_audio_mt.model.builders import build_model
from qwen_audio_mt.model.encoder import EncoderConfig, WhisperEncoder

CLIPS = ["fsdd/0_george_0.wav", "fsdd/3_jackson_10.wav", "fsdd/7_nicolas_2.wav", "real_clips/198-209-0000.ogg",
         "fsdd/9_yweweler_31.wav", "real_clips/456440__inspectorj__bird-whistling-robin-single-13.ogg"]


def real_mels(n_mels: int = 80) -> list[torch.Tensor]:
    """Log-mels of real recordings (digits of ~0.3-0.8 s, speech and a bird of several seconds),
    each cut to an odd length and another to an even one, so both conv2 edge cases occur."""
    mels = []
    for i, rel in enumerate(CLIPS):
        mel, _, _ = log_mel(load_audio(need_data(*rel.split("/"))), n_mels)
        mels.append(mel[:, : min(mel.shape[-1], 900) - (i % 2)])
    return mels


def tiny_model():
    torch.manual_seed(0)
    return build_model(tiny_model_config(layers=2)).eval()


def examples(model, mels: list[torch.Tensor]) -> list[Example]:
    """A task sample per clip (audio span, a prompt and a target of varying lengths), and one
    conversation holding two of the clips (a row with two audio spans)."""
    out = []

    def span(mel):
        n = n_pooled_positions(n_encoder_frames(mel.shape[-1]))
        return [model.audio_start_id] + [model.placeholder_id] * n + [model.audio_end_id]

    for i, mel in enumerate(mels):
        ids = span(mel) + list(range(10 + i, 15 + 3 * i))
        mask = [0] * (len(ids) - 2 - i) + [1] * (2 + i)
        out.append(Example(f"k{i}", "asr", 0, mel, mel.shape[-1], ids, mask, 1, len(ids), mel.shape[-1] / 100))
    a, b = mels[1], mels[3]
    ids = [7, 8] + span(a) + [9] + span(b) + [20, 21, 22]
    out.insert(2, Example("conv", "chat", -1, None, 0, ids, [0] * (len(ids) - 3) + [1, 1, 1], -1, 0, 1.0,
                          clips=((a, a.shape[-1]), (b, b.shape[-1]))))
    return out


def scores(model, b: dict):
    with torch.no_grad():
        return model(b["input_ids"], b["attention_mask"], b["mel"], b["mel_lengths"], b["labels"],
                     mel_layout=b.get("mel_layout"), position_ids=b.get("position_ids"),
                     sample_index=b.get("sample_index"), sample_spans=b.get("sample_spans"))


def test_plan_rows_keeps_clips_on_the_grid_apart_and_inside_rows():
    frames = [2999, 1201, 37, 800, 1, 1500, 64, 3100]
    places = plan_rows(frames, 3000)
    long_row = places[frames.index(3100)][0]
    assert [r for r, _ in places].count(long_row) == 1  # longer than a row: a row of its own
    by_row: dict = {}
    for (row, start), f in zip(places, frames):
        assert start % PACK_ALIGN == 0
        by_row.setdefault(row, []).append((start, f))
    for row, clips in by_row.items():
        clips.sort()
        assert clips[-1][0] + clips[-1][1] <= max(3000, clips[-1][1])
        for (s0, f0), (s1, _) in zip(clips, clips[1:]):
            assert s1 >= s0 + f0 + PACK_GAP
    assert len(by_row) == 4  # 3100 | 2999 | 1500+1201+64+37+1 | 800: first fit by decreasing length


def test_packed_clips_encode_as_they_do_alone():
    mels = real_mels()
    enc = WhisperEncoder(EncoderConfig(n_state=64, n_head=2, n_layer=2)).eval()
    rows, layout = pack_mels(mels, 3000)
    assert rows.shape[0] < len(mels)  # clips really share rows
    with torch.no_grad():
        packed, enc_layout = enc(rows, layout[:, 2], layout)
        for i, mel in enumerate(mels):
            alone, n = enc(mel[None], torch.tensor([mel.shape[-1]]))
            row, start, frames = enc_layout[i].tolist()
            assert frames == int(n[0])
            torch.testing.assert_close(packed[row, start: start + frames], alone[0, :frames], atol=1e-5, rtol=0)


@pytest.mark.parametrize("pack_tokens", [None, 700])
def test_packed_batch_gives_every_sample_its_unpacked_loss(pack_tokens):
    """Clips packed into mel rows (and samples into LLM rows of 700 ids): every sample's loss
    (mean token cross-entropy) equals the padded batch's within 1e-5 (fp32), its token counts
    and correct tokens exactly."""
    model = tiny_model()
    batch = examples(model, real_mels())
    padded, packed = collate(batch, 0), collate(batch, 0, pack_frames=3000, pack_tokens=pack_tokens)
    assert packed["mel"].shape[0] < padded["mel"].shape[0]
    real = int(packed["audio_frames"].sum())
    assert real / packed["mel"][:, 0].numel() > real / padded["mel"][:, 0].numel()
    if pack_tokens:
        assert packed["input_ids"].shape[0] < len(batch) and packed["input_ids"].shape[1] <= pack_tokens
        assert packed["input_ids"].numel() < padded["input_ids"].numel()
    a, b = scores(model, padded), scores(model, packed)
    torch.testing.assert_close(b.sample_logprob / b.sample_tokens, a.sample_logprob / a.sample_tokens, atol=1e-5, rtol=0)
    assert torch.equal(b.sample_tokens, a.sample_tokens) and torch.equal(b.sample_correct, a.sample_correct)


def test_packed_rows_restart_positions_and_keep_samples_apart():
    model = tiny_model()
    batch = examples(model, real_mels())
    b = collate(batch, 0, pack_tokens=700)
    for r in range(b["input_ids"].shape[0]):
        for i in b["sample_index"][r].unique().tolist():
            if i >= 0:
                where = (b["sample_index"][r] == i).nonzero()[:, 0]
                assert b["position_ids"][r, where].tolist() == list(range(len(batch[i].ids)))
                assert b["input_ids"][r, where].tolist() == batch[i].ids
    assert b["attention_mask"] is None and b["sample_lengths"].tolist() == [len(e.ids) for e in batch]


def test_a_layout_off_the_grid_or_touching_is_refused():
    enc = WhisperEncoder(EncoderConfig(n_state=64, n_head=2, n_layer=2)).eval()
    mel = torch.randn(1, 80, 400)
    for layout in ([[0, 2, 100]], [[0, 0, 100], [0, 100, 50]]):  # off the grid; no silent frame between
        with pytest.raises(ValueError, match="not on the 4-frame grid, 1 frame"):
            enc(mel, torch.tensor([100]), torch.tensor(layout))
    compat = WhisperEncoder(EncoderConfig(n_state=64, n_head=2, n_layer=2, compat="qwen2-audio"))
    with pytest.raises(ValueError, match="packed clips need compat=null"):
        compat(mel, torch.tensor([100]), torch.tensor([[0, 0, 100]]))
