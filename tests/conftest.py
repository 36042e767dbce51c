"""Shared fixtures: tokenizers on both bases, the renderer, and the shared real-data root; the
fault table's marker."""
from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path

import pytest
import torch

from qwen_audio_mt.paths import data_available, data_missing_reason, data_root
from qwen_audio_mt.render import Renderer
from qwen_audio_mt.tokenizer import Tokenizer, TokenizerSpec

QWEN_RANKS = ("qwen_audio", "qwen.tiktoken")


def need_data(*parts: str):
    """Skip (with the reason) when a file of the shared data root is missing."""
    if not data_available(*parts):
        pytest.skip(data_missing_reason(*parts))
    return data_root().joinpath(*parts)


@pytest.fixture(scope="session")
def whisper_tok() -> Tokenizer:
    return Tokenizer.from_spec(TokenizerSpec())


@pytest.fixture(scope="session")
def qwen_tok() -> Tokenizer:
    return Tokenizer.from_spec(TokenizerSpec(base=str(need_data(*QWEN_RANKS))))


@pytest.fixture(scope="session")
def renderer(whisper_tok) -> Renderer:
    return Renderer(whisper_tok)


@pytest.fixture(scope="session")
def qwen_renderer(qwen_tok) -> Renderer:
    return Renderer(qwen_tok)


def fsdd_manifest_lines(limit: int = 600) -> list[str]:
    """Manifest lines for FSDD digits and speakers; recording index < 5 is the test split."""
    import json
    lines = []
    for path in sorted(need_data("fsdd").glob("*.wav"))[:limit]:
        digit, speaker, idx = path.stem.split("_")
        split = "test" if int(idx) < 5 else "train"
        lines.append(json.dumps({"audio": str(path), "task": "digit_recognition", "audio_lang": "en",
                                 "text_itn": digit, "split": split}))
        if int(idx) % 4 == 0:  # fewer speaker items: an uneven mixture to sample from
            lines.append(json.dumps({"audio": str(path), "task": "fsdd_speaker", "audio_lang": "en",
                                     "speaker": speaker, "split": split, "key": f"{path.stem}_spk"}))
    return lines


@pytest.fixture(scope="session")
def fsdd_shards(tmp_path_factory):
    """A small real-speech shard folder (2 tasks, train + test, several shards per task)."""
    from qwen_audio_mt.data.build import build
    from qwen_audio_mt.data.convert import manifest
    from qwen_audio_mt.data.shards import ShardConfig
    root = tmp_path_factory.mktemp("fsdd_shards")
    (root / "m.jsonl").write_text("\n".join(fsdd_manifest_lines()) + "\n")
    plan = manifest.plan(root / "m.jsonl")
    build(plan.streams, root / "shards", ShardConfig(workers=2, max_samples=100), plan.source, progress=False)
    return root / "shards"


@pytest.fixture(scope="session")
def small_corpus(tmp_path_factory):
    """The embedded corpus at scale 0.05 (8 train, 1 valid, 2 test items per task; more train
    items for closed-label tasks, per tags/corpus/counts.yaml) in
    ROOT/embedded; returns ROOT, to pass as `paths.shards=ROOT` to training configs."""
    from qwen_audio_mt.data.corpus.build import CorpusConfig, build_corpus
    from qwen_audio_mt.data.shards import ShardConfig
    root = tmp_path_factory.mktemp("shards")
    build_corpus(root / "embedded", CorpusConfig(scale=0.05), ShardConfig(workers=2), progress=False)
    return root


@pytest.fixture(scope="session")
def asr_shards(tmp_path_factory):
    """Real FSDD clips as an open task (asr: the digit's word as the transcript)."""
    from qwen_audio_mt.data.build import build
    from qwen_audio_mt.data.convert import manifest
    from qwen_audio_mt.data.shards import ShardConfig
    words = "zero one two three four five six seven eight nine".split()
    paths = sorted(need_data("fsdd").glob("*.wav"))[::150][:16]
    lines = [json.dumps({"audio": str(p), "task": "asr", "audio_lang": "en", "split": "test",
                         "text": f"{words[int(p.stem.split('_')[0])]}."}) for p in paths]
    root = tmp_path_factory.mktemp("asr_shards")
    (root / "m.jsonl").write_text("\n".join(lines) + "\n")
    plan = manifest.plan(root / "m.jsonl")
    build(plan.streams, root / "shards", ShardConfig(workers=1, max_samples=6), plan.source, progress=False)
    return root / "shards", len(lines)


def tiny_model_config(layers: int = 1):
    """The smallest AudioLM worth running: a 1-layer encoder and LLM, 64 wide (random init)."""
    from qwen_audio_mt.model.builders import LLMConfig, ModelConfig
    from qwen_audio_mt.model.encoder import EncoderConfig
    return ModelConfig(EncoderConfig(n_state=64, n_head=2, n_layer=1),
                       LLMConfig(config=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=layers,
                                             num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=True)))


def _rows(tok) -> int:
    return -(-tok.n_vocab // 64) * 64


def save_tiny_qwen2_audio(folder, tok, seed: int = 0):
    """A random Qwen2AudioForConditionalGeneration as `save_pretrained` writes it, with a
    tokenizer_config.json naming <|audio_bos|>/<|audio_eos|> on two of our extra rows, as the
    release does (its <|AUDIO|> is not our placeholder: the import must not care)."""
    import json

    import torch
    from transformers import Qwen2AudioConfig, Qwen2AudioForConditionalGeneration
    torch.manual_seed(seed)
    conf = Qwen2AudioConfig(
        audio_config=dict(model_type="qwen2_audio_encoder", d_model=16, encoder_attention_heads=2, encoder_ffn_dim=64,
                          encoder_layers=2, num_mel_bins=128, max_source_positions=1500),
        text_config=dict(model_type="qwen2", vocab_size=_rows(tok), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=4096, tie_word_embeddings=False),
        audio_token_index=tok.token_id("<|extra_0|>"))
    model = Qwen2AudioForConditionalGeneration(conf).eval()
    model.save_pretrained(folder)
    names = {"<|audio_bos|>": "<|extra_1|>", "<|audio_eos|>": "<|extra_2|>", "<|endoftext|>": "<|endoftext|>"}
    decoder = {str(tok.token_id(ours)): {"content": theirs, "special": True} for theirs, ours in names.items()}
    (folder / "tokenizer_config.json").write_text(json.dumps({"added_tokens_decoder": decoder}))
    return model


@pytest.fixture(scope="session")
def tiny_export(tmp_path_factory):
    """An export folder of a seeded tiny random model (what a training run writes to RUN/export)."""
    import torch
    from qwen_audio_mt.model.builders import build_model
    from qwen_audio_mt.model.export import export
    torch.manual_seed(0)
    cfg = tiny_model_config()
    return export(build_model(cfg), cfg, tmp_path_factory.mktemp("run") / "export")


@pytest.fixture(scope="session")
def sft_roots(small_corpus, tiny_export, tmp_path_factory):
    """(SHARDS, OUTPUT): SFT conversations from the small corpus in SHARDS/chat, and tiny_export
    as a pretraining run's export in OUTPUT/train/RUN/export (what init_from=latest finds)."""
    from qwen_audio_mt.data.build import build
    from qwen_audio_mt.data.chat_build import TaskChatConfig, plan_task_chats
    from qwen_audio_mt.data.shards import ShardConfig
    shards, output = tmp_path_factory.mktemp("sft_shards"), tmp_path_factory.mktemp("sft_outputs")
    cfg = TaskChatConfig(per_task={"train": 4, "valid": 1, "test": 1}, text={"train": 10, "valid": 0, "test": 2})
    build(plan_task_chats([small_corpus / "embedded"], cfg), shards / "chat", ShardConfig(workers=1), progress=False)
    (output / "train" / "pretrained").mkdir(parents=True)
    (output / "train" / "pretrained" / "export").symlink_to(tiny_export)
    return shards, output


# The fault-injection suite (tests/faults/): each test's `@pytest.mark.fault(fault=..., outcome=...,
# lost=...)` is a row of README's fault table (tests/faults/fault_table.py renders it, test_table.py
# checks it). Kept here, not in a tests/faults/conftest.py: a second module named `conftest`
# would shadow this one for the tests that `from conftest import ...`.
FAULT_RESULTS = Path(__file__).parent / "faults" / ".results.json"  # for tests/faults/fault_table.py


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", "fault(fault, outcome, lost): a row of README's fault table")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    mark = item.get_closest_marker("fault")
    if mark is None or report.when != "call" and not (report.when == "setup" and report.skipped):
        return
    item.config.stash.setdefault(_ROWS, {})[item.nodeid] = {**mark.kwargs, "result": report.outcome}


_ROWS = pytest.StashKey[dict]()


def pytest_sessionfinish(session, exitstatus) -> None:
    rows = session.config.stash.get(_ROWS, {})
    if rows:
        with open(FAULT_RESULTS.with_suffix(".lock"), "w") as lock:  # parallel workers merge in turn
            fcntl.flock(lock, fcntl.LOCK_EX)
            old = json.loads(FAULT_RESULTS.read_text()) if FAULT_RESULTS.exists() else {}
            FAULT_RESULTS.write_text(json.dumps({**old, **rows}, indent=1, sort_keys=True) + "\n")


# Parallel workers (pytest-xdist, `make test`'s -n): the long learning check is handed out first,
# so the other worker works through the rest beside it, and every process computes with one
# thread: two workers with 2 spinning intra-op threads each on 2 cores run slower than 1 each.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


def pytest_collection_modifyitems(config, items) -> None:
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)  # stable: the rest keep their order
