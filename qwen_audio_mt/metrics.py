"""The registry's metrics: one scorer per (metric, target kind) pair of tags/tasks.yaml.

`score_task(task, hyps, refs, langs)` scores parsed outputs against references in the canonical
field shapes (text, label, number, words, spans, multilabel, transcripts, entities, slots, tag_seq,
composite), the field names coming from the task's Target. A hypothesis of None (the output did
not parse) is scored as the empty answer: no words, no spans, no label; it is never skipped.
`langs[i]` is item i's text language (None = en).

Scales and choices:
- wer / cer: fractions (may exceed 1), errors pooled over the corpus: (S + D + I) / reference
  units. Text is normalised by Whisper's EnglishTextNormalizer (en) or BasicTextNormalizer (other
  languages); char_level languages of tags/languages.yaml are scored by characters (spaces removed
  after normalising), and metric `cer` scores every item by characters. transcripts (several
  talkers): cpWER, the assignment of hypothesis transcripts to reference talkers (padded with empty
  ones) with the fewest errors. tag_seq: token error rate over the label sequences, no
  normalisation. details: S/D/I/hits, reference units, per-language rate and unit.
- bleu: sacrebleu corpus BLEU, 0-100; tokenizer by target language (text_metrics.bleu_tokenizer),
  mixed-language corpora pre-tokenised per sentence then scored with tokenize="none".
- cider: CIDEr-D as pycocoevalcap reports it (0-10), its Cider scorer fed by a Python
  reproduction of coco-caption's PTBTokenizer (no Java). References: the ref's `captions` list
  when present (several references), else its target field.
- accuracy (fraction): label / tag exact match; text exact match after the WER normalisation;
  number within a relative tolerance (option `tolerance`, default 0.04: MIREX tempo Accuracy1),
  with the MAE over numeric hypotheses and MIREX Accuracy2 (x2, x3, x1/2, x1/3 allowed) in details;
  composite: every part right, per-part accuracy in details.
- f1 (fraction): micro F1, precision and recall in details (None when undefined). multilabel:
  (item, label) pairs; spans: same label (None == None) and onsets within `collar` s (default
  0.2, DCASE's event-based onset collar, inclusive), one-to-one, greedy by onset distance;
  entities: (type, normalised text[start:end] of the item's own text), multisets per item;
  slots: (type, normalised value), multisets per item.
- timestamp_shift (ms): Qwen-Audio's AAS: words aligned by normalised form (jiwer's alignment,
  'equal' chunks; words that normalise to nothing are dropped), then the mean absolute shift of the
  matched words' start and end times. None when no word matched.
"""
from __future__ import annotations

import inspect
import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from . import text_metrics as tm
from .tasks import Task

HIGHER_IS_BETTER = {"wer": False, "cer": False, "bleu": True, "cider": True, "accuracy": True,
                    "f1": True, "timestamp_shift": False}


class MetricError(ValueError):
    """No scorer for a task's (metric, kind), a bad option, or mismatched inputs."""


@dataclass(frozen=True)
class Score:
    metric: str              # the registry's name: "wer", "bleu", ...
    value: float | None      # the headline figure; None when nothing could be scored
    higher_is_better: bool
    n: int                   # items scored
    details: dict = field(default_factory=dict)


def _score(task: Task, value, n: int, **details) -> Score:
    return Score(task.metric, value, HIGHER_IS_BETTER[task.metric], n, details)


def _get(item: dict | None, key: str, empty):
    """An item's field; an unparsed item (None) or a missing field is the empty answer."""
    value = None if item is None else item.get(key)
    return empty if value is None else value


def _mean(xs) -> float | None:
    return sum(xs) / len(xs) if xs else None


# ---------------------------------------------------------------------- wer / cer
def _rate(task: Task, ops: list[tm.EditOps], units: list[str], langs: list[str]) -> Score:
    total, by_lang = tm.EditOps(), {}
    for op, unit, lang in zip(ops, units, langs):
        total = total.plus(op)
        agg = by_lang.setdefault(lang, {"ops": tm.EditOps(), "unit": unit, "n": 0})
        agg["ops"], agg["n"] = agg["ops"].plus(op), agg["n"] + 1
    rate = lambda o: o.errors / o.ref_units if o.ref_units else None
    langs_out = {lang: {"rate": rate(a["ops"]), "ref_units": a["ops"].ref_units, "unit": a["unit"],
                        "n": a["n"]} for lang, a in sorted(by_lang.items())}
    return _score(task, rate(total), len(ops), substitutions=total.substitutions,
                  deletions=total.deletions, insertions=total.insertions, hits=total.hits,
                  ref_units=total.ref_units, by_language=langs_out)


def _unit_names(task: Task, langs) -> list[str]:
    by_char = task.metric == "cer"
    return ["char" if by_char or tm.is_char_level(x) else "word" for x in langs]


def _wer_text(task, hyps, refs, langs):
    f, by_char = task.target.field, task.metric == "cer"
    ops = [tm.edit_ops(tm.text_units(_get(r, f, ""), x, by_char), tm.text_units(_get(h, f, ""), x, by_char))
           for h, r, x in zip(hyps, refs, langs)]
    return _rate(task, ops, _unit_names(task, langs), langs)


def _wer_transcripts(task, hyps, refs, langs):
    f, by_char = task.target.field, task.metric == "cer"
    talkers = lambda item, x: [tm.text_units(t, x, by_char) for t in _get(item, f, [])]
    ops = [tm.cp_edit_ops(talkers(r, x), talkers(h, x)) for h, r, x in zip(hyps, refs, langs)]
    return _rate(task, ops, _unit_names(task, langs), langs)


def _wer_tag_seq(task, hyps, refs, langs):
    f = task.target.field
    ops = [tm.edit_ops([str(t) for t in _get(r, f, [])], [str(t) for t in _get(h, f, [])])
           for h, r in zip(hyps, refs)]
    return _rate(task, ops, ["token"] * len(ops), ["all"] * len(ops))


# ---------------------------------------------------------------------- bleu / cider
def _bleu(task, hyps, refs, langs):
    f = task.target.field
    value, details = tm.corpus_bleu([_get(h, f, "") for h in hyps], [_get(r, f, "") for r in refs], langs)
    return _score(task, value, len(refs), **details)


def _cider(task, hyps, refs, langs):
    f = task.target.field
    references = [list(r.get("captions") or [_get(r, f, "")]) for r in refs]
    value, _ = tm.cider_d([_get(h, f, "") for h in hyps], references)
    return _score(task, value, len(refs), tokenizer="PTBTokenizer 3.4.1 (Python reproduction)",
                  references_per_item=_mean([len(r) for r in references]))


# ---------------------------------------------------------------------- accuracy
def _same(a, b) -> bool:
    return a is not None and b is not None and str(a) == str(b)


def _accuracy(task: Task, correct: list[bool], hyps, **details) -> Score:
    n = len(correct)
    return _score(task, sum(correct) / n if n else None, n, correct=sum(correct),
                  unparsed=sum(h is None for h in hyps), **details)


def _accuracy_label(task, hyps, refs, langs):
    f = task.target.field
    return _accuracy(task, [_same(_get(h, f, None), r.get(f)) for h, r in zip(hyps, refs)], hyps)


def _accuracy_text(task, hyps, refs, langs):
    f = task.target.field
    return _accuracy(task, [tm.normalize(_get(h, f, ""), x) == tm.normalize(_get(r, f, ""), x)
                            for h, r, x in zip(hyps, refs, langs)], hyps)


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _accuracy_number(task, hyps, refs, langs, *, tolerance: float = 0.04):
    f = task.target.field
    correct, correct2, errors = [], [], []
    for h, r in zip(hyps, refs):
        ref, hyp = float(r[f]), _get(h, f, None)
        numeric = _is_number(hyp)   # a non-number is wrong, and left out of the MAE
        ok = [numeric and abs(hyp - k * ref) <= tolerance * abs(k * ref) for k in (1, 2, 3, 1 / 2, 1 / 3)]
        correct.append(ok[0])
        correct2.append(any(ok))
        errors += [abs(hyp - ref)] if numeric else []
    n = len(correct)
    return _accuracy(task, correct, hyps, mae=_mean(errors), non_numeric=n - len(errors),
                     tolerance=tolerance, accuracy2=sum(correct2) / n if n else None)


def _accuracy_composite(task, hyps, refs, langs):
    parts = [p["field"] for p in task.target.parts if "field" in p]
    per = {p: [_same(_get(h, p, None), r.get(p)) for h, r in zip(hyps, refs)] for p in parts}
    correct = [all(per[p][i] for p in parts) for i in range(len(refs))]
    return _accuracy(task, correct, hyps, per_part={p: _mean(v) for p, v in per.items()})


# ---------------------------------------------------------------------- f1
def _prf(task: Task, tp: int, fp: int, fn: int, n: int, **details) -> Score:
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else None
    return _score(task, f1, n, precision=tp / (tp + fp) if tp + fp else None,
                  recall=tp / (tp + fn) if tp + fn else None, tp=tp, fp=fp, fn=fn, **details)


def _bag_f1(task: Task, hyp_bags: list[Counter], ref_bags: list[Counter]) -> Score:
    tp = fp = fn = 0
    for hb, rb in zip(hyp_bags, ref_bags):
        common = sum((hb & rb).values())
        tp, fp, fn = tp + common, fp + sum(hb.values()) - common, fn + sum(rb.values()) - common
    return _prf(task, tp, fp, fn, len(ref_bags))


def _f1_multilabel(task, hyps, refs, langs):
    bag = lambda item: Counter(set(_get(item, task.target.field, [])))
    return _bag_f1(task, [bag(h) for h in hyps], [bag(r) for r in refs])


def _entity_bag(task: Task, item: dict | None, lang: str) -> Counter:
    text = _get(item, task.target.text_field, "")
    return Counter((e.get("type"), tm.normalize(text[int(e["start"]):int(e["end"])], lang))
                   for e in _get(item, task.target.field, []))


def _f1_entities(task, hyps, refs, langs):
    return _bag_f1(task, [_entity_bag(task, h, x) for h, x in zip(hyps, langs)],
                   [_entity_bag(task, r, x) for r, x in zip(refs, langs)])


def _f1_slots(task, hyps, refs, langs):
    bag = lambda item, x: Counter((s.get("type"), tm.normalize(s.get("value"), x))
                                  for s in _get(item, task.target.field, []))
    return _bag_f1(task, [bag(h, x) for h, x in zip(hyps, langs)], [bag(r, x) for r, x in zip(refs, langs)])


def _onset_pairs(hyp: list[dict], ref: list[dict], collar: float) -> list[tuple[int, int]]:
    """One-to-one (hyp, ref) matches: same label, onsets within the collar, closest first."""
    eps = 1e-9  # inclusive collar despite float noise (|2.2 - 2.0| > 0.2 in binary)
    cands = sorted((abs(h["start"] - r["start"]), j, i) for i, h in enumerate(hyp) for j, r in enumerate(ref)
                   if h.get("label") == r.get("label") and abs(h["start"] - r["start"]) <= collar + eps)
    used_h, used_r, pairs = set(), set(), []
    for _, j, i in cands:
        if i not in used_h and j not in used_r:
            used_h.add(i)
            used_r.add(j)
            pairs.append((i, j))
    return pairs


def _f1_spans(task, hyps, refs, langs, *, collar: float = 0.2):
    f, tp, fp, fn, shifts = task.target.field, 0, 0, 0, []
    for h, r in zip(hyps, refs):
        hs, rs = _get(h, f, []), _get(r, f, [])
        pairs = _onset_pairs(hs, rs, collar)
        tp, fp, fn = tp + len(pairs), fp + len(hs) - len(pairs), fn + len(rs) - len(pairs)
        shifts += [abs(hs[i]["start"] - rs[j]["start"]) for i, j in pairs]
    return _prf(task, tp, fp, fn, len(refs), collar_s=collar, onset_mae_s=_mean(shifts))


# ---------------------------------------------------------------------- timestamp_shift
def _keyed_words(words: list[dict], lang: str) -> list[tuple[str, dict]]:
    keyed = ((tm.normalize(w.get("word"), lang), w) for w in words)
    return [(k, w) for k, w in keyed if k]


def _timestamp_shift(task, hyps, refs, langs):
    f, shifts, n_ref, n_hyp, matched = task.target.field, [], 0, 0, 0
    for h, r, x in zip(hyps, refs, langs):
        hw, rw = _keyed_words(_get(h, f, []), x), _keyed_words(_get(r, f, []), x)
        n_ref, n_hyp = n_ref + len(rw), n_hyp + len(hw)
        for c in tm.edit_ops([k for k, _ in rw], [k for k, _ in hw]).chunks:
            if c.type != "equal":
                continue
            for a, b in zip(range(c.ref_start_idx, c.ref_end_idx), range(c.hyp_start_idx, c.hyp_end_idx)):
                matched += 1
                shifts += [abs(hw[b][1][edge] - rw[a][1][edge]) for edge in ("start", "end")]
    value = 1000 * _mean(shifts) if shifts else None
    return _score(task, value, len(refs), matched_words=matched, reference_words=n_ref,
                  hypothesis_words=n_hyp, word_recall=matched / n_ref if n_ref else None, unit="ms")


# ---------------------------------------------------------------------- registry
SCORERS: dict[tuple[str, str], Callable[..., Score]] = {
    ("wer", "text"): _wer_text, ("cer", "text"): _wer_text,
    ("wer", "transcripts"): _wer_transcripts, ("cer", "transcripts"): _wer_transcripts,
    ("wer", "tag_seq"): _wer_tag_seq,
    ("bleu", "text"): _bleu,
    ("cider", "text"): _cider,
    ("accuracy", "label"): _accuracy_label, ("accuracy", "tag"): _accuracy_label,
    ("accuracy", "text"): _accuracy_text, ("accuracy", "number"): _accuracy_number,
    ("accuracy", "composite"): _accuracy_composite,
    ("f1", "multilabel"): _f1_multilabel, ("f1", "spans"): _f1_spans,
    ("f1", "entities"): _f1_entities, ("f1", "slots"): _f1_slots,
    ("timestamp_shift", "words"): _timestamp_shift,
}


def scorer_for(task: Task) -> Callable[..., Score]:
    key = (task.metric, task.target.kind)
    if key not in SCORERS:
        kinds = sorted(k for m, k in SCORERS if m == task.metric)
        raise MetricError(f"task {task.name!r}: no scorer for metric {task.metric!r} on target kind "
                          f"{task.target.kind!r} (implemented kinds for {task.metric!r}: "
                          f"{', '.join(kinds) or 'none'})")
    return SCORERS[key]


def score_task(task: Task, hyps: Sequence[dict | None], refs: Sequence[dict],
               langs: Sequence[str | None] | None = None, **options) -> Score:
    """Score parsed hypotheses against references; options go to the scorer (tolerance, collar)."""
    scorer = scorer_for(task)
    hyps, refs = list(hyps), list(refs)
    langs = [x or "en" for x in (langs if langs is not None else [None] * len(refs))]
    if not len(hyps) == len(refs) == len(langs):
        raise MetricError(f"task {task.name!r}: {len(hyps)} hypotheses, {len(refs)} references, "
                          f"{len(langs)} languages")
    accepted = [p.name for p in inspect.signature(scorer).parameters.values() if p.kind is p.KEYWORD_ONLY]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise MetricError(f"task {task.name!r}: unknown option(s) {', '.join(unknown)} for "
                          f"{task.metric}/{task.target.kind}; accepted: {', '.join(accepted) or 'none'}")
    return scorer(task, hyps, refs, langs, **options)


def margin_points(metric: str, value: float | None, baseline: float | None) -> float | None:
    """How much better than the baseline, in points, positive = better for every metric.

    accuracy, f1, cider: 100 x (value - baseline); wer, cer: 100 x (baseline - value);
    bleu (already 0-100): value - baseline; timestamp_shift: the relative improvement in % of the
    baseline, 100 x (baseline - value) / baseline (0 when both are 0, None for a 0 baseline
    otherwise). None when either figure is None.
    """
    if metric not in HIGHER_IS_BETTER:
        raise MetricError(f"unknown metric {metric!r}; one of {', '.join(HIGHER_IS_BETTER)}")
    if value is None or baseline is None:
        return None
    if metric == "timestamp_shift":
        if baseline == 0:
            return 0.0 if value == 0 else None
        return 100.0 * (baseline - value) / baseline
    diff = value - baseline if HIGHER_IS_BETTER[metric] else baseline - value
    return diff if metric == "bleu" else 100.0 * diff
