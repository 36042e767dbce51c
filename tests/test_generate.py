"""Generation: KV-cached greedy / beam / sampling against references (a no-cache loop, transformers'
own generate, teacher forcing), batch-size invariance, stopping, suppression, settings."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import need_data
from qwen_audio_mt.data.features import log_mel
from qwen_audio_mt.data.ingest import load_audio
from qwen_audio_mt.generate import GenerationConfig, GenerationError, Generator, Request, encode_clip
from qwen_audio_mt.model.builders import LLMConfig, ModelConfig, build_model
from qwen_audio_mt.model.encoder import EncoderConfig

CLIPS = ["fsdd/3_jackson_0.wav", "fsdd/7_nicolas_12.wav", "real_clips/jfk.flac", "qwen_audio/1272-128104-0000.flac",
         "real_clips/198-209-0000.ogg", "fsdd/0_george_5.wav", "real_clips/sorohanro_-_solo-trumpet-06.ogg",
         "real_clips/456440__inspectorj__bird-whistling-robin-single-13.ogg"]
MAX_NEW = 24


def tiny_model(stop_at: int | None = None):
    """Random, untied, large init (outputs vary with the audio). `stop_at`: swap that token's
    output row with the end token's, so a row ends where it would have said that token."""
    torch.manual_seed(0)
    cfg = ModelConfig(EncoderConfig(n_state=64, n_head=2, n_layer=1),
                      LLMConfig(config=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                            num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False,
                                            initializer_range=0.3)))
    model = build_model(cfg).eval()
    if stop_at is not None:
        end = model_end(model)
        w = model.llm.get_output_embeddings().weight
        with torch.no_grad():
            w[[end, stop_at]] = w[[stop_at, end]]
    return model


def model_end(model):
    from qwen_audio_mt.tokenizer import Tokenizer, TokenizerSpec
    return Tokenizer.from_spec(TokenizerSpec()).end_id


@pytest.fixture(scope="module")
def requests_for(renderer):
    """model -> one ASR request per real clip (8 kHz wav, 22 kHz ogg, 44 kHz stereo flac, ...)."""
    audios = [load_audio(need_data(*c.split("/"))) for c in CLIPS]

    def make(model):
        out = []
        for a in audios:
            mel, _, n = log_mel(a[: 30 * 16000], 80)
            ids = renderer.prefix({"task": "asr", "audio_lang": "en"}, n_audio=n)
            out.append(Request(ids, encode_clip(model, mel)))
        return out
    return make


@pytest.fixture(scope="module")
def stopping(whisper_tok, requests_for):
    """A model whose rows stop at different steps (or not at all), and its requests."""
    plain = tiny_model()
    reqs = requests_for(plain)
    free = Generator(plain, whisper_tok, GenerationConfig(max_new_tokens=MAX_NEW)).generate(reqs)
    # a token said early by some rows, later or never by others
    counts = {}
    for g in free:
        for t in set(g.tokens[2:]):
            counts[t] = counts.get(t, 0) + 1
    token = max(counts, key=lambda t: (0 < counts[t] < len(reqs), counts[t]))
    model = tiny_model(stop_at=token)
    return model, requests_for(model)


def run(model, tok, reqs, **kw):
    return Generator(model, tok, GenerationConfig(**{"max_new_tokens": MAX_NEW, **kw})).generate(reqs)


def test_rows_stop_at_different_steps(stopping, whisper_tok):
    model, reqs = stopping
    out = run(model, whisper_tok, reqs, batch_size=8)
    lengths = [len(g.tokens) for g in out]
    assert len(set(lengths)) >= 3, lengths
    assert any(g.finished for g in out)
    for g in out:
        assert g.finished == (len(g.tokens) < MAX_NEW) and whisper_tok.end_id not in g.tokens
        assert len(g.tokens) <= MAX_NEW


@pytest.mark.parametrize("beam", [1, 3])
def test_batch_size_invariance(stopping, whisper_tok, beam):
    """Same inputs, same tokens at batch size 1 and 8 (beam search: 8 inputs x 3 beams)."""
    model, reqs = stopping
    one = run(model, whisper_tok, reqs, batch_size=beam, beam_size=beam)
    eight = run(model, whisper_tok, reqs, batch_size=8 * beam, beam_size=beam)
    assert [g.tokens for g in one] == [g.tokens for g in eight]
    assert [g.finished for g in one] == [g.finished for g in eight]
    assert np.allclose([g.logprob for g in one], [g.logprob for g in eight], atol=1e-4)


def test_beam_one_is_greedy(stopping, whisper_tok):
    model, reqs = stopping
    greedy = run(model, whisper_tok, reqs, batch_size=8)
    beam = run(model, whisper_tok, reqs, batch_size=8, beam_size=1, length_penalty=0.3)
    assert [g.tokens for g in greedy] == [g.tokens for g in beam]


def no_cache_greedy(model, tok, req: Request, max_new: int, suppress) -> list[int]:
    """The reference: the whole sequence through the model at every step, no cache, no padding."""
    ids = list(req.ids)
    audio = (req.audio[None], torch.tensor([len(req.audio)]))
    out = []
    for _ in range(max_new):
        x = torch.tensor([ids])
        with torch.no_grad():
            emb = model.embed(x, None, None, audio=audio)
            h = model.base(inputs_embeds=emb, attention_mask=torch.ones_like(x)).last_hidden_state[:, -1]
            logits = model.llm.get_output_embeddings()(h)[0]
        logits[suppress] = float("-inf")
        t = int(logits.argmax())
        if t == tok.end_id:
            break
        out.append(t)
        ids.append(t)
    return out


def test_cached_batched_greedy_matches_no_cache_reference(stopping, whisper_tok):
    model, reqs = stopping
    gen = Generator(model, whisper_tok, GenerationConfig(max_new_tokens=MAX_NEW, batch_size=8))
    out = gen.generate(reqs)
    for r, g in zip(reqs, out):
        assert g.tokens == no_cache_greedy(model, whisper_tok, r, MAX_NEW, gen.suppress)


def test_matches_transformers_generate(stopping, whisper_tok):
    """Left-padded batch through transformers' own generate(inputs_embeds=...): the same tokens."""
    model, reqs = stopping
    gen = Generator(model, whisper_tok, GenerationConfig(max_new_tokens=MAX_NEW, batch_size=8))
    ours = gen.generate(reqs)
    embs = [gen._embed(r) for r in reqs]
    T = max(len(e) for e in embs)
    x = torch.zeros(len(embs), T, embs[0].shape[-1])
    mask = torch.zeros(len(embs), T, dtype=torch.long)
    for i, e in enumerate(embs):
        x[i, T - len(e):], mask[i, T - len(e):] = e, 1
    end = whisper_tok.end_id
    with torch.no_grad():
        hf = model.llm.generate(inputs_embeds=x, attention_mask=mask, max_new_tokens=MAX_NEW, do_sample=False,
                                eos_token_id=end, pad_token_id=end, suppress_tokens=gen.suppress.tolist())
    for row, g in zip(hf.tolist(), ours):
        assert (row + [end])[: (row + [end]).index(end)] == g.tokens


def teacher_forced_logprob(model, req: Request, tokens: list[int], suppress) -> float:
    """Summed log-probability of `tokens` after the prefix, one forward, the generator's
    distribution (suppressed tokens excluded)."""
    ids = torch.tensor([req.ids + tokens])
    with torch.no_grad():
        emb = model.embed(ids, None, None, audio=(req.audio[None], torch.tensor([len(req.audio)])))
        h = model.base(inputs_embeds=emb, attention_mask=torch.ones_like(ids)).last_hidden_state[0]
        logits = model.llm.get_output_embeddings()(h[len(req.ids) - 1: -1]).float()
    logits[:, suppress] = float("-inf")
    return float(torch.log_softmax(logits, -1).gather(1, torch.tensor(tokens)[:, None]).sum())


@pytest.mark.parametrize("kw", [{}, {"beam_size": 3}, {"temperature": 1.0, "seed": 3}])
def test_reported_logprob_is_the_sequences(stopping, whisper_tok, kw):
    """The summed log-probability a Generation reports is its tokens' (+ the end token's) under
    teacher forcing: the cache and the beams' bookkeeping lose nothing."""
    model, reqs = stopping
    gen = Generator(model, whisper_tok, GenerationConfig(max_new_tokens=MAX_NEW, batch_size=8, **kw))
    for r, g in zip(reqs[:4], gen.generate(reqs[:4])):
        seq = g.tokens + [whisper_tok.end_id] * g.finished
        assert teacher_forced_logprob(model, r, seq, gen.suppress) == pytest.approx(g.logprob, abs=1e-3)


def test_beam_search_beats_greedy_at_a_fixed_length(whisper_tok, requests_for):
    """No stop token in reach (a random model never says it): every hypothesis runs MAX_NEW
    tokens, so both rank by summed log-probability, and the wider search finds better ones."""
    model = tiny_model()
    reqs = requests_for(model)
    greedy = run(model, whisper_tok, reqs, batch_size=8)
    beam = run(model, whisper_tok, reqs, batch_size=8, beam_size=4)
    assert all(len(g.tokens) == MAX_NEW for g in greedy + beam)
    better = [b.logprob - g.logprob for g, b in zip(greedy, beam)]
    assert min(better) >= -1e-4 and sum(x > 0.01 for x in better) >= len(reqs) // 2


def test_sampling_is_seeded_per_input(stopping, whisper_tok):
    model, reqs = stopping
    a = run(model, whisper_tok, reqs, batch_size=8, temperature=1.0, seed=1)
    b = run(model, whisper_tok, reqs, batch_size=2, temperature=1.0, seed=1)
    c = run(model, whisper_tok, reqs, batch_size=8, temperature=1.0, seed=2)
    assert [g.tokens for g in a] == [g.tokens for g in b]
    assert [g.tokens for g in a] != [g.tokens for g in c]
    greedy = run(model, whisper_tok, reqs, batch_size=8)
    nucleus = run(model, whisper_tok, reqs, batch_size=8, temperature=1.0, top_p=1e-6)  # only the top token
    assert [g.tokens for g in greedy] == [g.tokens for g in nucleus]


def test_suppressed_tokens_are_never_generated(stopping, whisper_tok):
    """A head that favours an embedding padding row and <audio> still yields only real tokens."""
    model, reqs = stopping
    rows = model.llm.get_output_embeddings().weight
    assert rows.shape[0] > whisper_tok.n_vocab  # the model has padding rows
    doctored = tiny_model()
    head = doctored.llm.get_output_embeddings()
    with torch.no_grad():
        head.weight[whisper_tok.n_vocab] = head.weight.sum(0)  # wins everywhere if allowed
        head.weight[whisper_tok.role_id("audio_start")] = head.weight.sum(0)
    out = run(doctored, whisper_tok, reqs[:3], batch_size=3)
    assert all(t < whisper_tok.n_vocab and t != whisper_tok.role_id("audio_start") for g in out for t in g.tokens)


def test_text_only_request(whisper_tok, renderer):
    model = tiny_model()
    ids = whisper_tok.encode("hello there")
    (g,) = Generator(model, whisper_tok, GenerationConfig(max_new_tokens=5)).generate([Request(ids)])
    assert len(g.tokens) == 5


@pytest.mark.parametrize("kw, msg", [({"beam_size": 0}, "generation.beam_size=0"),
                                     ({"temperature": -1}, "generation.temperature=-1"),
                                     ({"top_p": 0}, "generation.top_p=0"),
                                     ({"max_new_tokens": 0}, "generation.max_new_tokens=0"),
                                     ({"beam_size": 2, "temperature": 0.5}, "beam_size > 1")])
def test_bad_settings(kw, msg):
    with pytest.raises(GenerationError, match=msg.replace(".", r"\.").replace(">", ">")):
        GenerationConfig(**kw)


def test_continuations_sharing_tokens_score_as_each_alone(whisper_tok, requests_for):
    """Labels that share leading tokens ("1", "10", "108"), batched across several prefixes on
    copies of one cache: each scores as it does by itself."""
    model = tiny_model()
    reqs = requests_for(model)[:3]
    a, b, c, e = 16, 15, 23, whisper_tok.end_id
    conts = [[a, e], [a, b, e], [a, b, c, e], [b, a, e], [a, c, e]]
    gen = Generator(model, whisper_tok, GenerationConfig(batch_size=3), batch_rows=64)
    together = gen.score(reqs, [conts] * len(reqs))
    for r, scores in zip(reqs, together):
        alone = torch.cat([gen.score([r], [[cont]])[0] for cont in conts])
        torch.testing.assert_close(scores, alone, atol=1e-4, rtol=0)
        assert scores[:, 1].tolist() == [len(cont) for cont in conts]
