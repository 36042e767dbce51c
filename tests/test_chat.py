"""Chat: `qwen-audio-mt chat` scripted and typed, ChatSession, reply_batch, on a tiny random model
exported to a temporary folder. Every turn's model input is checked against render_prompt and
the clips' own encodings, as the generator received it."""
from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch

from conftest import need_data
from qwen_audio_mt import chat as chat_mod
from qwen_audio_mt import chat_cli
from qwen_audio_mt.chat import ChatAudioError, ChatError, ChatSession, reply_batch
from qwen_audio_mt.cli import main
from qwen_audio_mt.conversation import (
    ChatRenderer,
    Conversation,
    ConversationTooLong,
    Message,
    chat_strings,
    render_prompt,
    user_content,
)
from qwen_audio_mt.data.features import log_mel
from qwen_audio_mt.data.ingest import load_audio
from qwen_audio_mt.generate import GenerationConfig, Generator, encode_clip

MAX_NEW = 6
QUESTIONS = ["what does the speaker say?", "compare audio 1 and audio 2", "which one is longer?"]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory):
    """A seeded tiny random model, untied with a large init so replies vary with the input."""
    from qwen_audio_mt.model.builders import LLMConfig, ModelConfig, build_model
    from qwen_audio_mt.model.encoder import EncoderConfig
    from qwen_audio_mt.model.export import export
    torch.manual_seed(0)
    cfg = ModelConfig(EncoderConfig(n_state=64, n_head=2, n_layer=1),
                      LLMConfig(config=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                                            num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=False,
                                            initializer_range=0.3)))
    return export(build_model(cfg), cfg, tmp_path_factory.mktemp("chat") / "export")


@pytest.fixture(scope="module")
def loaded(export_dir):
    from qwen_audio_mt.model.export import load_model
    return load_model(export_dir)


@pytest.fixture(scope="module")
def wavs():
    """Two real files: an 8-kHz FSDD wav and a LibriSpeech flac."""
    return str(need_data("fsdd", "3_jackson_0.wav")), str(need_data("qwen_audio", "1272-128104-0000.flac"))


@pytest.fixture(scope="module")
def clips(loaded, wavs):
    """Each file's LLM positions, encoded alone: what its audio span must carry."""
    model, _ = loaded
    out = []
    for w in wavs:
        mel, _, n = log_mel(load_audio(w), model.encoder.cfg.n_mels)
        out.append(encode_clip(model, mel))
    return out


@pytest.fixture
def seen(monkeypatch):
    """The requests every generate call received."""
    calls = []

    class Recording(Generator):
        def generate(self, requests):
            calls.append(list(requests))
            return super().generate(requests)
    monkeypatch.setattr(chat_mod, "Generator", Recording)
    return calls


def script_lines(wavs, missing):
    a, b = wavs
    return [f"/audio {a}", QUESTIONS[0], "", f"/audio {b}", QUESTIONS[1], f"/audio {missing}", QUESTIONS[2]]


def run(capsys, export_dir, *args):
    rc = main(["chat", "--model", str(export_dir), "--max-new-tokens", str(MAX_NEW), "--threads", "1", *args])
    out = capsys.readouterr()
    return rc, out.out, out.err


def spans(ids, tok):
    """Placeholder counts of the prompt's audio spans, in order."""
    start, ph = tok.role_id("audio_start"), tok.role_id("audio_placeholder")
    return [next(j for j in range(i + 1, len(ids)) if ids[j] != ph) - i - 1 for i, t in enumerate(ids) if t == start]


def expected_prompt(tok, wavs, clips, replies, turn, max_tokens=None):
    """render_prompt of the conversation up to `turn` (0-based), replies joined as the history."""
    audios_at = [[wavs[0]], [wavs[1]], []]
    msgs, first = [Message("system", chat_strings().system)], 1
    for k in range(turn + 1):
        msgs.append(Message("user", user_content(QUESTIONS[k], audios_at[k], first)))
        first += len(audios_at[k])
        if k < turn:
            msgs.append(Message("assistant", replies[k]))
    sizes = [len(c) for c in clips[: first - 1]]
    return render_prompt(Conversation(tuple(msgs)), ChatRenderer(tok), sizes, max_tokens)


def test_defaults_agree():
    assert (chat_cli.DEFAULT_WINDOW, chat_cli.DEFAULT_MAX_NEW_TOKENS) == (chat_mod.DEFAULT_WINDOW,
                                                                         chat_mod.DEFAULT_MAX_NEW_TOKENS)


def test_scripted_chat_two_audios_three_turns(capsys, export_dir, loaded, wavs, clips, seen, tmp_path):
    """Each turn's input holds the audios attached so far, in order; replies join the history; a
    missing file is one line and the next turn still answers."""
    missing = tmp_path / "no_such.wav"
    (tmp_path / "s.txt").write_text("\n".join(script_lines(wavs, missing)) + "\n")
    rc, out, err = run(capsys, export_dir, "--script", str(tmp_path / "s.txt"), "--json")
    assert rc == 2  # a script with a bad line ends with 2, after its last line
    assert err.splitlines() == [f"qwen-audio-mt: error: {missing}: missing file"]
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["turn"] for r in rows] == [1, 2, 3]
    assert [r["audios"] for r in rows] == [[wavs[0]], list(wavs), list(wavs)]
    assert [r["attached"] for r in rows] == [[wavs[0]], [wavs[1]], []]
    assert all(r["dropped"] == 0 and len(r["tokens"]) <= MAX_NEW for r in rows)
    tok = loaded[1].tok
    replies = [r["reply"] for r in rows]
    assert len(seen) == 3 and all(len(c) == 1 for c in seen)
    for turn, (req,) in enumerate(seen):
        held = clips[: min(turn + 1, 2)]
        assert spans(req.ids, tok) == [len(c) for c in held]
        assert req.ids == expected_prompt(tok, wavs, clips, replies, turn).ids
        torch.testing.assert_close(req.audio, torch.cat(held), atol=1e-5, rtol=1e-4)
    assert replies[0] != replies[1]  # the input reaches the reply


def test_window_drops_the_oldest_whole_turn(capsys, export_dir, loaded, wavs, clips, seen, tmp_path):
    (tmp_path / "s.txt").write_text("\n".join(script_lines(wavs, tmp_path / "gone.wav")) + "\n")
    _, out, _ = run(capsys, export_dir, "--script", str(tmp_path / "s.txt"), "--json")
    full = [json.loads(line) for line in out.splitlines()]
    window = len(seen[2][0].ids) - 1  # the last prompt no longer fits whole
    seen.clear()
    _, out, _ = run(capsys, export_dir, "--script", str(tmp_path / "s.txt"), "--json", "--window", str(window))
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["dropped"] for r in rows] == [0, 0, 1]
    assert [r["reply"] for r in rows[:2]] == [r["reply"] for r in full[:2]]
    assert rows[2]["audios"] == [wavs[1]]  # exchange 1 and its audio left the window
    tok = loaded[1].tok
    req = seen[2][0]
    want = expected_prompt(tok, wavs, clips, [r["reply"] for r in rows], 2, window)
    assert want.messages == 4 and want.first_audio == 1  # system + exchange 2 + the new question
    assert req.ids == want.ids and len(req.ids) <= window and spans(req.ids, tok) == [len(clips[1])]
    torch.testing.assert_close(req.audio, clips[1], atol=1e-5, rtol=1e-4)
    text = tok.decode([t for t in req.ids if not tok.is_special(t)])
    assert QUESTIONS[0] not in text and QUESTIONS[1] in text and QUESTIONS[2] in text


def test_session_ask_equals_the_cli(capsys, export_dir, wavs, tmp_path):
    """Text output: the replies, one per line; ChatSession.ask gives the same for the same script."""
    missing = tmp_path / "absent.flac"
    (tmp_path / "s.txt").write_text("\n".join(script_lines(wavs, missing)) + "\n")
    rc, out, err = run(capsys, export_dir, "--script", str(tmp_path / "s.txt"))
    session = ChatSession.load(export_dir, generation=GenerationConfig(max_new_tokens=MAX_NEW))
    first = session.ask(QUESTIONS[0], audio=[wavs[0]])
    second = session.ask(QUESTIONS[1], audio=[wavs[1]])
    before = session.history
    with pytest.raises(ChatAudioError) as e:
        session.ask(QUESTIONS[2], audio=[missing])
    assert str(e.value) == f"{missing}: missing file" and session.history == before and len(session.audios) == 2
    third = session.ask(QUESTIONS[2])
    assert out == f"{first}\n{second}\n{third}\n" and rc == 2 and len(err.splitlines()) == 1
    roles = [m.role for m in session.history.messages]
    assert roles == ["system"] + ["user", "assistant"] * 3
    assert [m.content for m in session.history.messages[2::2]] == [first, second, third]


def test_typed_chat_reset_save_quit(capsys, export_dir, wavs, seen, tmp_path, monkeypatch):
    saved = tmp_path / "conv.json"
    lines = [f"/audio {wavs[0]}", "hello", f"/save {saved}", "/frobnicate", f"/audio {wavs[1]}", "/reset",
             "hello again", "/quit", "never asked"]
    monkeypatch.setattr("sys.stdin", io.StringIO("\n".join(lines) + "\n"))
    rc, out, err = run(capsys, export_dir, "--json")
    rows = [json.loads(line) for line in out.splitlines()]
    assert rc == 0 and len(rows) == 2 and err.splitlines() == [
        "qwen-audio-mt: error: unknown command '/frobnicate' (/audio PATH, /reset, /save FILE, /quit)"]
    assert [(r["turn"], r["audios"]) for r in rows] == [(1, [wavs[0]]), (1, [])]  # /reset drops the pending audio
    assert seen[1][0].audio is None
    doc = json.loads(saved.read_text())
    assert [m["role"] for m in doc["messages"]] == ["system", "user", "assistant"]
    assert doc["messages"][1]["content"] == f"Audio 1:<audio>{wavs[0]}</audio>\nhello"
    assert doc["messages"][2]["content"] == rows[0]["reply"]
    assert doc["audios"][0]["ref"] == wavs[0] and doc["audios"][0]["windows"] == 1
    assert Conversation.from_json(doc["messages"]).audios() == [wavs[0]]


def test_reply_batch_sizes_agree_and_ask_is_the_same_path(loaded, wavs):
    model, renderer = loaded
    a, b = (load_audio(w) for w in wavs)
    sys_msg = Message("system", chat_strings().system)

    def conv(*msgs):
        return Conversation((sys_msg, *msgs))
    convs = [conv(Message("user", "tell me a joke")),
             conv(Message("user", user_content("what is said?", ["a"]))),
             conv(Message("user", user_content("compare them", ["a", "b"]))),
             conv(Message("user", user_content("what is said?", ["a"])), Message("assistant", "three."),
                  Message("user", user_content("and here?", ["b"], first=2))),
             conv(Message("user", user_content("summarise", ["long"])))]
    audios = [[], [a], [a, b], [a, b], [np.tile(b, 12)]]
    one = reply_batch(model, renderer, convs, audios, GenerationConfig(max_new_tokens=MAX_NEW, batch_size=1))
    four = reply_batch(model, renderer, convs, audios, GenerationConfig(max_new_tokens=MAX_NEW, batch_size=4))
    assert one == four and len(set(one)) > 1
    session = ChatSession(model, renderer, generation=GenerationConfig(max_new_tokens=MAX_NEW))
    assert session.ask("what is said?", audio=[a]) == one[1]


def test_long_audio_is_windows_under_one_label(loaded, wavs, seen):
    """65 s: three 30-s windows (30, 30, 5 s), each its own <audio> span, under "Audio 1:"."""
    model, renderer = loaded
    b = load_audio(wavs[1])
    long = np.tile(b, int(np.ceil(65 * 16000 / len(b))))[: 65 * 16000]
    session = ChatSession(model, renderer, generation=GenerationConfig(max_new_tokens=MAX_NEW))
    session.ask("what happens?", audio=[long])
    (req,) = seen[0]
    n_tail = log_mel(long[60 * 16000:], model.encoder.cfg.n_mels)[2]
    assert spans(req.ids, renderer.tok) == [750, 750, n_tail] and len(req.audio) == 1500 + n_tail
    text = renderer.tok.decode([t for t in req.ids if not renderer.tok.is_special(t)])
    assert text.count("Audio") == 1
    assert session.history.messages[1].content == "Audio 1:<audio>array</audio>\nwhat happens?"
    assert session.audios[0].sizes == [750, 750, n_tail] and session.audios[0].seconds == 65.0


def test_errors_leave_the_session_unchanged(loaded, wavs, tmp_path):
    model, renderer = loaded
    session = ChatSession(model, renderer, generation=GenerationConfig(max_new_tokens=MAX_NEW), max_tokens=40)
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio at all")
    for audio, reason in ((tmp_path / "nope.wav", "missing file"), (bad, "undecodable")):
        with pytest.raises(ChatAudioError) as e:
            session.ask("hi", audio=[audio])
        assert str(e.value).startswith(f"{audio}: {reason}") and "\n" not in str(e.value)
    with pytest.raises(ChatError):
        session.ask("what is <audio>x.wav</audio>?")
    with pytest.raises(ConversationTooLong):  # a 10-s clip's 250 placeholders in a 40-token window
        session.ask("hi", audio=[wavs[1]])
    assert session.history.messages == (Message("system", chat_strings().system),) and session.audios == []
    assert session.ask("hi") == session.history.messages[-1].content
    session.reset()
    assert len(session.history.messages) == 1 and session.last is None


def test_a_question_too_long_for_the_window_is_dropped_with_its_audio(capsys, export_dir, wavs, tmp_path):
    (tmp_path / "s.txt").write_text(f"/audio {wavs[1]}\nwhat is said?\nhello\n")
    rc, out, err = run(capsys, export_dir, "--script", str(tmp_path / "s.txt"), "--json", "--window", "60")
    (line,) = err.splitlines()
    assert rc == 2 and line.startswith("qwen-audio-mt: error: chat: the last user turn alone needs") and "> 60" in line
    (row,) = [json.loads(x) for x in out.splitlines()]
    assert (row["turn"], row["question"], row["audios"]) == (1, "hello", [])
