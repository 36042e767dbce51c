import pytest

from qwen_audio_mt.audio import MAX_AUDIO_POSITIONS, n_audio_positions
from qwen_audio_mt.render import Renderer
from qwen_audio_mt.targets import TargetError, srwt_times
from qwen_audio_mt.tasks import TaskError

# The prompts of Qwen-Audio's official evaluation scripts (ARCHITECTURE.md), byte for byte.
OFFICIAL = [
    ("asr", {"audio_lang": "en"}, "<|startoftranscript|><|en|><|transcribe|><|en|><|notimestamps|><|wo_itn|>"),
    ("speech_translation", {"audio_lang": "en", "text_lang": "de"},
     "<|startoftranscript|><|en|><|translate|><|de|><|notimestamps|><|itn|>"),
    ("caption_clotho", {}, "<|startofanalysis|><|unknown|><|caption|><|en|><|notimestamps|><|caption_clotho|>"),
    ("acoustic_scene", {}, "<|startofanalysis|><|unknown|><|keyword|><|en|><|notimestamps|><|scene|>"),
    ("note_analysis", {}, "<|startofanalysis|><|unknown|><|keyword|><|en|><|notimestamps|><|note_analysis|>"),
    ("emotion", {}, "<|startofanalysis|><|unknown|><|keyword|><|en|><|notimestamps|><|emotion_recognition|>"),
    ("vocal_sound", {}, "<|startofanalysis|><|unknown|><|keyword|><|en|><|notimestamps|><|vocal_classification|>"),
    ("sound_aqa", {"fields": {"question": "What is the dog doing?"}},
     "<|startofanalysis|><|en|><|question|>What is the dog doing?<|answer|>"),
    ("word_timestamps", {"audio_lang": "en"}, "<|startoftranscript|><|en|><|transcribe|><|en|><|timestamps|>"),
]


@pytest.mark.parametrize("task, kwargs, expected", OFFICIAL, ids=[o[0] for o in OFFICIAL])
def test_official_prompts_byte_for_byte(qwen_renderer, task, kwargs, expected):
    assert qwen_renderer.prompt_text(task, **kwargs) == expected
    # and the rendered ids decode back to the same bytes after the audio span
    sample = {"task": task, "duration": 1.0, **kwargs.get("fields", {}),
              **{k: v for k, v in kwargs.items() if k != "fields"}}
    ids = qwen_renderer.render({**example_labels(qwen_renderer.registry.get(task)), **sample}).ids
    assert qwen_renderer.tok.decode(ids).split("</audio>", 1)[1].startswith(expected)


def example_labels(task) -> dict:
    """A minimal valid sample for any task, built from its target spec."""
    t, s = task.target, {}
    for name in task.free_text_fields:
        s[name] = ["red", "blue"] if name == "choices" else "which one?"
    first = t.labels[0] if t.labels else "x"
    by_kind = {
        "text": "some words", "label": first, "tag": first, "number": 120,
        "words": [["hello", 0.54, 0.86], ["world", 0.86, 1.17]],
        "spans": [[first, 0.1, 0.5]] if t.labels else [[0.1, 0.5]],
        "multilabel": list(t.labels[:2]), "transcripts": ["one talker", "another talker"],
        "slots": [[first, "monday"]], "tag_seq": list(t.labels[60:63]),
    }
    if t.kind == "entities":
        s.update({t.text_field: "call Anna now", t.field: [[5, 9, first]]})
    elif t.kind == "composite":
        for part in t.parts:
            if "field" in part:
                s[part["field"]] = (part.get("labels") or ["64"])[0]
    else:
        s[t.field] = by_kind[t.kind]
    return s


def test_every_task_renders(renderer):
    for task in renderer.registry:
        sample = {"task": task.name, "audio_lang": "en", "duration": 2.0, **example_labels(task)}
        ids, mask = renderer.render(sample)
        assert len(ids) == len(mask) and ids[-1] == renderer.tok.end_id, task.name
        n = n_audio_positions(2.0)
        assert ids[: n + 2] == [renderer.tok.token_id("<audio>")] + [
            renderer.tok.token_id("[[[AUDIO:modality]]]")] * n + [renderer.tok.token_id("</audio>")]
        assert mask.index(1) > n + 2 and all(mask[mask.index(1):]), task.name


def test_loss_mask_covers_target_and_end_only(qwen_renderer):
    tok = qwen_renderer.tok
    ids, mask = qwen_renderer.render({"task": "asr", "audio_lang": "en", "duration": 3.0,
                                      "text": "ask not what your country can do"})
    target = [i for i, m in zip(ids, mask) if m]
    assert target == tok.encode("ask not what your country can do") + [tok.end_id]
    assert tok.decode([i for i, m in zip(ids, mask) if not m]).endswith("<|wo_itn|>")


def test_audio_span_lengths(renderer):
    assert n_audio_positions(30.0) == MAX_AUDIO_POSITIONS == 750
    assert n_audio_positions(1.0) == 25
    placeholder = renderer.tok.token_id("[[[AUDIO:modality]]]")
    ids, _ = renderer.render({"task": "caption_clotho", "duration": 4.0, "caption": "rain falls"})
    assert ids.count(placeholder) == 100
    padded = Renderer(renderer.tok, renderer.registry, pad_to_30s=True)
    ids, _ = padded.render({"task": "caption_clotho", "duration": 4.0, "caption": "rain falls"})
    assert ids.count(placeholder) == 750
    ids, _ = renderer.render({"task": "caption_clotho", "caption": "no audio length given"})
    assert placeholder not in ids


def test_mel_frame_arithmetic_matches_whisper():
    import numpy as np
    import whisper

    from qwen_audio_mt.audio import n_mel_frames
    for n in (16000, 16159, 16160, 80000, 480000):
        assert whisper.log_mel_spectrogram(np.zeros(n, np.float32)).shape[-1] == n_mel_frames(n)


def test_srwt_target_matches_qwen_audio_form(qwen_renderer):
    tok = qwen_renderer.tok
    words = [["word", 0.54, 0.86], ["word", 0.86, 1.17]]
    ids, mask = qwen_renderer.render({"task": "word_timestamps", "audio_lang": "en", "words": words})
    target = tok.decode([i for i, m in zip(ids, mask) if m])
    assert target == "<|0.00|><|sil|><|0.54|>word<|0.86|>word<|1.17|><|endoftext|>"


def test_srwt_boundaries_silences_and_rounding():
    words = [("a", 0.02, 0.3), ("b", 0.34, 0.6), ("c", 1.0, 1.404)]
    times, segs = srwt_times(words, min_silence=0.10)
    assert segs == ["a", "b", None, "c"] and len(times) == len(segs) + 1
    assert times == pytest.approx([0.02, 0.32, 0.6, 1.0, 1.404])  # 0.04 gap -> one midpoint
    ids = Renderer().render({"task": "word_timestamps", "audio_lang": "en",
                             "words": [list(w) for w in words]}).ids
    assert Renderer().tok.decode(ids).endswith("<|0.02|>a<|0.32|>b<|0.60|><|sil|><|1.00|>c<|1.40|><|endoftext|>")


def test_words_out_of_order_are_rejected(renderer):
    with pytest.raises(TargetError, match="task word_timestamps: word 'b' has times"):
        renderer.render({"task": "word_timestamps", "audio_lang": "en",
                         "words": [["a", 0.5, 0.9], ["b", 0.2, 0.3]]})


def test_timestamped_asr_uses_word_times(renderer):
    sample = {"task": "asr", "audio_lang": "en", "timestamps": True, "text": "hi there",
              "words": [["hi", 0.0, 0.3], ["there", 0.3, 0.7]]}
    text = renderer.tok.decode(renderer.render(sample).ids)
    assert "<|timestamps|><|wo_itn|><|0.00|>hi<|0.30|>there<|0.70|><|endoftext|>" in text


def test_tag_looking_transcript_stays_text(qwen_renderer):
    tok = qwen_renderer.tok
    ids, mask = qwen_renderer.render({"task": "asr", "audio_lang": "en", "text": "<|en|> hi <|endoftext|>"})
    target = [i for i, m in zip(ids, mask) if m]
    assert target.count(tok.end_id) == 1 and target[-1] == tok.end_id
    assert not any(tok.is_special(i) for i in target[:-1])


@pytest.mark.parametrize("sample, message", [
    ({"task": "acoustic_scene", "scene": "beach"}, "task acoustic_scene: scene 'beach' is not one of"),
    ({"task": "asr", "audio_lang": "en"}, "task asr: sample has no 'text'"),
    ({"task": "sound_aqa", "answer": "yes"}, "task sound_aqa: sample has no 'question'"),
    ({"task": "music_pitch", "pitch": 200}, "task music_pitch: pitch '200' is not one of"),
])
def test_bad_labels_name_task_and_value(renderer, sample, message):
    with pytest.raises(TargetError) as e:
        renderer.render(sample)
    assert message in str(e.value)


def test_language_errors(renderer):
    with pytest.raises(ValueError, match="unknown language 'xx'"):
        renderer.render({"task": "asr", "audio_lang": "xx", "text": "a"})
    with pytest.raises(TaskError, match="task asr: needs an audio language"):
        renderer.render({"task": "asr", "text": "a"})
    with pytest.raises(TaskError, match="takes no timestamps choice"):
        renderer.prompt_text("caption_clotho", timestamps=True)


def test_language_defaults(renderer):
    assert renderer.prompt_text("asr", "de") == \
        "<|startoftranscript|><|de|><|transcribe|><|de|><|notimestamps|><|wo_itn|>"
    assert renderer.prompt_text("gender", "de").startswith("<|startofanalysis|><|de|><|keyword|><|en|>")
    text = renderer.tok.decode(renderer.render({"task": "language_id", "audio_lang": "ja"}).ids)
    assert text == "<|startoftranscript|><|ja|><|endoftext|>"


@pytest.mark.parametrize("sample", [
    {"task": "asr", "audio_lang": "en", "duration": 5.0, "text": "ask not what your country can do for you"},
    {"task": "sound_aqa", "duration": 8.0, "question": "How many times does the bell ring?", "answer": "three"},
    {"task": "speech_translation", "audio_lang": "en", "text_lang": "de", "duration": 2.0,
     "translation": "Guten Morgen"},
])
def test_fast_path_equals_naive_encoding(qwen_renderer, sample):
    """Prefix-as-ids + encode_ordinary gives the ids of encoding the whole string with specials."""
    tok = qwen_renderer.tok
    ids, mask = qwen_renderer.render(sample)
    text = tok.decode(ids)
    assert tok.encoding.encode(text, allowed_special="all") == ids


def test_task_default_language_wins_over_unknown(renderer):
    ids, _ = renderer.render({"task": "sound_aqa", "audio_lang": "unknown", "question": "Is it loud?",
                              "answer": "yes"})
    assert "<|startofanalysis|><|en|><|question|>Is it loud?<|answer|>" in renderer.tok.decode(ids)


@pytest.mark.parametrize("words, message", [
    ([], "sample has no words"),
    ([["a", 0.5, 0.9], ["b", 0.6, 0.7]], "word 'b' has times 0.6..0.7 out of order"),  # overlap
])
def test_empty_or_overlapping_words_are_rejected(renderer, words, message):
    with pytest.raises(TargetError, match=message):
        renderer.render({"task": "word_timestamps", "audio_lang": "en", "words": words})
