"""metrics.score_task on every (metric, kind) of the registry, against hand-computed values, the
libraries' own figures, and (CIDEr-D) a value of the Java reference implementation."""
from __future__ import annotations

import dataclasses
import importlib.util
import itertools
import json
import shutil
from pathlib import Path

import pytest
import sacrebleu

from qwen_audio_mt import text_metrics as tm
from qwen_audio_mt.metrics import SCORERS, MetricError, Score, margin_points, score_task, scorer_for
from qwen_audio_mt.paths import TAGS_ENV, tags_dir
from qwen_audio_mt.tasks import load_tasks

FIXTURES = Path(__file__).parent / "fixtures" / "metrics"

# CIDEr-D of fixtures/metrics/cider_captions.json by the published pipeline itself, obtained once
# with `.venv/bin/python tests/fixtures/metrics/make_reference.py` (pycocoevalcap 1.2, whose
# PTBTokenizer runs Stanford CoreNLP 3.4.1 under OpenJDK 17.0.15, then pycocoevalcap's Cider).
CIDER_JAVA_REFERENCE = 1.8372271440352446


@pytest.fixture(scope="module")
def reg():
    return load_tasks()


def task(reg, name, **changes):
    return dataclasses.replace(reg.get(name), **changes) if changes else reg.get(name)


# ---------------------------------------------------------------------- registry
def test_every_registry_task_has_a_scorer(reg):
    for t in reg:
        assert callable(scorer_for(t)), t.name
    assert (("cer", "text")) in SCORERS


def test_unknown_pair_names_task_metric_and_kind(reg):
    with pytest.raises(MetricError, match=r"'diarization'.*'bleu'.*'spans'"):
        scorer_for(task(reg, "diarization", metric="bleu"))
    with pytest.raises(MetricError, match="'diarization'"):
        score_task(task(reg, "diarization", metric="bleu"), [], [])


def test_bad_inputs_raise(reg):
    with pytest.raises(MetricError, match="1 hypotheses, 2 references"):
        score_task(reg.get("gender"), [None], [{"gender": "male"}] * 2)
    with pytest.raises(MetricError, match="unknown option.*colar.*accepted: collar"):
        score_task(reg.get("sound_event_detection"), [], [], colar=0.5)


def test_empty_corpus_scores_none(reg):
    for name in ("asr", "gender", "sound_tagging", "word_timestamps", "speech_translation", "caption_clotho"):
        s = score_task(reg.get(name), [], [])
        assert (s.value, s.n) == (None, 0), name


# ---------------------------------------------------------------------- wer / cer
def test_wer_normalised_substitution_deletion_insertion(reg):
    # EnglishTextNormalizer: "Mr." -> "mister", "'s" -> " is", "three" -> "3"
    assert tm.normalize("Mr. Smith's 3 dogs", "en") == "mister smith is 3 dogs"
    assert tm.normalize("mister smiths three dogs", "en") == "mister smiths 3 dogs"
    refs = [{"text": "Mr. Smith's 3 dogs"}, {"text": "The cat sat."}]
    hyps = [{"text": "mister smiths three dogs"}, {"text": "the cat sat down"}]
    s = score_task(reg.get("asr"), hyps, refs)
    # smith -> smiths (S), is (D); down (I): 3 errors over 5 + 3 reference words
    assert (s.details["substitutions"], s.details["deletions"], s.details["insertions"]) == (1, 1, 1)
    assert s.value == pytest.approx(3 / 8) and s.n == 2 and s.higher_is_better is False
    assert s.details["by_language"]["en"] == {"rate": 3 / 8, "ref_units": 8, "unit": "word", "n": 2}


def test_char_level_languages_are_scored_by_characters(reg):
    refs = [{"text": "今天天气很好。"}, {"text": "こんにちは、世界"}]
    hyps = [{"text": "今天天气好"}, {"text": "こんばんは世界"}]
    s = score_task(reg.get("asr"), hyps, refs, ["zh", "ja"])
    assert s.details["by_language"]["zh"]["rate"] == pytest.approx(1 / 6)   # 很 deleted
    assert s.details["by_language"]["ja"]["rate"] == pytest.approx(2 / 7)   # に, ち substituted
    assert s.details["by_language"]["ja"]["unit"] == "char"
    assert s.value == pytest.approx(3 / 13)


def test_metric_cer_scores_english_by_characters(reg):
    s = score_task(task(reg, "asr", metric="cer"), [{"text": "hello word"}], [{"text": "Hello world!"}])
    assert s.value == pytest.approx(1 / 10) and s.details["by_language"]["en"]["unit"] == "char"


def test_char_level_comes_from_languages_yaml(tmp_path, monkeypatch):
    assert [tm.is_char_level(x) for x in ("zh", "ja", "ko", "zh_tr", "en", "de", None)] == [True] * 4 + [False] * 3
    shutil.copytree(tags_dir(), tmp_path / "tags")
    path = tmp_path / "tags" / "languages.yaml"
    text = path.read_text()
    path.write_text(text.replace("{code: de, name: German, char_level: false", "{code: de, name: German, char_level: true"))
    assert path.read_text() != text
    monkeypatch.setenv(TAGS_ENV, str(tmp_path / "tags"))
    assert tm.is_char_level("de")


def test_cpwer_takes_the_best_assignment(reg):
    t = reg.get("overlapped_asr")
    ref = {"texts": ["hello there", "good morning everyone"]}
    hyp = {"texts": ["good morning everyone", "hello"]}
    s = score_task(t, [hyp], [ref])
    assert s.value == pytest.approx(1 / 5)   # swapped: only "there" deleted
    in_order = sum(tm.edit_ops(tm.text_units(r, "en"), tm.text_units(h, "en")).errors
                   for r, h in zip(ref["texts"], hyp["texts"]))
    assert in_order == 6
    best = min(sum(tm.edit_ops(tm.text_units(r, "en"), tm.text_units(h, "en")).errors
                   for r, h in zip(ref["texts"], p)) for p in itertools.permutations(hyp["texts"]))
    assert s.details["substitutions"] + s.details["deletions"] + s.details["insertions"] == best
    extra = score_task(t, [{"texts": ["hello there", "good morning everyone", "bye"]}], [ref])
    assert (extra.value, extra.details["insertions"]) == (pytest.approx(1 / 5), 1)  # padded talker


def test_tag_seq_token_error_rate(reg):
    s = score_task(reg.get("melody"), [{"notes": ["60", "64", "65"]}], [{"notes": ["60", "62", "64"]}])
    assert s.value == pytest.approx(2 / 3) and s.details["by_language"]["all"]["unit"] == "token"


# ---------------------------------------------------------------------- bleu
HYPS = ["The cat is sitting on the mat.", "A quick brown dog jumps over the lazy fox!"]
REFS = ["The cat sits on the mat.", "The quick brown fox jumps over the lazy dog."]
ZH_HYPS, ZH_REFS = ["今天天气很好，我们去公园。"], ["今天天气不错，我们去公园吧。"]


def test_bleu_equals_sacrebleu_for_one_language(reg):
    t = reg.get("speech_translation")
    s = score_task(t, [{"translation": h} for h in HYPS], [{"translation": r} for r in REFS], ["de", "de"])
    assert s.value == pytest.approx(sacrebleu.corpus_bleu(HYPS, [REFS]).score, abs=1e-9)
    assert "tok:13a" in s.details["signature"] and s.higher_is_better


def test_bleu_uses_the_zh_tokenizer_for_chinese(reg):
    t = reg.get("speech_translation")
    s = score_task(t, [{"translation": h} for h in ZH_HYPS], [{"translation": r} for r in ZH_REFS], ["zh"])
    zh = sacrebleu.corpus_bleu(ZH_HYPS, [ZH_REFS], tokenize="zh").score
    assert s.value == pytest.approx(zh, abs=1e-9)
    assert zh != pytest.approx(sacrebleu.corpus_bleu(ZH_HYPS, [ZH_REFS]).score)   # 13a would differ
    assert tm.bleu_tokenizer("zh_tr") == "zh" and tm.bleu_tokenizer("ko") == "char"
    if importlib.util.find_spec("MeCab") is None:   # sacrebleu's ja-mecab needs MeCab
        assert tm.bleu_tokenizer("ja") == "char"


def test_bleu_mixed_languages_pretokenised(reg):
    t = reg.get("speech_translation")
    hyps, refs, langs = HYPS + ZH_HYPS, REFS + ZH_REFS, ["en", "en", "zh"]
    s = score_task(t, [{"translation": h} for h in hyps], [{"translation": r} for r in refs], langs)
    tok = {"en": "13a", "zh": "zh"}
    pre = lambda xs: [sacrebleu.BLEU(tokenize=tok[x]).tokenizer(y) for x, y in zip(langs, xs)]
    assert s.value == pytest.approx(sacrebleu.corpus_bleu(pre(hyps), [pre(refs)], tokenize="none").score)
    assert s.details["by_language"]["zh"]["bleu"] == pytest.approx(
        sacrebleu.corpus_bleu(ZH_HYPS, [ZH_REFS], tokenize="zh").score)


# ---------------------------------------------------------------------- cider
def test_cider_matches_the_java_reference(reg):
    clips = json.loads((FIXTURES / "cider_captions.json").read_text())["clips"]
    s = score_task(reg.get("caption_clotho"), [{"caption": c["hyp"]} for c in clips],
                   [{"caption": c["refs"][0], "captions": c["refs"]} for c in clips])
    assert s.value == pytest.approx(CIDER_JAVA_REFERENCE, abs=1e-6)
    assert s.details["references_per_item"] == 5
    json.dumps(s.details)


def test_ptb_tokenizer_matches_java_line_by_line():
    spec = json.loads((FIXTURES / "ptb_tokenized.json").read_text())
    got = tm.ptb_tokenize(spec["lines"])
    bad = [(line, want, have) for line, want, have in zip(spec["lines"], spec["expected"], got) if want != have]
    assert len(got) == len(spec["expected"]) and not bad, bad[:5]


def test_ptb_tokenizer_quirks():
    assert tm.ptb_tokenize(["A dog's bark (loud), isn't it?", "Cats -- meow..."]) == [
        "a dog 's bark -lrb- loud -rrb- is n't it", "cats meow"]


def test_cider_single_string_reference(reg):
    refs = ["a dog barks", "rain falls on a roof", "a man speaks"]
    hyps = ["a dog is barking", "rain falls", "a woman speaks"]
    s = score_task(reg.get("caption_audiocaps"), [{"caption": h} for h in hyps], [{"caption": r} for r in refs])
    assert s.value == pytest.approx(tm.cider_d(hyps, [[r] for r in refs])[0]) and s.value > 0
    assert s.details["references_per_item"] == 1


# ---------------------------------------------------------------------- accuracy
def test_label_and_tag_exact_match(reg):
    s = score_task(reg.get("gender"), [{"gender": "male"}, {"gender": "Male"}, None], [{"gender": "male"}] * 3)
    assert (s.value, s.details["correct"], s.details["unparsed"]) == (pytest.approx(1 / 3), 1, 1)
    s = score_task(reg.get("music_pitch"), [{"pitch": 60}, {"pitch": "61"}], [{"pitch": "60"}, {"pitch": "62"}])
    assert s.value == 0.5


def test_text_accuracy_after_normalisation(reg):
    refs = [{"answer": "Paris"}, {"answer": "two"}, {"answer": "a dog"}]
    hyps = [{"answer": "paris."}, {"answer": "2"}, {"answer": "a cat"}]
    assert score_task(reg.get("speech_qa"), hyps, refs).value == pytest.approx(2 / 3)


def test_number_tolerance_and_mae(reg):
    t = reg.get("tempo")
    refs = [{"tempo": x} for x in (120, 100, 90, 80, 70)]
    hyps = [{"tempo": 124}, {"tempo": 105}, {"tempo": 180.0}, None, {"tempo": "70"}]
    s = score_task(t, hyps, refs)
    assert s.value == pytest.approx(1 / 5)                  # 124 is within 4 % of 120; 105 is 5 % off
    assert s.details["mae"] == pytest.approx((4 + 5 + 90) / 3)
    assert s.details["non_numeric"] == 2                    # None and the string "70"
    assert s.details["accuracy2"] == pytest.approx(2 / 5)   # 180 = 2 x 90
    assert score_task(t, hyps, refs, tolerance=0.05).value == pytest.approx(2 / 5)


def test_composite_per_part(reg):
    refs = [{"pitch": 60, "velocity": 100, "instrument": "flute"}, {"pitch": 62, "velocity": 80, "instrument": "organ"}]
    hyps = [{"pitch": "60", "velocity": 100, "instrument": "flute"}, {"pitch": 62, "velocity": 90, "instrument": "organ"}]
    s = score_task(reg.get("note_analysis"), hyps, refs)
    assert s.value == 0.5
    assert s.details["per_part"] == {"pitch": 1.0, "velocity": 0.5, "instrument": 1.0}


# ---------------------------------------------------------------------- f1
def ev(label, start, end=None):
    return {"label": label, "start": start, "end": start + 0.5 if end is None else end}


def test_spans_onset_collar_and_labels(reg):
    t = reg.get("sound_event_detection")
    refs = [{"events": [ev("siren", 1.0), ev("knock", 3.0)]}]
    hyps = [{"events": [ev("siren", 1.15), ev("knock", 3.3), ev("bell", 5.0)]}]
    s = score_task(t, hyps, refs)   # siren within 0.2 s; knock 0.3 s off; bell spurious
    assert (s.details["tp"], s.details["fp"], s.details["fn"]) == (1, 2, 1)
    assert (s.value, s.details["precision"], s.details["recall"]) == (pytest.approx(0.4), pytest.approx(1 / 3), 0.5)
    assert score_task(t, hyps, refs, collar=0.5).value == pytest.approx(0.8)
    wrong_label = score_task(t, [{"events": [ev("clap", 1.0)]}], [{"events": [ev("siren", 1.0)]}])
    assert wrong_label.value == 0.0
    edge = score_task(t, [{"events": [ev("rain", 2.2)]}], [{"events": [ev("rain", 2.0)]}])
    assert edge.value == 1.0        # the collar is inclusive despite float noise


def test_spans_one_to_one_and_unlabeled(reg):
    t = reg.get("audio_grounding")
    s = score_task(t, [{"spans": [ev(None, 0.1), ev(None, 0.05)]}], [{"spans": [ev(None, 0.0)]}])
    assert (s.details["tp"], s.details["fp"]) == (1, 1)
    assert s.details["onset_mae_s"] == pytest.approx(0.05)   # the closer one is matched


def test_entities_by_type_and_own_text(reg):
    t = reg.get("named_entity_recognition")
    ref = {"text": "Call John in Paris", "entities": [{"start": 5, "end": 9, "type": "person"},
                                                    {"start": 13, "end": 18, "type": "city"}]}
    hyp = {"text": "please call john in paris", "entities": [{"start": 12, "end": 16, "type": "person"},
                                                            {"start": 20, "end": 25, "type": "organization"}]}
    s = score_task(t, [hyp], [ref])
    assert (s.details["tp"], s.details["fp"], s.details["fn"], s.value) == (1, 1, 1, 0.5)


def test_slots_multiset(reg):
    t = reg.get("slot_filling")
    ref = {"slots": [{"type": "time", "value": "7 am"}, {"type": "city", "value": "Paris"}]}
    hyp = {"slots": [{"type": "time", "value": "7 AM"}, {"type": "time", "value": "7 am"},
                     {"type": "city", "value": "London"}]}
    s = score_task(t, [hyp], [ref])   # one time matches once; the duplicate and London are wrong
    assert (s.details["tp"], s.details["fp"], s.details["fn"]) == (1, 2, 1) and s.value == pytest.approx(0.4)


def test_multilabel_micro_f1(reg):
    refs = [{"labels": ["siren", "rain"]}, {"labels": ["bell"]}]
    hyps = [{"labels": ["siren"]}, {"labels": ["bell", "wind"]}]
    s = score_task(reg.get("sound_tagging"), hyps, refs)
    assert (s.value, s.details["precision"], s.details["recall"]) == pytest.approx((2 / 3, 2 / 3, 2 / 3))


# ---------------------------------------------------------------------- timestamp_shift
def w(word, start, end):
    return {"word": word, "start": start, "end": end}


def test_timestamp_shift_hand_computed(reg):
    ref = {"words": [w("Hello", 0.0, 0.5), w("big", 0.5, 0.8), w("world", 0.9, 1.4), w(",", 1.4, 1.4)]}
    hyp = {"words": [w("hello,", 0.02, 0.46), w("world", 1.0, 1.3)]}
    s = score_task(reg.get("word_timestamps"), [hyp], [ref])
    # matched: hello (0.02, 0.04 s), world (0.1, 0.1 s); "big" missed; "," is not a word
    assert s.value == pytest.approx(1000 * (0.02 + 0.04 + 0.1 + 0.1) / 4)
    assert (s.details["matched_words"], s.details["reference_words"]) == (2, 3)
    assert s.details["word_recall"] == pytest.approx(2 / 3) and s.higher_is_better is False


# ---------------------------------------------------------------------- unparsed hypotheses
@pytest.mark.parametrize("name, ref, value", [
    ("asr", {"text": "hello world"}, 1.0),
    ("overlapped_asr", {"texts": ["hello", "good morning"]}, 1.0),
    ("melody", {"notes": ["60", "62"]}, 1.0),
    ("speech_translation", {"translation": "hello world"}, 0.0),
    ("gender", {"gender": "male"}, 0.0),
    ("speech_qa", {"answer": "yes"}, 0.0),
    ("tempo", {"tempo": 120}, 0.0),
    ("note_analysis", {"pitch": 60, "velocity": 100, "instrument": "flute"}, 0.0),
    ("sound_tagging", {"labels": ["siren"]}, 0.0),
    ("diarization", {"turns": [ev("m1", 0.0)]}, 0.0),
    ("named_entity_recognition", {"text": "John", "entities": [{"start": 0, "end": 4, "type": "person"}]}, 0.0),
    ("slot_filling", {"slots": [{"type": "city", "value": "Paris"}]}, 0.0),
    ("word_timestamps", {"words": [w("hello", 0.0, 0.5)]}, None),
])
def test_none_hypothesis_is_the_empty_answer(reg, name, ref, value):
    s = score_task(reg.get(name), [None], [ref])
    assert isinstance(s, Score) and s.n == 1 and s.value == value
    json.dumps(s.details)   # evaluation writes details into metrics.json


def test_none_caption_scores_zero_cider(reg):
    refs = [{"caption": "a dog barks"}, {"caption": "rain falls"}]
    s = score_task(reg.get("caption_clotho"), [None, {"caption": "rain falls"}], refs)
    value, per_item = tm.cider_d(["", "rain falls"], [["a dog barks"], ["rain falls"]])
    assert s.n == 2 and s.value == pytest.approx(value) and per_item[0] == 0.0 and per_item[1] > 0


# ---------------------------------------------------------------------- margin_points
def test_margin_points_sign_conventions():
    assert margin_points("accuracy", 0.8, 0.5) == pytest.approx(30)
    assert margin_points("f1", 0.4, 0.5) == pytest.approx(-10)
    assert margin_points("wer", 0.2, 0.3) == pytest.approx(10)      # fewer errors: better
    assert margin_points("cer", 0.4, 0.3) == pytest.approx(-10)
    assert margin_points("cider", 1.2, 0.9) == pytest.approx(30)
    assert margin_points("bleu", 25.0, 20.0) == pytest.approx(5)    # already in points
    assert margin_points("timestamp_shift", 40.0, 50.0) == pytest.approx(20)   # % of the baseline
    assert margin_points("timestamp_shift", 60.0, 50.0) == pytest.approx(-20)
    assert margin_points("timestamp_shift", 0.0, 0.0) == 0.0
    assert margin_points("timestamp_shift", 5.0, 0.0) is None
    assert margin_points("wer", None, 0.3) is None and margin_points("bleu", 1.0, None) is None
    with pytest.raises(MetricError, match="unknown metric 'rouge'"):
        margin_points("rouge", 0.1, 0.2)
