"""espeak-ng speech generators: labels checked against the signal, the registry and the renderer."""
from __future__ import annotations

import re
import shutil
import subprocess

import numpy as np
import pytest

from qwen_audio_mt.data.corpus import espeak, speech
from qwen_audio_mt.data.corpus import speech_texts as tx
from qwen_audio_mt.data.corpus.base import GENERATORS, SPLITS, SourceMissing
from qwen_audio_mt.tasks import load_tasks

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")

SR = 16_000
TOL_S = 0.02                       # label times must agree with the signal within 20 ms
SPEECH_TASKS = ("asr", "asr_itn", "speech_translation", "word_timestamps", "language_id", "gender",
                "speaker_id", "speaking_rate", "emotion", "vocal_sound", "keyword_spotting",
                "named_entity_recognition", "intent", "slot_filling", "speech_qa", "overlapped_asr",
                "diarization")
LANGS = ("en", "zh", "de", "es", "ko", "fr", "ja", "it")


def make(task: str, index: int = 0, split: str = "train", seed: int = 0):
    return GENERATORS[task](task, index, np.random.default_rng([seed, index]), split)


def sample(item) -> dict:
    return {"task": item.task, "audio_lang": item.audio_lang, "text_lang": item.text_lang,
            "duration": len(item.audio) / SR, **item.labels}


def peak_in(x: np.ndarray, a: float, b: float) -> float:
    seg = x[max(0, round(a * SR)):max(0, round(b * SR))]
    return float(np.max(np.abs(seg), initial=0.0))


def assert_timed(x: np.ndarray, spans: list[tuple[float, float]]) -> None:
    """Energy (above -60 dB of the clip's peak) within 20 ms inside each span's start and end;
    silence (below -80 dB) further than 20 ms outside every span. Spans may overlap."""
    loud, quiet = 1e-3 * float(np.max(np.abs(x))), 1e-4 * float(np.max(np.abs(x)))
    for a, b in spans:
        assert peak_in(x, a, a + TOL_S) > loud, f"no energy just after start {a}"
        assert peak_in(x, b - TOL_S, b) > loud, f"no energy just before end {b}"
    covered = np.zeros(len(x), bool)
    for a, b in spans:
        covered[max(0, round((a - TOL_S) * SR)):round((b + TOL_S) * SR)] = True
    assert np.max(np.abs(x[~covered]), initial=0.0) < quiet, "energy outside the labelled spans"


def median_f0(x: np.ndarray) -> float:
    """Median F0 (Hz) of voiced 40-ms frames by normalised autocorrelation, 60-400 Hz."""
    frame, hop, lo, hi = 640, 160, SR // 400, SR // 60
    f0s = []
    for i in range(0, len(x) - frame, hop):
        w = x[i:i + frame] - x[i:i + frame].mean()
        if np.sqrt(np.mean(w ** 2)) < 0.1 * np.max(np.abs(x)):
            continue
        ac = np.correlate(w, w, "full")[frame - 1:]
        lag = lo + int(np.argmax(ac[lo:hi]))
        if ac[lag] > 0.5 * ac[0]:
            f0s.append(SR / lag)
    return float(np.median(f0s))


def words_to_int(text: str) -> int:
    """An independent parser of English cardinals ('two thousand five hundred forty one')."""
    spec = tx.texts()["numbers"]
    value = {w: i for i, w in enumerate(spec["ones"])} | {w: 10 * i for i, w in enumerate(spec["tens"]) if w}
    total, current = 0, 0
    for w in text.split():
        if w == spec["hundred"]:
            current *= 100
        elif w == spec["thousand"]:
            total, current = total + current * 1000, 0
        else:
            current += value[w]
    return total + current


# ---------------------------------------------------------------- every task
def test_generators_cover_exactly_the_speech_tasks():
    mine = {t for t, fn in GENERATORS.items() if fn.__module__ == speech.__name__}
    assert mine == set(SPEECH_TASKS)


@pytest.mark.parametrize("task", SPEECH_TASKS)
def test_items_render_and_fit_the_registry(task, renderer):
    spec = load_tasks().get(task)
    needed = {spec.target.field, spec.target.text_field, *spec.free_text_fields} - {None}
    allowed = needed | ({"text", "text_itn"} if task in ("asr", "asr_itn") else set())
    for i, split in enumerate(SPLITS):
        item = make(task, i, split)
        x = item.audio
        assert x.dtype == np.float32 and x.ndim == 1
        assert 0.05 < np.max(np.abs(x)) <= 1.0
        assert 0.5 <= len(x) / SR <= 12.0
        assert needed <= set(item.labels) <= allowed
        assert item.audio_lang in (("unknown",) if task == "vocal_sound" else LANGS)
        ids, mask = renderer.render(sample(item))
        assert sum(mask) >= 2  # a target and the end token


def test_same_arguments_same_item_and_splits_differ():
    for task in SPEECH_TASKS:
        a = make(task, 3, "valid")
        if task in ("asr", "word_timestamps"):
            espeak.clear_cache()  # also espeak itself must be deterministic, not just the cache
        b = make(task, 3, "valid")
        assert np.array_equal(a.audio, b.audio) and a.labels == b.labels, task
        assert not np.array_equal(a.audio, make(task, 3, "test").audio), task


def test_missing_espeak_raises_source_missing(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    for task in SPEECH_TASKS:
        with pytest.raises(SourceMissing, match="espeak-ng"):
            make(task)


# ---------------------------------------------------------------- languages and text
def test_asr_covers_eight_languages_and_translation_crosses_languages():
    langs = {make("asr", i).audio_lang for i in range(48)}
    assert langs == set(LANGS)
    for i in range(8):
        item = make("speech_translation", i)
        assert item.text_lang and item.text_lang != item.audio_lang
        assert "en" in (item.audio_lang, item.text_lang)


def test_every_sentence_is_read_in_its_own_language():
    """espeak marks a switch to English as '(en)': e.g. kanji or hanzi it cannot read."""
    for lang in LANGS:
        for text in tx.sentence_pool(lang):
            out = subprocess.run(["espeak-ng", "-q", "-x", "-v", speech.espeak_voices()[lang], "--stdin"],
                                 input=text.encode(), capture_output=True, timeout=10).stdout.decode()
            assert out.strip() and ("(en)" not in out or lang == "en"), (lang, text, out)
    assert all(re.fullmatch(r"([a-z]+[1-5] ?)+", s) for s in tx.sentence_pool("zh"))
    assert not any(re.search(r"[\u4e00-\u9fff]", s) for s in tx.sentence_pool("ja"))


def test_itn_pairs_numbers_in_words_and_digits():
    assert all(words_to_int(tx.number_words(n)) == n for n in range(0, 20000, 7))
    seen = 0
    for i in range(12):
        lab = make("asr_itn", i).labels
        digits = re.findall(r"\d+(?::\d+)?", lab["text_itn"])
        assert not re.search(r"\d", lab["text"])
        if digits:
            seen += 1
            assert lab["text"] != lab["text_itn"]
    assert seen >= 4


def test_entity_offsets_slice_the_entities():
    vocab = tx.texts()["ner"]
    types = set(load_tasks().get("named_entity_recognition").closed_labels)
    for seed in range(60):
        text, ents = tx.ner_sentence(np.random.default_rng(seed))
        prev_end = 0
        for start, end, etype in ents:
            assert etype in types and text[start:end] in vocab[etype] and start >= prev_end
            prev_end = end
    item = make("named_entity_recognition", 5)
    assert all(item.labels["text"][a:b] in vocab[t] for a, b, t in item.labels["entities"])


def test_slots_and_intents_come_from_the_closed_sets():
    slot_vocab = tx.texts()["commands"]["slots"]
    for i in range(6):
        assert make("intent", i).labels["intent"] in load_tasks().get("intent").closed_labels
        for stype, value in make("slot_filling", i).labels["slots"]:
            assert value in slot_vocab[stype]


def test_qa_answer_is_said_in_the_audio_text():
    for seed in range(60):
        fact, question, answer = tx.qa_item(np.random.default_rng(seed))
        spoken = re.sub(r"\d+", lambda m: tx.number_words(int(m.group())), answer)
        assert question.endswith("?") and spoken in fact, (fact, question, answer)


# ---------------------------------------------------------------- timing
def test_word_times_agree_with_the_energy():
    for i in range(6):
        item = make("word_timestamps", i)
        words = item.labels["words"]
        assert [w for w, _, _ in words] == tx.words(" ".join(w for w, _, _ in words))
        assert_timed(item.audio, [(a, b) for _, a, b in words])


def test_srwt_target_has_one_time_token_per_boundary(renderer):
    tok, min_sil = renderer.tok, renderer.vocab.timestamps.min_silence_s
    assert speech.MIN_SILENCE_S == min_sil  # the generator's gap classes are drawn around it
    sil = tok.role_id("silence")
    n_sil_total = n_short_total = 0
    for i in range(8):
        item = make("word_timestamps", i)
        words = item.labels["words"]
        ids, mask = renderer.render(sample(item))
        target = [t for t, m in zip(ids, mask) if m][:-1]  # without the end token
        times = [tok.seconds(t) for t in target if t in tok.id_to_special and t != sil]
        gaps = [b[1] - a[2] for a, b in zip(words, words[1:])]
        n_sil = sum(g >= min_sil for g in gaps) + (words[0][1] >= min_sil)
        assert target.count(sil) == n_sil
        assert len(times) == len(words) + n_sil + 1
        assert times == sorted(times) and times[-1] == words[-1][2]
        assert not any(min_sil - 0.02 < g < min_sil + 0.02 for g in gaps)  # clear of the threshold
        n_sil_total += n_sil
        n_short_total += sum(g < min_sil for g in gaps)
    assert n_sil_total > 0 and n_short_total > 0  # both boundary kinds are exercised


def test_diarization_turns_agree_with_the_energy():
    voices = set(load_tasks().get("speaker_id").closed_labels)
    for i in range(5):
        turns = (item := make("diarization", i)).labels["turns"]
        who = [v for v, _, _ in turns]
        assert 2 <= len(turns) <= 3 and len(set(who)) == 2 and set(who) <= voices
        assert all(a != b for a, b in zip(who, who[1:]))  # turns alternate
        assert all(t[2] < u[1] for t, u in zip(turns, turns[1:]))
        assert_timed(item.audio, [(a, b) for _, a, b in turns])


def test_overlapped_second_talker_starts_inside_the_first():
    for i in range(5):
        item, talkers = speech.overlapped("overlapped_asr", i, np.random.default_rng([0, i]), "train")
        assert np.array_equal(item.audio, make("overlapped_asr", i).audio)
        (v1, s1, e1), (v2, s2, e2) = talkers
        assert s1 < s2 < e1 and speech.gender_of(v1) != speech.gender_of(v2)
        texts = item.labels["texts"]
        assert len(texts) == 2 and texts[0] != texts[1]
        assert_timed(item.audio, [(s1, max(e1, e2))])  # one stretch of speech, no gap
        x = item.audio
        assert peak_in(x, s1, s2) > 0 and peak_in(x, s2, min(e1, e2)) > 0


# ---------------------------------------------------------------- voice, rate, emotion, sounds
def test_female_variants_have_higher_pitch():
    f0 = {"female": [], "male": []}
    for i in range(40):
        item = make("gender", i)
        if len(f0[item.labels["gender"]]) < 5:
            f0[item.labels["gender"]].append(median_f0(item.audio))
        if min(len(v) for v in f0.values()) == 5:
            break
    assert np.mean(f0["female"]) > 1.3 * np.mean(f0["male"]), f0


def test_speaking_rate_orders_durations_of_the_same_sentence():
    for lang, text in (("en", tx.sentence_pool("en")[4]), ("de", tx.sentence_pool("de")[8])):
        dur = {r: len(speech.speak(text, lang, "m2", speech.rate_prosody(r)))
               for r in ("slow", "normal", "fast")}
        assert dur["slow"] > 1.15 * dur["normal"] > 1.15 * 1.15 * dur["fast"], dur
    rates = {make("speaking_rate", i).labels["rate"] for i in range(12)}
    assert rates == {"slow", "normal", "fast"}


def test_emotion_styles_differ_in_loudness_and_pitch():
    peaks, f0 = {}, {}
    for i in range(40):
        item = make("emotion", i)
        e = item.labels["emotion"]
        peaks.setdefault(e, []).append(float(np.max(np.abs(item.audio))))
        f0.setdefault(e, []).append(median_f0(item.audio))
    assert set(peaks) == set(load_tasks().get("emotion").closed_labels)
    assert min(peaks["angry"]) > max(peaks["sad"])
    assert np.mean(f0["happy"]) > np.mean(f0["sad"])


def test_every_vocal_sound_recipe_makes_sound():
    for label in load_tasks().get("vocal_sound").closed_labels:
        for recipe in tx.texts()["vocal_sounds"][label]:
            assert len(speech.vocalisation(recipe, "f2")) > 0.1 * SR, (label, recipe)


def test_keywords_are_the_registry_keywords():
    keywords = set(load_tasks().get("keyword_spotting").closed_labels)
    assert {make("keyword_spotting", i).labels["keyword"] for i in range(20)} <= keywords
    assert all(re.search(rf"\b{k}\b", tx.keyword_phrase(k, np.random.default_rng(0))) for k in keywords)
