"""Qwen-Audio-Chat's ChatML: the official sample parses, renders to the released ids token by
token, learns only the assistant's answers, and is cut at turn boundaries."""
import pytest
from conftest import need_data

from qwen_audio_mt.conversation import (Conversation, ConversationError, ConversationTooLong, Message,
                                        check, parse_chatml, render_conversation, render_prompt,
                                        to_chatml, user_content)

# Released ids (ARCHITECTURE.md: Qwen-Audio's layout over qwen.tiktoken)
IM_START, IM_END, AUDIO_START, PLACEHOLDER, AUDIO_END = 151644, 151645, 155163, 151851, 155164
ANSWER = 'The person says: "mister quilter is the apostle of the middle classes and we are glad to welcome his gospel".'


@pytest.fixture(scope="module")
def sample_lines() -> list[str]:
    return need_data("qwen_audio", "sft_sample.txt").read_text(encoding="utf-8").splitlines()


def test_every_line_of_the_official_sample_parses(sample_lines):
    convs = [parse_chatml(line, f"line {n}") for n, line in enumerate(sample_lines, 1)]
    assert [[m.role for m in c.messages] for c in convs] == [
        ["system", "user", "assistant"], ["system", "user", "assistant", "user", "assistant"],
        ["system", "user", "assistant"]]
    assert convs[0].audios() == ["assets/audio/1272-128104-0000.flac"]
    assert convs[2].audios() == ["assets/audio/sound_effect.flac", "assets/audio/dog_bark_y1589.mp3"]
    assert convs[0].messages[0].content == "You are a helpful assistant."
    assert convs[0].messages[2].content == ANSWER
    # line 2's last turn has no <|im_end|> and no newline before its second <|im_start|>
    assert convs[1].messages[4].content.endswith("ends at <|3.26|> seconds.")
    assert parse_chatml(to_chatml(convs[1])) == Conversation(convs[1].messages)


def test_official_first_line_token_by_token(sample_lines, qwen_tok):
    conv = parse_chatml(sample_lines[0])
    out = render_conversation(conv, qwen_tok, n_audio=[4])
    enc, nl = qwen_tok.encode, qwen_tok.encode("\n")
    expected = ([IM_START, *enc("system"), *nl, *enc("You are a helpful assistant."), IM_END, *nl,
                 IM_START, *enc("user"), *nl, *enc("Audio 1: "), AUDIO_START, *[PLACEHOLDER] * 4, AUDIO_END,
                 *enc("\nwhat does the person say?"), IM_END, *nl,
                 IM_START, *enc("assistant"), *nl])
    answer = [*enc(ANSWER), IM_END]
    assert out.ids == expected + answer
    assert out.loss_mask == [0] * len(expected) + [1] * len(answer)
    assert (out.messages, out.first_audio, out.audios) == (3, 0, 1)
    # the BPE pieces are Qwen's: "system" and "\n" are single tokens of qwen.tiktoken
    assert (enc("system"), nl, enc("assistant")) == ([8948], [198], [77091])


def test_loss_only_on_assistant_turns_of_two_exchanges(sample_lines, qwen_tok):
    conv = parse_chatml(sample_lines[1])
    out = render_conversation(conv, qwen_tok, n_audio=[3])
    learned = [i for i, m in zip(out.ids, out.loss_mask) if m]
    enc = qwen_tok.encode
    second = 'The word "middle classes" starts at <|2.33|> seconds and ends at <|3.26|> seconds.'
    # time tags in an answer are text here (Qwen-Audio-Chat writes them in its replies as text)
    assert learned == [*enc(ANSWER), IM_END, *enc(second), IM_END]
    assert PLACEHOLDER not in learned and IM_START not in learned


def test_cut_at_a_turn_boundary_and_first_exchange_too_long(sample_lines, qwen_tok):
    conv = parse_chatml(sample_lines[1])
    whole = render_conversation(conv, qwen_tok, n_audio=[3])
    first = render_conversation(Conversation(conv.messages[:3]), qwen_tok, n_audio=[3])
    cut = render_conversation(conv, qwen_tok, n_audio=[3], max_tokens=len(whole.ids) - 1)
    assert cut.ids == first.ids and cut.loss_mask == first.loss_mask and cut.messages == 3
    assert render_conversation(conv, qwen_tok, n_audio=[3], max_tokens=len(whole.ids)).ids == whole.ids
    with pytest.raises(ConversationTooLong, match="first exchange alone does not fit the 20-token window"):
        render_conversation(conv, qwen_tok, n_audio=[3], max_tokens=20)


def test_prompt_ends_with_assistant_header_and_drops_oldest_exchanges(sample_lines, qwen_tok):
    conv = parse_chatml(sample_lines[1])
    asking = Conversation(conv.messages[:4])  # system, user (audio), assistant, user
    p = render_prompt(asking, qwen_tok, n_audio=[5])
    tail = [*qwen_tok.encode("\n"), IM_START, *qwen_tok.encode("assistant"), *qwen_tok.encode("\n")]
    assert p.ids[-len(tail):] == tail and not any(p.loss_mask)
    assert p.ids.count(PLACEHOLDER) == 5 and (p.messages, p.first_audio, p.audios) == (4, 0, 1)
    short = render_prompt(asking, qwen_tok, n_audio=[5], max_tokens=len(p.ids) - 1)
    # the first exchange (and its audio) went; system and the last question stayed
    assert (short.messages, short.first_audio, short.audios) == (2, 1, 0)
    assert PLACEHOLDER not in short.ids and short.ids[:3] == p.ids[:3]
    with pytest.raises(ConversationTooLong, match="last user turn alone needs"):
        render_prompt(asking, qwen_tok, n_audio=[5], max_tokens=5)


def test_user_content_is_from_list_format():
    assert user_content("compare them", ["a.wav", "b.wav"]) == \
        "Audio 1:<audio>a.wav</audio>\nAudio 2:<audio>b.wav</audio>\ncompare them"
    assert user_content("and this?", ["c.wav"], first=3).startswith("Audio 3:<audio>c.wav</audio>\n")


@pytest.mark.parametrize("text, error", [
    ("hello", "does not start with <|im_start|>"),
    ("<|im_start|>robot\nhi<|im_end|>", "unknown role 'robot'"),
    ("<|im_start|>user\nhi<|im_end|>\n<|im_start|>user\nhi again<|im_end|>", "turn 2 is 'user', expected 'assistant'"),
    ("<|im_start|>user\nhi<|im_end|>", "ends with a user turn"),
    ("<|im_start|>user hi<|im_end|>", "turn 1 has no role line"),
    ("<|im_start|>user\nhi<|im_end|><|im_start|>assistant\n<audio>a.wav</audio><|im_end|>",
     "an audio in the assistant turn"),
    ("<|im_start|>user\nhi<|im_end|> stray <|im_start|>assistant\nok<|im_end|>", "text between turns after turn 1"),
])
def test_bad_conversations_name_the_reason(text, error):
    with pytest.raises(ConversationError, match=error.replace("|", r"\|").replace("(", r"\(")):
        parse_chatml(text, "line 7")


def test_messages_json_round_trip_and_audio_refs_replaced():
    conv = Conversation.from_json([{"role": "user", "content": user_content("what is it?", ["x.flac"])},
                                   {"role": "assistant", "content": "A dog."}], key="k")
    assert Conversation.from_json(conv.to_json(), "k") == conv
    assert conv.with_audios(["audio.0"]).audios() == ["audio.0"]
    with pytest.raises(ConversationError, match="k: a message needs 'role' and 'content'"):
        Conversation.from_json([{"role": "user"}], key="k")
    check(Conversation((Message("user", "hi"),)), complete=False)
