import pytest

from qwen_audio_mt.tags import TagGrammarError, Text, load_vocab

ASR = ["<|startoftranscript|>", "<|en|>", "<|transcribe|>", "<|en|>", "<|notimestamps|>", "<|wo_itn|>"]


@pytest.fixture(scope="module")
def vocab():
    return load_vocab()


def test_vocabulary_sizes_and_order(vocab):
    assert len(vocab.tokens) == 3522  # 155,165 - 151,643 Qwen base ranks
    assert len(vocab.group("time")) == 3001
    assert vocab.group("time")[0] == "<|0.00|>" and vocab.group("time")[-1] == "<|30.00|>"
    assert vocab.group("time")[1234] == "<|12.34|>"
    assert vocab.group("extra")[-1] == "<|extra_204|>"
    instr = vocab.group("output_instruction")
    assert len(instr) == 291
    i = instr.index("<|pitch|>")
    assert instr[i + 1] == "<|midi_pitch_0|>" and instr[i + 128] == "<|midi_pitch_127|>"
    assert instr[i + 129] == "<|velocity|>" and instr[i + 130] == "<|midi_velocity_0|>"
    assert vocab.tokens[-2:] == ("<audio>", "</audio>")
    assert vocab.languages == ("unknown", "en", "zh", "de", "es", "ko", "fr", "ja", "it", "zh_tr")


def test_time_tag_rounds_to_hundredths_and_clips(vocab):
    assert vocab.time_tag(0.544) == "<|0.54|>"
    assert vocab.time_tag(0.546) == "<|0.55|>"
    assert vocab.time_tag(-1) == "<|0.00|>"
    assert vocab.time_tag(45.0) == "<|30.00|>"


@pytest.mark.parametrize("pieces", [
    ASR,
    ["<|startoftranscript|>"],  # language ID prompt: a valid prefix
    ["<|startofanalysis|>", "<|en|>", "<|question|>", Text("how many?"), "<|answer|>"],
    ["<|startofanalysis|>", "<|unknown|>", "<|keyword|>", "<|en|>", "<|notimestamps|>",
     "<|note_analysis|>", "<|pitch|>"],
])
def test_valid_sequences(vocab, pieces):
    vocab.validate(pieces)


@pytest.mark.parametrize("pieces, position, found, expected", [
    (["<|en|>"] + ASR[1:], 0, "<|en|>", "transcription"),
    (["<|startoftranscript|>", "<|transcribe|>"], 1, "<|transcribe|>", "audio_language"),
    (["<|startoftranscript|>", "<|en|>", "<|en|>"], 2, "<|en|>", "task"),  # text language needs a task
    (ASR[:5] + ["<|transcribe|>"], 5, "<|transcribe|>", "output_instruction"),
    (ASR + ["<|en|>"], 6, "<|en|>", "output_instruction"),
    (["<|startoftranscript|>", "<|en|>", "<|transcribe|>", "<|unknown|>"], 3, "<|unknown|>", "timestamps"),
    (["<|startofanalysis|>", "<|startofanalysis|>"], 1, "<|startofanalysis|>", "audio_language"),
])
def test_rejections_name_position_tag_and_expectation(vocab, pieces, position, found, expected):
    with pytest.raises(TagGrammarError) as e:
        vocab.validate(pieces)
    msg = str(e.value)
    assert msg.startswith(f"position {position}: found {found}, expected ")
    assert expected in msg.split("expected", 1)[1]


def test_free_text_only_after_an_instruction(vocab):
    with pytest.raises(TagGrammarError, match="position 2: found free text 'hello'"):
        vocab.validate(["<|startofanalysis|>", "<|en|>", Text("hello")])
