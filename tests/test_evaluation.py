"""Evaluation: every task scored with its registry metric beside a baseline, against independent
computations (ranking, generation + parsing + metrics, train-split baselines); batching does
not change a figure; subsets, caps, source filters."""
from __future__ import annotations

import json
from collections import Counter

import pytest

from qwen_audio_mt import metrics as M
from qwen_audio_mt import scoring
from qwen_audio_mt.data.reader import read_split
from qwen_audio_mt.evaluation import EvalConfig, evaluate_model, subset_keys
from qwen_audio_mt.generate import GenerationConfig, Generator, Request
from qwen_audio_mt.parse import expected_fields, parse_output
from qwen_audio_mt.tasks import load_tasks
from test_scoring import eval_items, tiny_model

FSDD = {"digit_recognition": 60, "fsdd_speaker": 24}


@pytest.fixture(scope="module")
def model():
    return tiny_model()


def generated(model, rend, items, max_new: int):
    """Greedy answers of the items, parsed, the plain way (one Generator call)."""
    task = rend.task(items[0].sample["task"])
    reqs = [Request(it.example.ids[: it.example.loss_mask.index(1)], scoring.clip_audio(model, it.example)[0])
            for it in items]
    outs = Generator(model, rend.tok, GenerationConfig(max_new_tokens=max_new)).generate(reqs)
    return [parse_output(task, g.tokens, rend.tok).fields for g in outs]


def most_frequent_train(folder, task: str, field: str) -> str:
    labels = [str(s[field]) for s in read_split([str(folder)], "train", tasks={task}, audio=False)]
    counts = Counter(labels)
    return next(x for x in labels if counts[x] == max(counts.values()))  # ties: first seen


def test_closed_tasks(model, fsdd_shards, renderer):
    out = evaluate_model(model, renderer, [str(fsdd_shards)], EvalConfig(progress=False))
    assert out["split"] == "test" and set(out["tasks"]) == set(FSDD)
    rend, by_task = eval_items(renderer, fsdd_shards)
    for name, m in out["tasks"].items():
        task, its = rend.task(name), by_task[name]
        labels, field = task.target.labels, task.target.field
        assert (m["kind"], m["metric"], m["n"], m["higher_is_better"]) == ("closed", "accuracy", FSDD[name], True)
        ranked, _ = scoring.rank_labels(model, rend, its, labels)
        assert m["value"] == sum(r.pick == r.truth for r in ranked) / len(its)
        truths = [str(it.sample[field]) for it in its]
        mode = most_frequent_train(fsdd_shards, name, field)
        assert m["baselines"] == {"chance": pytest.approx(1 / len(labels)),
                                  "majority": truths.count(mode) / len(truths)}
        assert m["baseline"] == max(m["baselines"].values())
        assert m["margin_points"] == pytest.approx(100 * (m["value"] - m["baseline"]))
        # free generation, parsed, beside the ranking (a label is 1-2 tokens + the end token)
        hyps = generated(model, rend, its, max_new=m_budget(rend, fsdd_shards, name))
        assert m["generated"] == sum(h is not None and h[field] == t for h, t in zip(hyps, truths)) / len(its)
        assert m["parse_errors"] == sum(h is None for h in hyps)
    s = out["summary"]
    assert (s["tasks"], s["closed_tasks"], s["open_tasks"]) == (2, 2, 0)
    assert s["aggregate"] == pytest.approx(sum(m["margin_points"] for m in out["tasks"].values()) / 2)


def m_budget(rend, folder, task: str) -> int:
    """1.25 x the longest training target (+ end token) + 4."""
    from qwen_audio_mt.targets import render_target
    t = rend.task(task)
    longest = max(len(render_target(t.target, s, rend.tok, task)) + 1
                  for s in read_split([str(folder)], "train", tasks={task}, audio=False))
    return -(-5 * longest // 4) + 4


def test_open_task_wer_and_the_empty_baseline(model, asr_shards, renderer):
    folder, n = asr_shards
    out = evaluate_model(model, renderer, [str(folder)], EvalConfig(progress=False, max_new_tokens=12))
    m = out["tasks"]["asr"]
    rend, by_task = eval_items(renderer, folder)
    task, its = rend.task("asr"), by_task["asr"]
    hyps = generated(model, rend, its, max_new=12)  # no train split: the cap is the budget
    refs = [expected_fields(task, it.sample, rend.tok) for it in its]
    want = M.score_task(task, hyps, refs, ["en"] * n)
    assert (m["kind"], m["metric"], m["n"], m["higher_is_better"]) == ("open", "wer", n, False)
    assert m["value"] == pytest.approx(want.value) and m["details"] == json.loads(json.dumps(want.details))
    # no training split in this folder: the only baseline is the empty answer (every word deleted)
    assert m["baselines"] == {"empty": 1.0} and m["baseline"] == 1.0
    assert m["margin_points"] == pytest.approx(100 * (1.0 - m["value"]))
    assert m["loss"] is None  # teacher forcing of open tasks is off by default
    tf = evaluate_model(model, renderer, [str(folder)], EvalConfig(progress=False, max_new_tokens=12,
                                                                   teacher_forcing=True))["tasks"]["asr"]
    lp, tokens, ok = scoring.teacher_forced(model, its, rend).sum(0).tolist()
    assert tf["loss"] == pytest.approx(-lp / tokens, rel=1e-5) and tf["token_accuracy"] == pytest.approx(ok / tokens)
    assert tf["value"] == m["value"]


@pytest.fixture(scope="module")
def corpus_eval(model, small_corpus, renderer):
    src = [str(small_corpus / "embedded")]
    return src, evaluate_model(model, renderer, src, EvalConfig(progress=False, max_new_tokens=24))


def test_every_registry_task_has_its_metric_and_a_baseline(corpus_eval, small_corpus):
    src, out = corpus_eval
    reg = load_tasks()
    index = json.loads((small_corpus / "embedded" / "index.json").read_text())
    assert set(out["tasks"]) == set(reg.names) and out["summary"]["tasks"] == len(reg)
    for name, m in out["tasks"].items():
        task = reg.get(name)
        assert m["metric"] == task.metric and m["n"] == index["tasks"][name]["splits"]["test"]
        assert m["higher_is_better"] == M.HIGHER_IS_BETTER[task.metric]
        assert m["baseline"] is not None, name
        if m["value"] is not None:
            assert m["margin_points"] == pytest.approx(M.margin_points(task.metric, m["value"], m["baseline"]))
    assert out["tasks"]["word_timestamps"]["baselines"].keys() == {"most_frequent", "uniform"}
    assert out["tasks"]["asr"]["baselines"].keys() == {"most_frequent", "empty"}


def test_open_baseline_is_the_most_frequent_training_answer(corpus_eval, renderer):
    src, out = corpus_eval
    task = renderer.task("sound_aqa")
    train = [s["answer"] for s in read_split(src, "train", tasks={"sound_aqa"}, audio=False)]
    top = max(Counter(train).values())
    mode = next(a for a in train if Counter(train)[a] == top)
    refs = [expected_fields(task, s, renderer.tok) for s in read_split(src, "test", tasks={"sound_aqa"}, audio=False)]
    want = M.score_task(task, [{"answer": mode}] * len(refs), refs).value
    assert out["tasks"]["sound_aqa"]["baselines"]["most_frequent"] == pytest.approx(want)


def test_batching_changes_no_figure(model, corpus_eval, renderer):
    """One clip, one row, one candidate at a time gives the same table as the batched run."""
    src, batched = corpus_eval
    single = evaluate_model(model, renderer, src, EvalConfig(progress=False, max_new_tokens=24, batch_size=1,
                                                             batch_rows=1, chunk=1))
    for name, m in batched["tasks"].items():
        s = single["tasks"][name]
        for key in ("value", "baseline", "generated", "n", "parse_errors"):
            assert s.get(key) == pytest.approx(m.get(key)), (name, key)


def test_seeded_subset(small_corpus):
    src = [str(small_corpus / "embedded")]
    a, b, c = (subset_keys(src, "test", 1, seed) for seed in (0, 0, 1))
    assert a == b and a != c
    tasks = Counter(s["task"] for s in read_split(src, "test", keys=set(a), audio=False))
    assert set(tasks.values()) == {1} and len(tasks) == len(load_tasks())


def test_keys_max_per_task_and_source_filter(model, fsdd_shards, renderer):
    from qwen_audio_mt.data.mixture import SourceConfig
    out = evaluate_model(model, renderer, [str(fsdd_shards)], EvalConfig(progress=False, max_per_task=7))
    assert {m["n"] for m in out["tasks"].values()} == {7}
    src = SourceConfig(str(fsdd_shards), weight=2.0, tasks=("fsdd_speaker",))
    out = evaluate_model(model, renderer, [src], EvalConfig(progress=False, max_per_task=5))
    assert list(out["tasks"]) == ["fsdd_speaker"] and out["tasks"]["fsdd_speaker"]["n"] == 5
    keys = subset_keys([str(fsdd_shards)], "test", 3, seed=4)
    out = evaluate_model(model, renderer, [str(fsdd_shards)], EvalConfig(progress=False, keys=keys))
    assert {m["n"] for m in out["tasks"].values()} == {3}


def test_model_mode_restored(model, fsdd_shards, renderer):
    model.train()
    try:
        evaluate_model(model, renderer, [str(fsdd_shards)], EvalConfig(progress=False, max_per_task=2))
        assert model.training
    finally:
        model.eval()
