"""`shards chat`'s builder: conversation shards from task shards (ours, or Audio-FLAN JSONL after
its converter), deterministic, resumable, with tar-safe keys and every family present."""
import json
import tarfile

from conftest import need_data

from qwen_audio_mt.conversation import Conversation
from qwen_audio_mt.data.build import build
from qwen_audio_mt.data.chat_build import MAX_KEY, TaskChatConfig, plan_task_chats
from qwen_audio_mt.data.convert import formats
from qwen_audio_mt.data.shards import ShardConfig

SMALL = TaskChatConfig(per_task={"train": 3, "valid": 0, "test": 1}, text={"train": 6, "valid": 0, "test": 2})


def members(folder, name_part: str) -> list[dict]:
    out = []
    for tar in sorted(folder.glob(f"*{name_part}*.tar")):
        with tarfile.open(tar) as t:
            out += [json.loads(t.extractfile(m).read()) for m in t if m.name.endswith(".json")]
    return out


def test_families_counts_and_determinism(small_corpus, tmp_path):
    src = small_corpus / "embedded"
    tasks = json.loads((src / "index.json").read_text())["tasks"]
    index = build(plan_task_chats([src], SMALL), tmp_path / "a", ShardConfig(workers=1), progress=False)
    assert set(index["tasks"]) == {"chat_single", "chat_followup", "chat_compare", "chat_text"}
    assert index["tasks"]["chat_single"]["splits"] == {"train": 3 * len(tasks), "test": len(tasks)}
    assert index["tasks"]["chat_text"]["splits"] == {"train": 6, "test": 2}
    assert index["quarantine"]["total"] == 0
    again = build(plan_task_chats([src], SMALL), tmp_path / "b", ShardConfig(workers=2), progress=False)
    assert [s["sha256"] for s in again["shards"]] == [s["sha256"] for s in index["shards"]]
    for meta in members(tmp_path / "a", "chat_compare"):
        conv = Conversation.from_json(meta["messages"])
        assert conv.audios() == [f"audio{i}" for i in range(len(meta["durations"]))]
        assert 2 <= len(meta["durations"]) <= 3 and len(meta["key"]) <= MAX_KEY
        assert "Audio 1:<audio>audio0</audio>\nAudio 2:<audio>audio1</audio>" in conv.messages[1].content
    single = members(tmp_path / "a", "test-chat_single")
    assert {m["base_task"] for m in single} == set(tasks)
    closed = [m for m in single if m["kind"] == "closed"]
    assert closed and all(m["label_words"] and m["label"] in m["labels"] for m in closed)


def test_audioflan_jsonl_becomes_single_turn_chats(tmp_path):
    """Audio-FLAN lines -> the existing converter -> task shards -> chat_single conversations
    whose user turn is the instruction (+ input) and whose answer is the output."""
    clip = need_data("fsdd", "3_jackson_0.wav")
    rows = [{"instruction": "How many syllables does the speaker say?", "input": "", "output": "One.",
             "audio_path": str(clip), "domain": "speech", "split": "train", "uuid": "a1"},
            {"instruction": "What digit is spoken?", "input": "Answer with a word.", "output": "three",
             "audio_path": str(clip), "domain": "speech", "split": "test", "uuid": "a2"}]
    (tmp_path / "flan.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    plan = formats()["audioflan"].plan(tmp_path / "flan.jsonl")
    build(plan.streams, tmp_path / "flan", ShardConfig(workers=1), plan.source, progress=False)
    cfg = TaskChatConfig(per_task={"train": 5, "valid": 0, "test": 5}, text={"train": 0, "valid": 0, "test": 0})
    build(plan_task_chats([tmp_path / "flan"], cfg), tmp_path / "chat", ShardConfig(workers=1), progress=False)
    by_split = {m["split"]: m for m in members(tmp_path / "chat", "chat_single")}
    test = Conversation.from_json(by_split["test"]["messages"])
    asked = test.messages[1].content  # the instruction inside one of the family's phrasings
    assert asked.startswith("Audio 1:<audio>audio0</audio>\n") and "What digit is spoken?\nAnswer with a word." in asked
    assert test.messages[2].content.endswith("three")  # the output, maybe inside an answer phrasing
    assert Conversation.from_json(by_split["train"]["messages"]).messages[2].content.endswith("One.")
