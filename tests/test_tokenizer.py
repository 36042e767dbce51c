import json
import pickle

import pytest
import whisper.tokenizer

from qwen_audio_mt.tokenizer import Tokenizer, TokenizerError, TokenizerSpec

from conftest import need_data

# Qwen-Audio's released ids (tokenization_qwen.py layout over qwen.tiktoken).
QWEN_IDS = {
    "<|endoftext|>": 151643, "<|im_start|>": 151644, "<|im_end|>": 151645,
    "<|extra_0|>": 151646, "<|extra_204|>": 151850, "[[[AUDIO:modality]]]": 151851,
    "<|startoftranscript|>": 151852, "<|startofanalysis|>": 151853, "<|translate|>": 151854,
    "<|transcribe|>": 151855, "<|caption|>": 151856, "<|keyword|>": 151857, "<|unknown|>": 151858,
    "<|en|>": 151859, "<|it|>": 151866, "<|zh_tr|>": 151867, "<|notimestamps|>": 151868,
    "<|sil|>": 151869, "<|timestamps|>": 151870, "<|0.00|>": 151871, "<|0.01|>": 151872,
    "<|30.00|>": 154871, "<|caption_audiocaps|>": 154872, "<|pitch|>": 154890,
    "<|midi_pitch_0|>": 154891, "<|midi_pitch_127|>": 155018, "<|velocity|>": 155019,
    "<|midi_velocity_127|>": 155147, "<|sonic|>": 155148, "<|speech_edit|>": 155162,
    "<audio>": 155163, "</audio>": 155164,
}
TEXTS = ["Hello world, 123 testing!", "mister quilter is the apostle of the middle classes",
         "Ça va? Grüße aus Köln — 東京は晴れ。", "  leading spaces\nand newlines\t tabs ",
         "numbers 3.14159 and $1,000,000"]


def test_qwen_base_reproduces_released_ids(qwen_tok):
    assert qwen_tok.n_base == 151643
    assert qwen_tok.n_vocab == 155165
    for token, id_ in QWEN_IDS.items():
        assert qwen_tok.token_id(token) == id_, token


def test_qwen_audio_start_id_matches_released_config(qwen_tok):
    config = json.loads(need_data("qwen_audio", "config.json").read_text())
    assert qwen_tok.token_id("<audio>") == config["audio"]["audio_start_id"]
    assert qwen_tok.n_vocab <= config["vocab_size"]  # rows padded to 155,947


def test_whisper_base_layout(whisper_tok):
    assert whisper_tok.n_base == 50257
    assert whisper_tok.token_id("<|endoftext|>") == 50257
    assert whisper_tok.token_id("</audio>") == 50257 + 3521
    assert whisper_tok.n_vocab == 53779


@pytest.mark.parametrize("text", TEXTS)
def test_whisper_base_matches_whisper_tokenizer(whisper_tok, text):
    reference = whisper.tokenizer.get_tokenizer(multilingual=True)
    assert whisper_tok.encode(text) == reference.encode(text)


@pytest.mark.parametrize("text", TEXTS + ["a <|en|> b <|endoftext|> c <audio>x</audio>"])
def test_round_trip_both_bases(whisper_tok, qwen_tok, text):
    for tok in (whisper_tok, qwen_tok):
        assert tok.decode(tok.encode(text)) == text


def test_tag_looking_text_stays_text(whisper_tok, qwen_tok):
    text = "he said <|en|> then <|endoftext|> and [[[AUDIO:modality]]] <audio>"
    for tok in (whisper_tok, qwen_tok):
        ids = tok.encode(text)
        assert not any(tok.is_special(i) for i in ids)
        assert tok.end_id not in ids


def test_time_tokens_round_trip(qwen_tok):
    for centis in range(0, 3001):
        seconds = centis / 100
        token_id = qwen_tok.time_id(seconds)
        assert qwen_tok.seconds(token_id) == pytest.approx(seconds)
    assert qwen_tok.time_id(1.234) == qwen_tok.token_id("<|1.23|>")
    with pytest.raises(TokenizerError, match="not a time token"):
        qwen_tok.seconds(qwen_tok.token_id("<|en|>"))


def test_pickles_as_its_spec(qwen_tok):
    """Loader workers receive the tokenizer pickled: it must travel as its spec, not 150k ranks.
    The clone is rebuilt the way unpickling would, from __reduce__, without loading any bytes."""
    blob = pickle.dumps(qwen_tok)
    assert len(blob) < 1000  # the spec, not 150k ranks
    rebuild, args = qwen_tok.__reduce__()
    assert args == (qwen_tok.spec,)
    clone = rebuild(*args)
    assert clone.encode(TEXTS[2]) == qwen_tok.encode(TEXTS[2])
    assert clone.token_id("<audio>") == 155163


def test_missing_base_file_is_a_clear_error(tmp_path):
    with pytest.raises(TokenizerError, match="base ranks file not found: .*nope.tiktoken"):
        Tokenizer(TokenizerSpec(base=str(tmp_path / "nope.tiktoken")))


def test_any_ranks_file_by_path(tmp_path):
    import base64
    path = tmp_path / "bytes.tiktoken"
    path.write_text("".join(f"{base64.b64encode(bytes([i])).decode()} {i}\n" for i in range(256)))
    tok = Tokenizer(TokenizerSpec(base=str(path)))
    assert tok.n_base == 256 and tok.token_id("<|endoftext|>") == 256
    assert tok.encode("hi") == [ord("h"), ord("i")]
    bad = tmp_path / "bad.tiktoken"
    bad.write_text("not-base64-and-no-rank\n")
    with pytest.raises(TokenizerError, match="bad.tiktoken:1"):
        Tokenizer(TokenizerSpec(base=str(bad)))
