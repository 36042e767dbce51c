"""Scoring: label ranking against a per-candidate reference, baselines, caps, a doctored LM
head, and open-task teacher forcing, on real FSDD shards with a tiny random model."""
from __future__ import annotations

import copy
import json
from collections import Counter

import pytest
import torch

from conftest import need_data
from qwen_audio_mt import scoring
from qwen_audio_mt.render import IGNORE
from qwen_audio_mt.model.builders import LLMConfig, ModelConfig, build_model
from qwen_audio_mt.model.encoder import EncoderConfig

TASKS = {"digit_recognition": 60, "fsdd_speaker": 24}  # test samples in the fixture's index


def tiny_model(seed: int = 0):
    """Random weights at a large init scale: at the usual 0.02 the label prior drowns the audio
    and every digit clip gets the same pick, which would make the comparisons weak."""
    torch.manual_seed(seed)
    cfg = ModelConfig(EncoderConfig(n_state=64, n_head=2, n_layer=1),
                      LLMConfig(config=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                                            num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=True,
                                            initializer_range=1.0)))
    return build_model(cfg).eval()


@pytest.fixture(scope="module")
def model():
    return tiny_model()


@pytest.fixture(scope="module")
def items(fsdd_shards, renderer):
    """Every test item of the fixture, by task, in shard order."""
    rend, feat, comps = scoring.prepare(renderer, [str(fsdd_shards)], "test")
    by_task: dict[str, list] = {}
    for it in scoring.read_items(feat, comps, None, Counter()):
        by_task.setdefault(it.sample["task"], []).append(it)
    return rend, by_task


def forward_one(model, ids, mask, mel) -> tuple[float, float, float]:
    """The plain way: one row, the clip's own mel, no shared audio, no padding."""
    ids_t = torch.tensor([ids])
    labels = torch.where(torch.tensor([mask], dtype=torch.bool), ids_t, IGNORE)
    with torch.no_grad():
        out = model(ids_t, torch.ones_like(ids_t), mel[None], torch.tensor([mel.shape[1]]), labels)
    return out.sample_logprob.item(), out.sample_tokens.item(), out.sample_correct.item()


@pytest.fixture(scope="module")
def reference(model, items):
    """Per task: per item (scores of every label, pick, truth, true-label forward)."""
    rend, by_task = items
    out = {}
    for task, its in by_task.items():
        target = rend.task(task).target
        rows = []
        for it in its:
            scores = [forward_one(model, *rend.render({**it.sample, target.field: label}, n_audio=it.example.n_audio),
                                  it.example.mel)[0] for label in target.labels]
            pick = max(range(len(scores)), key=lambda j: (scores[j], -j))
            truth = target.labels.index(str(it.sample[target.field]))
            rows.append((scores, pick, truth, forward_one(model, it.example.ids, it.example.loss_mask, it.example.mel)))
        out[task] = rows
    return out


def test_ranking_matches_per_candidate_reference(model, items, reference):
    rend, by_task = items
    assert {t: len(v) for t, v in by_task.items()} == TASKS
    for task, its in by_task.items():
        labels = rend.task(task).target.labels
        ranked, truth = scoring.rank_labels(model, rend, its, labels, batch_rows=7)  # chunks span clips
        ref = reference[task]
        assert [r.pick for r in ranked] == [r[1] for r in ref]
        assert [r.truth for r in ranked] == [r[2] for r in ref]
        assert torch.allclose(torch.tensor([r.scores for r in ranked]), torch.tensor([r[0] for r in ref]), atol=1e-4)
        assert torch.allclose(truth, torch.tensor([r[3] for r in ref]), atol=1e-4)
        assert len({r.pick for r in ranked}) > 1  # picks vary with the clip: the comparison has teeth


def test_evaluate_model_metrics(model, items, reference, fsdd_shards, renderer):
    rend, _ = items
    index = json.loads((fsdd_shards / "index.json").read_text())
    out = scoring.evaluate_model(model, renderer, [str(fsdd_shards)], "test", batch_rows=32, progress=False)
    assert out["split"] == "test" and set(out["tasks"]) == set(TASKS)
    for task, m in out["tasks"].items():
        ref, labels = reference[task], rend.task(task).target.labels
        assert m["n"] == TASKS[task] == index["tasks"][task]["splits"]["test"]
        assert (m["kind"], m["domain"], m["metric"]) == ("closed", "speech", "accuracy")
        assert m["accuracy"] == sum(r[1] == r[2] for r in ref) / len(ref)
        assert m["chance"] == pytest.approx(1 / len(labels))
        truths = Counter(r[2] for r in ref)
        assert m["majority"] == max(truths.values()) / len(ref)
        assert m["baseline"] == max(m["chance"], m["majority"])
        assert m["margin_points"] == pytest.approx(100 * (m["accuracy"] - m["baseline"]))
        lp, n, ok = (sum(r[3][i] for r in ref) for i in range(3))
        assert m["loss"] == pytest.approx(-lp / n, rel=1e-5)
        assert m["token_accuracy"] == pytest.approx(ok / n)
    assert out["tasks"]["digit_recognition"]["chance"] == pytest.approx(0.1)
    s = out["summary"]
    assert s["closed_tasks"] == 2 and s["open_tasks"] == 0 and s["mean_open_token_accuracy"] is None
    assert s["mean_closed_accuracy"] == pytest.approx(sum(m["accuracy"] for m in out["tasks"].values()) / 2)
    assert s["beat_chance_by_20"] == sum(100 * (m["accuracy"] - m["chance"]) >= 20 for m in out["tasks"].values())


def test_max_per_task_keeps_the_first_samples(model, reference, fsdd_shards, renderer):
    out = scoring.evaluate_model(model, renderer, [str(fsdd_shards)], max_per_task=7, progress=False)
    for task, m in out["tasks"].items():
        first = reference[task][:7]
        assert m["n"] == 7
        assert m["accuracy"] == sum(r[1] == r[2] for r in first) / 7
        assert m["majority"] == max(Counter(r[2] for r in first).values()) / 7


def test_source_task_filter_limits_scoring(model, reference, fsdd_shards, renderer):
    """A run trained on some tasks of a folder (a mixture source with `tasks`) is scored on those only."""
    from qwen_audio_mt.data.mixture import SourceConfig
    src = SourceConfig(str(fsdd_shards), weight=2.0, tasks=("fsdd_speaker",))
    out = scoring.evaluate_model(model, renderer, [src], max_per_task=5, progress=False)
    assert list(out["tasks"]) == ["fsdd_speaker"] and out["tasks"]["fsdd_speaker"]["n"] == 5
    first = reference["fsdd_speaker"][:5]
    assert out["tasks"]["fsdd_speaker"]["accuracy"] == sum(r[1] == r[2] for r in first) / 5


def doctored(model, renderer, favour: str | None):
    """A copy whose LM head gives `favour`'s token a +1000 logit everywhere (None: a zero head,
    every logit equal, so every candidate ties)."""
    m = copy.deepcopy(model)
    old = m.llm.get_output_embeddings()
    head = torch.nn.Linear(old.in_features, old.out_features, bias=True)
    with torch.no_grad():
        head.weight.copy_(old.weight if favour else torch.zeros_like(old.weight))
        head.bias.zero_()
        if favour:
            (tok,) = renderer.tok.encode(favour)
            head.bias[tok] = 1000.0
    m.llm.set_output_embeddings(head)
    return m


@pytest.mark.parametrize("favour, expect", [("1", "1"), ("7", "7"), (None, "0")])
def test_doctored_head_decides_the_label(model, items, reference, fsdd_shards, renderer, favour, expect):
    """A certain label wins every sample (a failing ranking — wrong sign, wrong tokens, prompt
    scored instead of target — does not); a full tie goes to the first label."""
    rend, by_task = items
    m = doctored(model, rend, favour)
    labels = rend.task("digit_recognition").target.labels
    ranked, _ = scoring.rank_labels(m, rend, by_task["digit_recognition"], labels, batch_rows=16)
    assert {labels[r.pick] for r in ranked} == {expect}
    out = scoring.evaluate_model(m, renderer, [str(fsdd_shards)], progress=False)["tasks"]["digit_recognition"]
    truths = [labels[r[2]] for r in reference["digit_recognition"]]
    assert out["accuracy"] == truths.count(expect) / len(truths)


# ---------------------------------------------------------------------- open tasks
@pytest.fixture(scope="module")
def asr_shards(tmp_path_factory):
    """Real FSDD clips as an open task (asr: the digit's word as the transcript)."""
    from qwen_audio_mt.data.build import build
    from qwen_audio_mt.data.convert import manifest
    from qwen_audio_mt.data.shards import ShardConfig
    words = "zero one two three four five six seven eight nine".split()
    paths = sorted(need_data("fsdd").glob("*.wav"))[::150][:16]
    lines = [json.dumps({"audio": str(p), "task": "asr", "audio_lang": "en", "split": "test",
                         "text": f"{words[int(p.stem.split('_')[0])]}."}) for p in paths]
    root = tmp_path_factory.mktemp("asr_shards")
    (root / "m.jsonl").write_text("\n".join(lines) + "\n")
    plan = manifest.plan(root / "m.jsonl")
    build(plan.streams, root / "shards", ShardConfig(workers=1, max_samples=6), plan.source, progress=False)
    return root / "shards", len(lines)


def test_open_task_matches_forward(model, asr_shards, renderer):
    folder, n = asr_shards
    out = scoring.evaluate_model(model, renderer, [str(folder)], batch_rows=5, progress=False)
    m = out["tasks"]["asr"]
    rend, feat, comps = scoring.prepare(renderer, [str(folder)], "test")
    its = list(scoring.read_items(feat, comps, None, Counter()))
    ref = [forward_one(model, it.example.ids, it.example.loss_mask, it.example.mel) for it in its]
    lp, tokens, ok = (sum(r[i] for r in ref) for i in range(3))
    assert (m["kind"], m["metric"], m["n"], len(its)) == ("open", "wer", n, n)
    assert "accuracy" not in m and "chance" not in m
    assert tokens > 2 * n  # real multi-token targets plus the end token
    assert m["loss"] == pytest.approx(-lp / tokens, rel=1e-5)
    assert m["token_accuracy"] == pytest.approx(ok / tokens)
    s = out["summary"]
    assert (s["open_tasks"], s["closed_tasks"]) == (1, 0)
    assert s["mean_open_token_accuracy"] == pytest.approx(m["token_accuracy"])


def test_model_mode_restored(model, fsdd_shards, renderer):
    model.train()
    try:
        scoring.evaluate_model(model, renderer, [str(fsdd_shards)], max_per_task=2, progress=False)
        assert model.training
    finally:
        model.eval()
