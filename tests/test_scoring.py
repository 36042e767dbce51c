"""Likelihood scoring: label ranking against a per-candidate reference, a doctored LM head, and
teacher forcing, on real FSDD shards with a tiny random model. (The per-task metrics built on
them: test_evaluation.py.)"""
from __future__ import annotations

import copy
from collections import Counter

import pytest
import torch

from qwen_audio_mt import scoring
from qwen_audio_mt.evaluation import EvalConfig, eval_renderer, read_items
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


def eval_items(renderer, folder, split="test"):
    """Every item of a split, by task, in shard order."""
    rend = eval_renderer(renderer, [str(folder)], False)
    by_task: dict[str, list] = {}
    for task, it in read_items(rend, [str(folder)], EvalConfig(split=split), 80, Counter()):
        by_task.setdefault(task, []).append(it)
    return rend, by_task


@pytest.fixture(scope="module")
def items(fsdd_shards, renderer):
    return eval_items(renderer, fsdd_shards)


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
    """Shared audio, candidate rows batched across clips: the same scores as one forward per
    candidate with the clip's own mel."""
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


def test_teacher_forcing_matches_forward(model, asr_shards, renderer):
    folder, n = asr_shards
    rend, by_task = eval_items(renderer, folder)
    its = by_task["asr"]
    got = scoring.teacher_forced(model, its, rend, batch_rows=5)
    ref = torch.tensor([forward_one(model, it.example.ids, it.example.loss_mask, it.example.mel) for it in its])
    assert len(its) == n and ref[:, 1].sum() > 2 * n  # real multi-token targets plus the end token
    assert torch.allclose(got, ref, atol=1e-4)
