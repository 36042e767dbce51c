"""Chat conversations generated from task samples (qwen_audio_mt/data/chat_tasks.py) and the
instruction pools of tags/instructions.yaml (loaded by qwen_audio_mt/data/chat_pools.py), on the
embedded corpus's real sample metadata."""
from __future__ import annotations

import json
import re
import string
from pathlib import Path

import numpy as np
import pytest
import yaml

from qwen_audio_mt.conversation import Conversation, chat_strings, check
from qwen_audio_mt.data import chat_pools as cp
from qwen_audio_mt.data import chat_tasks as ct
from qwen_audio_mt.data.shards import iter_shard
from qwen_audio_mt.errors import UserError
from qwen_audio_mt.paths import tags_dir
from qwen_audio_mt.tasks import load_tasks

_AUDIO = re.compile(r"Audio (\d+):<audio>(.*?)</audio>\n")


@pytest.fixture(scope="module")
def pools():
    return cp.load_pools()


@pytest.fixture(scope="module")
def metas(small_corpus):
    """task -> its samples' metadata, over every shard of the corpus (all splits)."""
    root = Path(small_corpus) / "embedded"
    out: dict[str, list[dict]] = {}
    for shard in json.loads((root / "index.json").read_text())["shards"]:
        for _key, _flac, meta in iter_shard(root / shard["name"]):
            out.setdefault(meta["task"], []).append(meta)
    return out


def _question(spec: ct.ChatSpec, turn: int = 0) -> str:
    """A user turn's text without its audio prefix."""
    return _AUDIO.sub("", spec.messages[1 + 2 * turn]["content"])


def _valid(spec: ct.ChatSpec) -> Conversation:
    conv = Conversation.from_json(spec.messages, spec.key)
    check(conv)
    assert spec.messages[0] == {"role": "system", "content": chat_strings().system}
    assert conv.audios() == list(spec.audio_keys)
    for m in spec.messages:
        if m["role"] == "assistant":
            assert "<|" not in m["content"] and "<audio>" not in m["content"], m["content"]
    assert spec.meta["answer"] == spec.messages[-1]["content"]
    return conv


def test_every_registry_task_has_a_family_or_a_reason(pools):
    for task in load_tasks():
        if task.name in pools.skip:
            assert str(pools.skip[task.name]).strip(), f"{task.name} is skipped without a reason"
        else:
            assert pools.tasks[task.name]["family"] in pools.families, task.name


def test_every_task_of_the_corpus_becomes_a_valid_conversation(pools, metas):
    wanted = {t.name for t in load_tasks()} - set(pools.skip)
    assert wanted <= set(metas), f"corpus lacks {wanted - set(metas)}"
    rng = np.random.default_rng(0)
    for task, samples in metas.items():
        for meta in samples:
            spec = ct.single_turn(meta, rng, pools)
            _valid(spec)
            assert spec.audio_keys == (meta["key"],)
            assert spec.messages[1]["content"].startswith(f"Audio 1:<audio>{meta['key']}</audio>\n")
            assert spec.meta["task"] == task and spec.meta["kind"] in ("closed", "transcript", "open")
            if spec.meta["kind"] == "closed":
                assert spec.meta["label"] == str(meta[load_tasks().get(task).target.field])
                assert ct.label_in(spec.meta["answers"][0], spec.meta) == spec.meta["label"], spec.meta["answers"][0]
            if spec.meta["kind"] == "transcript":
                assert spec.meta["text"] == meta[load_tasks().get(task).target.field]
                assert spec.meta["text"] in spec.meta["answer"]
            more = ct.follow_up(meta, rng, pools)
            if more is not None:
                _valid(more)
                assert more.audio_keys == (meta["key"],) and len(more.messages) == 5
                assert "<audio>" not in more.messages[3]["content"]  # the audio is given once


def test_closed_answer_templates_name_exactly_their_label(pools):
    """Every answer phrasing, filled with every label of every closed task, is read back as that
    label: no template carries another label's words ("on", "normal", a digit)."""
    for task in load_tasks():
        fam = pools.families[pools.tasks[task.name]["family"]] if task.name in pools.tasks else None
        if not fam or fam["form"] != "closed":
            continue
        words = [ct.label_words(task, x, pools) for x in task.closed_labels]
        meta = {"labels": list(task.closed_labels), "label_words": words}
        for template in fam["answers"]:
            for label, w in zip(task.closed_labels, words):
                reply = template.format(label=w, thing=pools.tasks[task.name]["thing"])
                assert ct.label_in(reply, meta) == label, (task.name, reply)


def test_label_words_not_tags(pools, metas):
    reg = load_tasks()
    assert ct.label_words(reg.get("sound_event"), "alarm_beep", pools) == "alarm beep"
    assert ct.label_words(reg.get("chord_quality"), "dominant7", pools) == "dominant seventh"
    names = {x["code"]: x["name"] for x in yaml.safe_load((tags_dir() / "languages.yaml").read_text())["languages"]}
    for meta in metas["language_id"]:
        spec = ct.single_turn(meta, np.random.default_rng(1), pools)
        assert names[meta["audio_lang"]] in spec.meta["answer"]
    for meta in metas["speech_translation"]:
        spec = ct.single_turn(meta, np.random.default_rng(1), pools)
        lang = names[meta["text_lang"] or meta["audio_lang"]]
        assert lang in _question(spec) and f"<|{meta['text_lang']}|>" not in _question(spec)
    for meta in metas["sound_tagging"]:
        answer = ct.single_turn(meta, np.random.default_rng(2), pools).meta["answer"]
        assert "_" not in answer and all(x.replace("_", " ") in answer for x in meta["labels"])


def test_at_least_ten_phrasings_per_family_appear(pools, metas):
    by_family: dict[str, dict] = {}
    for task, samples in sorted(metas.items()):
        by_family.setdefault(pools.tasks[task]["family"], samples[0])
    assert set(by_family) == set(pools.families)
    rng = np.random.default_rng(3)
    for family, meta in by_family.items():
        seen = {_question(ct.single_turn(meta, rng, pools)) for _ in range(300)}
        assert len(seen) >= 10, (family, len(seen))


def test_word_timestamp_follow_up_carries_the_sample_times(pools, metas):
    rng = np.random.default_rng(4)
    checked = 0
    for meta in metas["word_timestamps"]:
        for _ in range(5):
            spec = ct.follow_up(meta, rng, pools)
            assert spec is not None
            _valid(spec)
            transcript = " ".join(w[0] for w in meta["words"])
            assert transcript in spec.meta["answers"][0] and spec.meta["text"] == transcript
            word = re.search(r'"(.+?)"', _question(spec, 1)).group(1)
            (start, end), = [(s, e) for w, s, e in meta["words"] if w == word]
            m = re.search(r"starts at ([\d.]+) seconds and ends at ([\d.]+) seconds", spec.meta["answer"])
            assert m and float(m.group(1)) == pytest.approx(start, abs=0.005), spec.meta["answer"]
            assert float(m.group(2)) == pytest.approx(end, abs=0.005)
            checked += 1
    assert checked >= 10


def test_why_and_caption_follow_ups(pools, metas):
    rng = np.random.default_rng(5)
    emotion = ct.follow_up(metas["emotion"][0], rng, pools)
    assert emotion.meta["kind"] == "closed" and metas["emotion"][0]["emotion"] in emotion.meta["answer"]
    assert _question(emotion, 1) in pools.fixed["follow_up.why.questions"]
    caption = metas["caption_clotho"][0]
    answers = {ct.follow_up(caption, rng, pools).meta["answer"] for _ in range(20)}
    assert any(f"{caption['duration']:.1f} seconds" in a for a in answers)
    assert any(pools.domain_words["sound"] in a for a in answers)
    assert ct.follow_up(metas["tempo"][0], rng, pools) is None  # no follow-up defined


def test_compare_numbers_audios_in_order_and_answers_right(pools, metas):
    rng = np.random.default_rng(6)
    modes = set()
    for task, samples in sorted(metas.items()):
        if pools.families[pools.tasks[task]["family"]]["form"] != "closed" or len(samples) < 3:
            continue
        field = load_tasks().get(task).target.field
        for k in (2, 3):
            for start in range(0, len(samples) - k + 1, k):
                group = samples[start:start + k]
                spec = ct.compare(group, rng, pools)
                _valid(spec)
                numbered = _AUDIO.findall(spec.messages[1]["content"])
                assert numbered == [(str(i + 1), m["key"]) for i, m in enumerate(group)]
                assert len(spec.messages) == 3  # one question about all audios, one answer
                labels = [str(m[field]) for m in group]
                answer, mode = spec.meta["answer"], spec.meta["mode"]
                modes.add(mode)
                if mode == "which":
                    n = int(re.search(r"Audio (\d)", answer).group(1))
                    assert labels.count(labels[n - 1]) == 1
                elif mode == "same":
                    assert answer.startswith("Yes") == (len(set(labels)) == 1), answer
                else:
                    assert all(f"Audio {i + 1}" in answer for i in range(k))
    assert modes == {"which", "same", "each"}
    with pytest.raises(ct.ChatSampleError):
        ct.compare([metas["emotion"][0], metas["gender"][0]], rng, pools)
    with pytest.raises(ct.ChatSampleError):
        ct.compare(metas["emotion"][:4], rng, pools)
    with pytest.raises(ct.ChatSampleError):
        ct.compare(metas["asr"][:2], rng, pools)


def _all_specs(metas, pools, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    out = []
    for task, samples in sorted(metas.items()):
        for meta in samples[:3]:
            out.append(ct.single_turn(meta, rng, pools).to_json())
            more = ct.follow_up(meta, rng, pools)
            out.append(more.to_json() if more else None)
    out += [ct.compare(metas["emotion"][:2], rng, pools).to_json()]
    out += [s.to_json() for s in ct.text_only(ct.corpus_texts(metas["asr"]), rng, pools)]
    return out


def test_same_seed_same_conversations(pools, metas):
    a, b = _all_specs(metas, pools, 7), _all_specs(metas, pools, 7)
    assert json.dumps(a, ensure_ascii=False) == json.dumps(b, ensure_ascii=False)
    assert a != _all_specs(metas, pools, 8)


def test_text_only_answers_are_right(pools, metas):
    texts = ct.corpus_texts(m for samples in metas.values() for m in samples)
    specs = ct.text_only(texts, np.random.default_rng(9), pools)
    assert len(specs) >= 20 and len({s.key for s in specs}) == len(specs)
    ops = set()
    for spec in specs:
        _valid(spec)
        assert spec.audio_keys == () and spec.meta["kind"] == "text"
        question, answer, op = spec.messages[1]["content"], spec.meta["answer"], spec.meta["task"][5:]
        text = max((t for t in texts if t in question), key=len)
        words = text.split()
        ops.add(op)
        expected = {"count_words": str(len(words)), "reverse_words": " ".join(words[::-1]),
                    "upper_case": text.upper(), "lower_case": text.lower(),
                    "first_word": words[0].strip(string.punctuation + "¿¡"),
                    "last_word": words[-1].strip(string.punctuation + "。？！")}[op]
        assert expected in answer, (op, text, answer)
        if op == "count_words":
            assert re.findall(r"\d+", answer) == [str(len(words))]
        if op.endswith("_case"):
            assert answer != text
    assert ops == set(cp.TEXT_OPS)
    assert ct.text_only(["猫在沙发上睡觉。", "one"], np.random.default_rng(0), pools) == []


def test_text_from_jsonl(tmp_path):
    path = tmp_path / "text.jsonl"
    lines = [{"messages": [{"role": "user", "content": "Say hi."}, {"role": "assistant", "content": "Hi."}]},
             {"key": "k2", "messages": [{"role": "system", "content": "Be brief."},
                                        {"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]}]
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n\n")
    a, b = ct.text_from_jsonl(path)
    assert a.messages[0]["content"] == chat_strings().system and a.meta["answer"] == "Hi."
    assert b.key == "k2" and b.messages[0]["content"] == "Be brief." and b.meta["answer"] == "4"
    _valid(a)
    path.write_text(json.dumps(lines[0]) + "\n" + json.dumps({"messages": [{"role": "assistant", "content": "x"}]}))
    with pytest.raises(UserError) as e:
        ct.text_from_jsonl(path)
    assert f"{path}:2:" in str(e.value) and "\n" not in str(e.value)


def _edit(spec: dict, key: str, value):
    node, keys = spec, key.split(".")
    for k in keys[:-1]:
        node = node[k]
    if value is None:
        del node[keys[-1]]
    else:
        node[keys[-1]] = value(node[keys[-1]]) if callable(value) else value


@pytest.mark.parametrize("key, value, words", [
    ("families.emotion.questions", lambda q: q[:9], ["families.emotion.questions", "at least 10"]),
    ("families.emotion.answers", lambda a: a + ["It is {colour}."], ["families.emotion.answers", "{colour}"]),
    ("families.gender.answers", lambda a: a + ["A voice."], ["families.gender.answers", "lacks {label}"]),
    ("families.question_answering.questions", lambda q: q[1:] + ["Answer it.", "Tell me."],
     ["families.question_answering.questions", "{question}"]),
    ("tasks.emotion", None, ["tasks.emotion", "skip"]),
    ("tasks.tempo.thing", None, ["tasks.tempo.thing"]),
    ("follow_up.word_time.answers", ["At {start} seconds."], ["follow_up.word_time.answers", "lacks {end}"]),
    ("compare.which", None, ["compare.which"]),
    ("text.count_words.questions", lambda q: q[:3], ["text.count_words.questions"]),
    ("families.tempo.form", "closed", ["families.tempo"]),
])
def test_broken_instructions_file_gives_one_line_naming_the_key(tmp_path, key, value, words):
    spec = yaml.safe_load((tags_dir() / "instructions.yaml").read_text(encoding="utf-8"))
    _edit(spec, key, value)
    path = tmp_path / "instructions.yaml"
    path.write_text(yaml.safe_dump(spec, allow_unicode=True), encoding="utf-8")
    with pytest.raises(cp.InstructionError) as e:
        cp.load_pools(path)
    msg = str(e.value)
    assert isinstance(e.value, UserError) and "\n" not in msg and msg.startswith(str(path))
    assert all(w in msg for w in words), msg


def test_unreadable_instructions_file(tmp_path):
    path = tmp_path / "instructions.yaml"
    path.write_text("families: [unclosed\n")
    with pytest.raises(cp.InstructionError) as e:
        cp.load_pools(path)
    assert str(path) in str(e.value) and "\n" not in str(e.value)
