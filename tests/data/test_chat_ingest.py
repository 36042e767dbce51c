"""Conversations into shards and batches: Qwen-Audio-Chat's own sample file (its missing audios
quarantined, the rest trains), several audios per conversation, text-only conversations, cuts."""
import json
import tarfile

import pytest
import torch
from conftest import need_data

from qwen_audio_mt.conversation import Conversation, render_conversation, user_content
from qwen_audio_mt.data.build import build
from qwen_audio_mt.data.collate import BatchLimits
from qwen_audio_mt.data.chat_ingest import ChatItem, ingest_chat
from qwen_audio_mt.data.convert import formats
from qwen_audio_mt.data.datamodule import AudioDataModule, DataConfig
from qwen_audio_mt.data.features import log_mel
from qwen_audio_mt.data.ingest import Quarantined, load_audio
from qwen_audio_mt.data.loader import LoaderConfig
from qwen_audio_mt.data.mixture import MixtureConfig, SourceConfig
from qwen_audio_mt.data.shards import Job, ShardConfig, Stream
from qwen_audio_mt.render import IGNORE
from qwen_audio_mt.tokenizer import Tokenizer, TokenizerSpec

LENIENT = ShardConfig(workers=1, max_quarantine_fraction=1.0)


def item(key: str, messages: list, audio: list, split: str = "train") -> ChatItem:
    return ChatItem(key, split, "test", messages, audio, labels={"kind": "open"})


def batches(folder, n: int = 2, batch: int = 1, **loader) -> list[dict]:
    cfg = LoaderConfig(**{"num_workers": 0, "batches_per_epoch": n, **loader,
                          "limits": BatchLimits(max_batch_size=batch, pool=4)})
    dm = AudioDataModule(DataConfig(MixtureConfig((SourceConfig(str(folder)),)), cfg, valid_split="train"))
    dm.setup()
    out = []
    for b in dm.train_dataloader():
        dm.observe(b)
        out.append(b)
    return out, dm


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    sample = need_data("qwen_audio", "sft_sample.txt")
    out = tmp_path_factory.mktemp("qwen_chat")
    plan = formats()["qwen_chat"].plan(sample)
    return build(plan.streams, out, LENIENT, plan.source, progress=False), out


def test_official_sample_trains_and_its_missing_audio_is_quarantined(official):
    index, out = official
    assert index["tasks"]["chat"]["splits"] == {"train": 2}
    q = [json.loads(line) for line in (out / "quarantine.jsonl").read_text().splitlines()]
    assert [(e["key"], e["reason"]) for e in q] == [("sft_sample-3", "missing_file")]
    root = need_data("qwen_audio")
    assert q[0]["detail"] == f"audio 1 of 2 (assets/audio/sound_effect.flac): {root}/assets/audio/sound_effect.flac"
    (shard,) = out.glob("*.tar")
    with tarfile.open(shard) as tar:
        names = tar.getnames()
        meta = json.loads(tar.extractfile("sft_sample-1.json").read())
    assert names == ["sft_sample-1.audio0.flac", "sft_sample-1.json", "sft_sample-2.audio0.flac", "sft_sample-2.json"]
    # the reference is rewritten to the member; the original path is kept
    assert meta["audio_sources"] == ["assets/audio/1272-128104-0000.flac"]
    assert "<audio>audio0</audio>" in meta["messages"][1]["content"]
    # found by its file name in the root: the real 5.855-s LibriSpeech clip beside the sample file
    assert meta["durations"] == [5.855]


def test_official_batches_learn_only_the_answers(official):
    _, out = official
    (b, *_), _ = batches(out, n=1, batch=2)
    tok = Tokenizer.from_spec(TokenizerSpec())
    key = b["keys"][0]
    meta = next(json.loads(tarfile.open(p).extractfile(f"{key}.json").read()) for p in out.glob("*.tar"))
    conv = Conversation.from_json(meta["messages"])
    audio = load_audio(need_data("qwen_audio", "1272-128104-0000.flac"))
    expected = render_conversation(conv, tok, [log_mel(audio, 80)[2]] * len(conv.audios()))
    row = b["input_ids"][0][b["attention_mask"][0].bool()].tolist()
    assert row == expected.ids
    learned = b["labels"][0][b["labels"][0] != IGNORE].tolist()
    assert learned == [i for i, m in zip(expected.ids, expected.loss_mask) if m]
    assert learned[-1] == tok.role_id("im_end")
    # one clip per audio of each row, placeholders filled in order
    assert b["mel"].shape[0] == len(b["keys"]) and "audio_spans" not in b


def _wav(n: int):
    return sorted(need_data("fsdd").glob("*.wav"))[n]


def test_two_audios_text_only_and_bad_items(tmp_path):
    two = [{"role": "user", "content": user_content("Which one is longer?", ["a", "b"])},
           {"role": "assistant", "content": "The second one."}]
    text = [{"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "How many words are in 'a b c'?"}, {"role": "assistant", "content": "Three."}]
    jobs = [Job("two", "test", item, ("two", two, [str(_wav(0)), str(_wav(50))])),
            Job("text", "test", item, ("text", text, [])),
            Job("miscount", "test", item, ("miscount", two, [str(_wav(0))])),
            Job("badrole", "test", item, ("badrole", [{"role": "bot", "content": "x"}], []))]
    index = build([Stream("train", "chat", jobs)], tmp_path, LENIENT, progress=False)
    assert index["tasks"]["chat"]["samples"] == 2
    q = {e["key"]: e for e in map(json.loads, (tmp_path / "quarantine.jsonl").read_text().splitlines())}
    assert q["miscount"]["reason"] == "bad_conversation" and "2 audio references but 1 audios" in q["miscount"]["detail"]
    assert q["badrole"]["reason"] == "bad_conversation" and "unknown role 'bot'" in q["badrole"]["detail"]
    got, _ = batches(tmp_path, n=4)
    by_key = {b["keys"][0]: b for b in got}
    assert by_key["two"]["mel"].shape[0] == 2 and by_key["text"]["mel"] is None
    placeholder = Tokenizer.from_spec(TokenizerSpec()).role_id("audio_placeholder")
    assert int((by_key["text"]["input_ids"] == placeholder).sum()) == 0


def test_a_conversation_too_long_is_skipped_and_counted(tmp_path):
    long = [{"role": "user", "content": user_content("Describe it. " * 30, ["a"])},
            {"role": "assistant", "content": "A spoken digit."}]
    short = [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Hello."}]
    jobs = [Job("long", "test", item, ("long", long, [str(_wav(3))])), Job("short", "test", item, ("short", short, []))]
    build([Stream("train", "chat", jobs)], tmp_path, LENIENT, progress=False)
    got, dm = batches(tmp_path, n=3, max_conversation_tokens=60)
    assert {k for b in got for k in b["keys"]} == {"short"}
    assert dm.state.skipped["conversation_too_long"] >= 1


def test_long_and_silent_audio_is_quarantined_not_windowed():
    import numpy as np
    msgs = [{"role": "user", "content": user_content("what?", ["a"])}, {"role": "assistant", "content": "x"}]
    too_long = ingest_chat(item("k", msgs, [(np.random.default_rng(0).normal(0, 0.1, 16000 * 31), 16000)]))
    silent = ingest_chat(item("s", msgs, [(np.zeros(16000), 16000)]))
    assert isinstance(too_long, Quarantined) and too_long.reason == "too_long"
    assert "audio 1 of 1 (a): 31.0 s > 30.0 s" in too_long.detail
    assert isinstance(silent, Quarantined) and silent.reason == "silent"


def test_model_takes_text_only_and_multi_audio_rows(tmp_path):
    from qwen_audio_mt.data.collate import collate
    from qwen_audio_mt.data.chat_features import ChatFeaturizer
    from test_generate import tiny_model
    tok = Tokenizer.from_spec(TokenizerSpec())
    feat = ChatFeaturizer(tok, 80, False, 2048)
    two = {"key": "two", "task": "chat", "audios": [load_audio(_wav(0)), load_audio(_wav(9))],
           "messages": [{"role": "user", "content": user_content("Same digit?", ["audio0", "audio1"])},
                        {"role": "assistant", "content": "No."}]}
    text = {"key": "t", "task": "chat", "audios": [],
            "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}]}
    model = tiny_model().eval()
    for batch in ([feat(two), feat(text)], [feat(text)]):
        b = collate(batch, tok.end_id)
        out = model(b["input_ids"], b["attention_mask"], b["mel"], b["mel_lengths"], b["labels"])
        assert torch.isfinite(out.loss) and out.sample_tokens.tolist() == [
            sum(e.loss_mask) for e in batch]
