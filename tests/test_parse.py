"""parse.py: the exact inverse of targets.py, on the embedded corpus and on malformed outputs."""
import json
import subprocess
import sys
import tarfile

import pytest

from qwen_audio_mt.data.mixture import MixtureConfig, SourceConfig, components, label_sets
from qwen_audio_mt.parse import ParseError, Parsed, expected_fields, parse_output, parse_target
from qwen_audio_mt.render import Renderer
from qwen_audio_mt.targets import TargetError, render_target, target_for
from qwen_audio_mt.tasks import TARGET_KINDS

WORDS = [["Please", 0.26, 0.7], ["open", 0.74, 1.18], ["the", 1.21, 1.49], ["window", 1.55, 2.04]]


def ids_of(tok, *pieces):
    """Tags by name, anything else as free text."""
    return [i for p in pieces for i in ([tok.token_id(p)] if p in tok.special_ids else tok.encode(p))]


@pytest.fixture(scope="module")
def corpus(small_corpus):
    """(label sets, samples) of the test and train splits, read from the tars' .json members."""
    cfg = MixtureConfig((SourceConfig(str(small_corpus / "embedded")),))
    samples = []
    for split in ("test", "train"):
        for comp in components(cfg, split):
            for url in comp.urls:
                with tarfile.open(url) as tf:
                    samples += [json.load(tf.extractfile(m)) for m in tf if m.name.endswith(".json")]
    # A timestamped transcript is the SRWT form: ASR samples built from the word-timing ones.
    samples += [{**s, "task": "asr", "timestamps": True} for s in samples if s["task"] == "word_timestamps"]
    return label_sets(cfg), samples


def round_trip(renderer, samples):
    tok, tasks, kinds = renderer.tok, set(), set()
    for s in samples:
        task, ts = renderer.task(s["task"]), bool(s.get("timestamps"))
        target = target_for(task, ts)
        ids = render_target(target, s, tok, task.name)
        got = parse_output(task, ids + [tok.end_id], tok, timestamps=ts)
        assert got.parse_error is None, (s["key"], got.parse_error)
        assert got.fields == expected_fields(task, s, tok, timestamps=ts), s["key"]
        assert json.loads(json.dumps(got.fields)) == got.fields, s["key"]  # plain JSON values
        assert render_target(target, got.fields, tok, task.name) == ids, s["key"]  # idempotent
        tasks.add(task.name)
        kinds.add(target.kind)
    assert tasks == set(renderer.registry.names) and len(tasks) == len(renderer.registry)
    assert kinds == set(TARGET_KINDS)


def test_round_trip_embedded_corpus(whisper_tok, corpus):
    sets, samples = corpus
    round_trip(Renderer(whisper_tok, label_sets=sets), samples)


def test_round_trip_qwen_base(qwen_tok, corpus):
    sets, samples = corpus
    round_trip(Renderer(qwen_tok, label_sets=sets), samples)


def test_canonical_labels_are_the_raw_values(renderer, corpus):
    seen = set()
    for s in corpus[1]:
        task = renderer.task(s["task"])
        if task.target.kind in ("text", "label") and not s.get("timestamps"):
            assert expected_fields(task, s, renderer.tok) == {task.target.field: s[task.target.field]}
            seen.add(task.target.kind)
        elif task.name == "named_entity_recognition":
            ents = [{"start": a, "end": b, "type": e} for a, b, e in s["entities"]]
            assert expected_fields(task, s, renderer.tok) == {"text": s["text"], "entities": ents}
    assert seen == {"text", "label"}


def test_expected_fields_canonicalise_raw_labels(renderer):
    tok = renderer.tok
    got = expected_fields(renderer.task("word_timestamps"), {"words": WORDS}, tok)
    # SRWT is lossy: a 0.04-s gap becomes one boundary at its midpoint.
    assert got["words"][:2] == [{"word": "Please", "start": 0.26, "end": 0.72},
                                {"word": "open", "start": 0.72, "end": 1.19}]
    assert expected_fields(renderer.task("music_pitch"), {"pitch": 71}, tok) == {"pitch": "71"}
    assert expected_fields(renderer.task("tempo"), {"tempo": 92.5}, tok) == {"tempo": 92.5}
    assert expected_fields(renderer.task("sound_tagging"), {"labels": ["clap", "siren"]}, tok) == {
        "labels": ["siren", "clap"]}  # label-set order
    turns = {"turns": [["m2", 2.004, 3], ["m1", 0.1, 1.6]]}  # sorted and quantised as rendered
    assert expected_fields(renderer.task("diarization"), turns, tok) == {"turns": [
        {"label": "m1", "start": 0.1, "end": 1.6}, {"label": "m2", "start": 2.0, "end": 3.0}]}
    assert expected_fields(renderer.task("audio_grounding"), {"spans": [[0.71, 1.78]]}, tok) == {
        "spans": [{"label": None, "start": 0.71, "end": 1.78}]}
    with pytest.raises(TargetError, match="not one of its labels"):
        expected_fields(renderer.task("gender"), {"gender": "robot"}, tok)


def test_timestamped_asr_parses_words(renderer):
    tok, asr = renderer.tok, renderer.task("asr")
    ids = render_target(target_for(asr, True), {"words": WORDS}, tok, "asr")
    got = parse_output(asr, ids + [tok.end_id], tok, timestamps=True)
    assert got.fields == {"words": [{"word": "Please", "start": 0.26, "end": 0.72},
                                    {"word": "open", "start": 0.72, "end": 1.19},
                                    {"word": "the", "start": 1.19, "end": 1.52},
                                    {"word": "window", "start": 1.52, "end": 2.04}]}
    # without timestamps the same output is a transcript with a tag inside
    plain = parse_output(asr, ids, tok)
    assert plain.fields is None and plain.parse_error == "position 0: found <|0.00|>, expected text"


def test_text_shows_tags_by_name(renderer):
    tok, task = renderer.tok, renderer.task("word_timestamps")
    ids = render_target(task.target, {"words": WORDS}, tok, task.name)
    got = parse_output(task, ids + [tok.end_id], tok)
    assert got.text == "<|0.00|><|sil|><|0.26|>Please<|0.72|>open<|1.19|>the<|1.52|>window<|2.04|>"
    bad = parse_output(task, ids_of(tok, "<|0.26|>", "Please", "<|sil|>"), tok)
    assert bad.text == "<|0.26|>Please<|sil|>" and bad.fields is None


def test_specific_outputs_parse(renderer):
    tok = renderer.tok

    def p(name, *pieces):
        return parse_output(renderer.task(name), ids_of(tok, *pieces), tok)

    assert p("tempo", "120").fields == {"tempo": 120} and type(p("tempo", "120").fields["tempo"]) is int
    assert p("tempo", "92.5").fields == {"tempo": 92.5}
    assert p("language_id", "<|de|>", "<|im_end|>").fields == {"audio_lang": "de"}
    assert p("music_pitch", "<|midi_pitch_60|>").fields == {"pitch": "60"}
    assert p("melody", "<|midi_pitch_83|>", "<|midi_pitch_86|>").fields == {"notes": ["83", "86"]}
    assert p("melody").fields == {"notes": []}
    assert p("sound_tagging", "clap, siren, clap").fields == {"labels": ["siren", "clap"]}  # a set
    assert p("sound_tagging").fields == {"labels": []}
    assert p("overlapped_asr", "one", "<|delim|>", "two").fields == {"texts": ["one", "two"]}
    assert p("audio_grounding", "<|0.71|>", "<|1.78|>").fields == {
        "spans": [{"label": None, "start": 0.71, "end": 1.78}]}
    ner = p("named_entity_recognition", "Call ", "<|startofentityvalue|>", "Anna", "<|endofentityvalue|>",
            "<|startofentitytype|>", "person", "<|endofentitytype|>", " now")
    assert ner.fields == {"text": "Call Anna now", "entities": [{"start": 5, "end": 9, "type": "person"}]}
    assert p("slot_filling", "<|startofentitytype|>", "city", "<|endofentitytype|>", "<|startofentityvalue|>",
             "seoul", "<|endofentityvalue|>").fields == {"slots": [{"type": "city", "value": "seoul"}]}
    assert p("asr", "<|en|> as text").fields == {"text": "<|en|> as text"}  # encoded text, not a tag
    assert p("asr").fields == {"text": ""}


def test_label_set_of_the_callers_renderer(whisper_tok):
    task = Renderer(whisper_tok, label_sets={"sound_event": ["dog", "cat"]}).task("sound_event")
    assert parse_output(task, whisper_tok.encode("dog"), whisper_tok).fields == {"label": "dog"}
    bad = parse_output(task, whisper_tok.encode("siren"), whisper_tok)
    assert bad.fields is None
    assert bad.parse_error == "position 0: label 'siren' is not one of the labels (dog, cat)"


FULL_NOTE = ("<|pitch|>", "<|midi_pitch_80|>", "<|velocity|>", "<|midi_velocity_100|>", "<|instrument|>")
VS, VE = "<|startofentityvalue|>", "<|endofentityvalue|>"
TS, TE = "<|startofentitytype|>", "<|endofentitytype|>"
# (task, output pieces, what the error says); an int k: it starts "position P: " with P the
# token position of pieces[k] (free-text pieces may be several tokens).
MALFORMED = [
    ("gender", ["robot"], [0, "label 'robot' is not one of the labels (female, male)"]),
    ("gender", [], [0, "empty label", "female, male"]),
    ("gender", ["male", "<|en|>"], [1, "found <|en|>", "expected text"]),
    ("asr", ["hello", "<|0.00|>", " world"], [1, "found <|0.00|>, expected text"]),
    ("word_timestamps", ["<|0.26|>", "Please", "<|sil|>", "<|1.00|>"],
     [2, "found <|sil|>", "after 'Please' (two segments in a row)"]),
    ("word_timestamps", ["<|0.26|>", "<|sil|>", "open", "<|1.00|>"],
     ["found text 'open'", "two segments in a row"]),
    ("word_timestamps", ["<|0.26|>", "Please", "<|0.72|>", "open"],
     [4, "found the end of the output, expected a time token after 'open'"]),
    ("word_timestamps", ["<|0.26|>", "Please", "<|0.72|>", "open", "<|0.50|>"],
     [4, "time 0.50 goes back from 0.72"]),
    ("word_timestamps", ["Please", "<|0.72|>"], [0, "found text 'Please', expected a time token"]),
    ("word_timestamps", ["<|0.26|>", "<|0.72|>"], [1, "found <|0.72|>", "empty segment"]),
    ("word_timestamps", [], ["found the end of the output, expected a time token"]),
    ("word_timestamps", ["<|0.26|>", "Please", "<|en|>"], [2, "found <|en|>", "time token"]),
    ("sound_event_detection", ["<|0.51|>", "buzzer"],
     [2, "found the end of the output, expected the end time of span 'buzzer'"]),
    ("sound_event_detection", ["<|0.51|>", "buzzer", "<|2.44|>", "knock", "<|2.84|>"],
     [3, "found text 'knock', expected the start time of a span"]),
    ("sound_event_detection", ["<|0.51|>", "dog", "<|1.31|>"], [1, "span label 'dog' is not one of"]),
    ("sound_event_detection", ["<|0.51|>", "<|1.31|>"], [1, "found <|1.31|>, expected a span label"]),
    ("sound_event_detection", ["<|1.51|>", "knock", "<|1.31|>"], [2, "ends at 1.31, before it starts"]),
    ("audio_grounding", ["<|0.71|>"], [1, "expected the end time of the span"]),
    ("diarization", ["<|0.10|>", "m1", "<|1.60|>", "<|2.00|>", "m9", "<|3.00|>"], [4, "'m9'"]),
    ("melody", ["<|midi_pitch_83|>", "<|en|>"], [1, "found <|en|>", "<|midi_pitch_0|>"]),
    ("melody", ["<|midi_pitch_83|>", "86"], [1, "found text '86'", "expected one of the tags"]),
    ("note_analysis", [*FULL_NOTE[:2], *FULL_NOTE[4:], "mallet"],
     [2, "found <|instrument|>, expected <|velocity|>"]),
    ("note_analysis", FULL_NOTE[:2], [2, "found the end of the output, expected <|velocity|>"]),
    ("note_analysis", [*FULL_NOTE, "banjo"], [5, "instrument 'banjo' is not one of the labels"]),
    ("note_analysis", FULL_NOTE, [5, "empty instrument"]),
    ("note_analysis", [*FULL_NOTE, "mallet", "<|pitch|>"],
     ["found <|pitch|>, expected the end of the output"]),
    ("note_analysis", ["<|pitch|>", "<|midi_velocity_3|>"], [1, "expected a tag <|midi_pitch_{}|>"]),
    ("tempo", ["fast"], [0, "'fast' is not a number"]),
    ("tempo", ["nan"], ["'nan' is not a number"]),
    ("tempo", ["120", "<|0.00|>"], [1, "found <|0.00|>, expected a number"]),
    ("tempo", [], ["'' is not a number"]),
    ("named_entity_recognition", ["Call ", VS, "Anna"],
     ["found the end of the output, expected <|endofentityvalue|> after entity 'Anna'"]),
    ("named_entity_recognition", ["Call ", VS, "Anna", VE, TS, "animal", TE],
     ["entity type 'animal' is not one of the labels"]),
    ("named_entity_recognition", [VS, "Anna", VE, " now"],
     ["found text ' now', expected <|startofentitytype|>"]),
    ("named_entity_recognition", [VS, VE], [1, "expected the entity's text"]),
    ("named_entity_recognition", ["Call", VE], [1, "found <|endofentityvalue|>"]),
    ("slot_filling", [TS, "city", TE, VS, "seoul"],
     ["expected <|endofentityvalue|> after slot value 'seoul'"]),
    ("slot_filling", [TS, "planet", TE, VS, "mars", VE], [1, "slot type 'planet' is not one of"]),
    ("slot_filling", ["seoul"], [0, "found text 'seoul', expected <|startofentitytype|>"]),
    ("overlapped_asr", ["one", "<|en|>", "two"], [1, "found <|en|>, expected text or <|delim|>"]),
    ("sound_tagging", ["siren, dog"], ["label 'dog' is not one of the labels"]),
    ("sound_tagging", ["siren,clap"], ["label 'siren,clap' is not one of the labels"]),
    ("language_id", ["<|zh_tr|>"], [0, "found <|zh_tr|>, expected one of the tags <|en|>, <|zh|>"]),
    ("language_id", ["en"], [0, "found text 'en'"]),
    ("language_id", ["<|en|>", "<|en|>"], [1, "found <|en|>, expected the end of the output"]),
    ("language_id", [], [0, "found the end of the output"]),
    ("music_pitch", ["<|midi_velocity_60|>"], ["found <|midi_velocity_60|>", "<|midi_pitch_0|>"]),
]


@pytest.mark.parametrize("task, pieces, says", MALFORMED,
                         ids=[f"{m[0]}-{i}" for i, m in enumerate(MALFORMED)])
def test_malformed_outputs(renderer, task, pieces, says):
    tok = renderer.tok
    got = parse_output(renderer.task(task), ids_of(tok, *pieces) + [tok.end_id], tok)
    assert isinstance(got, Parsed) and got.fields is None
    assert "\n" not in got.parse_error
    for s in says:
        if isinstance(s, int):
            assert got.parse_error.startswith(f"position {len(ids_of(tok, *pieces[:s]))}: "), got.parse_error
        else:
            assert s in got.parse_error, got.parse_error
    with pytest.raises(ParseError):  # parse_target raises what parse_output reports
        parse_target(target_for(renderer.task(task)), ids_of(tok, *pieces), tok)


def test_ids_outside_the_vocabulary(renderer):
    tok, task = renderer.tok, renderer.task("asr")
    got = parse_output(task, tok.encode("hi") + [tok.n_vocab + 5], tok)
    assert got.fields is None and got.text == "hi"
    n = tok.n_vocab
    assert got.parse_error == f"position 1: id {n + 5} is not in the vocabulary (0..{n - 1})"
    assert parse_output(task, ["x"], tok).parse_error == "the output is not a sequence of integer ids"
    # only a trailing end token is dropped; one inside is a tag where text belongs
    mid = parse_output(task, tok.encode("a") + [tok.end_id] + tok.encode("b"), tok)
    assert mid.parse_error == "position 1: found <|endoftext|>, expected text"


def test_imports_no_torch():
    code = "import sys, qwen_audio_mt.parse; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_mutated_targets_never_raise(renderer, corpus):
    """Every prefix, deletion and adjacent swap of one rendered target per task: a Parsed, with
    either plain JSON fields or a one-line error."""
    tok, firsts = renderer.tok, {}
    for s in corpus[1]:
        firsts.setdefault((s["task"], bool(s.get("timestamps"))), s)
    for (name, ts), s in firsts.items():
        task = renderer.task(name)
        ids = render_target(target_for(task, ts), s, tok, name)
        variants = [ids[:i] for i in range(len(ids))] + [ids[:i] + ids[i + 1:] for i in range(len(ids))]
        variants += [ids[:i] + ids[i + 1:i + 2] + ids[i:i + 1] + ids[i + 2:] for i in range(len(ids) - 1)]
        for v in variants:
            got = parse_output(task, v, tok, timestamps=ts)
            assert (got.fields is None) != (got.parse_error is None), (name, got)
            if got.fields is None:
                assert got.parse_error and "\n" not in got.parse_error
            else:
                assert json.loads(json.dumps(got.fields)) == got.fields
