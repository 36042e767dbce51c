"""Generation over an AudioLM: greedy, beam search and sampling, batched, with the LLM's KV cache.

A request is one row: its prefix ids (`<audio>`, one placeholder per audio position, `</audio>`,
then the prompt's tags and text) and the clip's LLM positions (`encode_clips`: encoded at the
clip's own length with padded frames masked, so they do not depend on its batch-mates).

How a batch runs (choices this module makes):
- Prefill once: the prefixes' embeddings (audio spliced in) are left-padded into one batch with
  an attention mask over the real places and position ids that count real tokens only
  (`cumsum(mask) - 1`, padded places 1: what transformers' `generate` does, so the two agree);
  logits are taken at the last place only. Then one token per step through the cache.
- The same prefill serves likelihoods (`score`, `run(continuations=...)`): each continuation
  (a label's target, a true target) is scored on a copy of the prefix's cache, adding only its
  own tokens; log-probabilities there are over the full vocabulary, as training's loss is.
- Never generated: embedding rows past the tokenizer's vocabulary (padding rows) and the audio
  span tokens.
- A row stops at a stop token (`<|endoftext|>`; chat passes `<|im_end|>`) or `max_new_tokens`.
  Finished rows leave the batch (their cache rows are dropped), so a step costs what is still
  running.
- Greedy picks the argmax of the log-probabilities. Beam search follows Whisper's rule: each
  input keeps `beam_size` live beams; a candidate ending in a stop token among the top
  `beam_size` becomes a finished hypothesis; an input is done with `beam_size` finished
  hypotheses, or at `max_new_tokens` (its live beams then count too); the answer is the best by
  summed log-probability / length ** `length_penalty` (transformers' convention; the length
  counts the stop token). `beam_size=1` is greedy.
- Sampling (`temperature > 0`): nucleus (`top_p`) over softmax(logits / temperature), one
  `torch.Generator` per input seeded with `seed`, so an input's sample does not depend on its
  batch-mates either.
- Batch size: rows are sorted by prefix length and cut into batches of `batch_size` rows (beam
  search: inputs x beams). With masked audio, masks and real-token positions, the same input
  gives the same tokens at any batch size; the logits agree to ~1e-6 in fp32, not bitwise,
  because the CPU BLAS picks its kernels by row count.
"""
from __future__ import annotations

import copy
import inspect
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
import torch.nn.functional as F

from .errors import UserError


class GenerationError(UserError):
    """Bad generation settings (names the setting and what is allowed)."""


@dataclass(frozen=True)
class GenerationConfig:
    max_new_tokens: int = 128
    beam_size: int = 1                  # 1: greedy, or sampling when temperature > 0
    length_penalty: float = 1.0         # beam ranking: sum logprob / len ** length_penalty
    temperature: float = 0.0            # > 0: sample
    top_p: float = 1.0                  # nucleus: the smallest set of tokens holding top_p of the mass
    seed: int = 0                       # sampling: every input draws from its own generator
    stop: tuple[str, ...] = ("<|endoftext|>",)  # token names that end a row
    batch_size: int = 16                # rows per forward

    def __post_init__(self):
        checks = [(self.max_new_tokens >= 1, "max_new_tokens", "an integer >= 1"),
                  (self.beam_size >= 1, "beam_size", "an integer >= 1"),
                  (self.temperature >= 0, "temperature", ">= 0 (0: greedy or beam search)"),
                  (0 < self.top_p <= 1, "top_p", "in (0, 1]"),
                  (self.batch_size >= 1, "batch_size", "an integer >= 1"),
                  (bool(self.stop), "stop", "at least one token name")]
        for ok, name, allowed in checks:
            if not ok:
                raise GenerationError(f"generation.{name}={getattr(self, name)!r}: must be {allowed}")
        if self.temperature > 0 and self.beam_size > 1:
            raise GenerationError("generation: sampling (temperature > 0) with beam_size > 1 is not supported")


@dataclass
class Request:
    ids: list[int]                       # prefix ids: audio span (placeholders) + prompt
    audio: torch.Tensor | None = None    # [N, width] LLM positions, N = placeholders in ids


@dataclass
class Generation:
    tokens: list[int] = field(default_factory=list)  # generated ids, the stop token excluded
    logprob: float = 0.0                 # summed log-probability (the stop token included)
    finished: bool = False               # ended at a stop token (False: max_new_tokens)


class Prefix(NamedTuple):
    """A batch's prefill: what generation and continuation scoring start from."""
    logits: torch.Tensor     # [B, V] float logits at the last prefix place (nothing suppressed)
    cache: object            # the LLM's KV cache (transformers DynamicCache), left-padded
    mask: torch.Tensor       # [B, T] 1 at real places
    pos: torch.Tensor        # [B] position id of the last prefix place


def _select(cache, idx: torch.Tensor):
    """A cache holding rows `idx` of `cache`, which stays as it was (its layers are shallow-copied,
    then each gets index-selected, i.e. new, tensors)."""
    new = copy.copy(cache)
    new.layers = [copy.copy(layer) for layer in cache.layers]
    new.reorder_cache(idx)
    return new


@torch.no_grad()
def encode_clips(model, mels: list[torch.Tensor], batch: int = 16) -> list[torch.Tensor]:
    """Clips' LLM positions [N_i, width] (mels [n_mels, T_i]), `batch` clips of similar length
    per forward. The encoder masks padded frames (conv and attention), so a clip's positions
    equal its encoding alone to float rounding, whatever its batch-mates."""
    w = model.encoder.whisper.conv1.weight
    order = sorted(range(len(mels)), key=lambda i: mels[i].shape[-1])
    out: list = [None] * len(mels)
    for start in range(0, len(order), batch):
        chunk = order[start: start + batch]
        frames = torch.tensor([mels[i].shape[-1] for i in chunk], device=w.device)
        x = mels[chunk[0]].new_zeros(len(chunk), mels[chunk[0]].shape[0], int(frames.max()))
        for j, i in enumerate(chunk):
            x[j, :, : mels[i].shape[-1]] = mels[i]
        positions, counts = model.audio_embeddings(x.to(w.device, w.dtype), frames)
        for j, i in enumerate(chunk):
            out[i] = positions[j, : int(counts[j])]
    return out


def encode_clip(model, mel: torch.Tensor) -> torch.Tensor:
    """One clip's LLM positions [N, width], encoded alone at its own length (mel [n_mels, T])."""
    return encode_clips(model, [mel])[0]


class Generator:
    """Runs requests through an AudioLM (eval mode); `generate(requests)` keeps their order."""

    def __init__(self, model, tok, cfg: GenerationConfig = GenerationConfig(), batch_rows: int = 256):
        """`batch_rows`: continuations scored per forward (memory ~ rows x prefix length)."""
        self.model, self.tok, self.cfg, self.batch_rows = model, tok, cfg, batch_rows
        self.stop_ids = frozenset(tok.token_id(name) for name in cfg.stop)
        rows = model.llm.get_input_embeddings().num_embeddings
        spans = [tok.role_id(r) for r in ("audio_start", "audio_end", "audio_placeholder")]
        self.device = model.llm.get_input_embeddings().weight.device
        self.suppress = torch.tensor(list(range(tok.n_vocab, rows)) + spans, device=self.device)
        params = inspect.signature(model.base.forward).parameters
        # transformers 5.x renamed past_key_values to cache (the old name warns until 5.40)
        self._cache_kw = "cache" if "cache" in params else "past_key_values"

    # ------------------------------------------------------------------ entry points
    @torch.no_grad()
    def generate(self, requests: list[Request]) -> list[Generation]:
        """Every request's answer, in the requests' order."""
        return self.run(requests)[0]

    @torch.no_grad()
    def score(self, requests: list[Request], continuations: list[list[list[int]]]) -> list[torch.Tensor]:
        """Per request, [n, 3] for each of its continuations (token lists after the prefix):
        summed log-probability over the full vocabulary, tokens, argmax-correct tokens."""
        return self.run(requests, continuations, generate=False)[1]

    @torch.no_grad()
    def run(self, requests: list[Request], continuations: list[list[list[int]]] | None = None,
            generate: bool = True) -> tuple[list[Generation] | None, list[torch.Tensor] | None]:
        """One prefill per batch serves both: the continuations are scored on copies of its
        cache (likelihood ranking, teacher forcing), then the answers are generated from it."""
        order = sorted(range(len(requests)), key=lambda i: len(requests[i].ids))
        per_batch = max(1, self.cfg.batch_size // self.cfg.beam_size)
        gens: list = [None] * len(requests)
        scores: list = [None] * len(requests)
        for start in range(0, len(order), per_batch):
            chunk = order[start: start + per_batch]
            prefix = self._prefill([requests[i] for i in chunk])
            if continuations is not None:
                for i, s in zip(chunk, self._score_batch(prefix, [continuations[i] for i in chunk])):
                    scores[i] = s
            if generate:
                for i, g in zip(chunk, (self._beam if self.cfg.beam_size > 1 else self._sample)(prefix)):
                    gens[i] = g
        return (gens if generate else None), (scores if continuations is not None else None)

    # ------------------------------------------------------------------ forward pieces
    def _embed(self, r: Request) -> torch.Tensor:
        ids = torch.tensor([r.ids], device=self.device)
        if r.audio is None:
            return self.model.llm.get_input_embeddings()(ids)[0]
        audio = (r.audio[None].to(self.device), torch.tensor([len(r.audio)], device=self.device))
        return self.model.embed(ids, None, None, audio=audio)[0]

    def _hidden(self, x: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor, cache) -> torch.Tensor:
        out = self.model.base(inputs_embeds=x, attention_mask=mask, position_ids=pos, use_cache=True,
                              **{self._cache_kw: cache})
        return out.last_hidden_state

    def _head(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.model.llm.get_output_embeddings()(hidden).float()

    def _prefill(self, reqs: list[Request]) -> Prefix:
        from transformers import DynamicCache
        embs = [self._embed(r) for r in reqs]
        T = max(len(e) for e in embs)
        x = embs[0].new_zeros(len(embs), T, embs[0].shape[-1])
        mask = torch.zeros(len(embs), T, dtype=torch.long, device=self.device)
        for i, e in enumerate(embs):
            x[i, T - len(e):] = e
            mask[i, T - len(e):] = 1
        pos = mask.cumsum(-1) - 1
        pos.masked_fill_(mask == 0, 1)
        cache = DynamicCache(config=self.model.llm.config)
        logits = self._head(self._hidden(x, mask, pos, cache)[:, -1])
        return Prefix(logits, cache, mask, pos[:, -1])

    def _step(self, tokens: torch.Tensor, cache, mask: torch.Tensor, pos: torch.Tensor):
        """One token per row through the cache -> (suppressed logits, mask, positions)."""
        x = self.model.llm.get_input_embeddings()(tokens)[:, None]
        mask = torch.cat([mask, mask.new_ones(len(tokens), 1)], 1)
        pos = pos + 1
        return self._suppressed(self._head(self._hidden(x, mask, pos[:, None], cache)[:, -1])), mask, pos

    def _suppressed(self, logits: torch.Tensor) -> torch.Tensor:
        logits[:, self.suppress] = float("-inf")
        return logits

    # ------------------------------------------------------------------ scoring continuations
    def _score_batch(self, prefix: Prefix, conts: list[list[list[int]]]) -> list[torch.Tensor]:
        rows = [(b, list(c)) for b, cs in enumerate(conts) for c in cs]
        out = []
        for start in range(0, len(rows), self.batch_rows):
            out.append(self._score_rows(prefix, rows[start: start + self.batch_rows]))
        flat = torch.cat(out) if out else torch.zeros(0, 3)
        return list(flat.split([len(cs) for cs in conts]))

    def _score_rows(self, prefix: Prefix, rows: list[tuple[int, list[int]]]) -> torch.Tensor:
        """[R, 3] for continuations (prefix row, tokens): the first token is scored by the
        prefix's last logits, the rest by one forward over a copy of its cache (right-padded)."""
        idx = torch.tensor([b for b, _ in rows], device=self.device)
        L = max(len(t) for _, t in rows)
        tokens = torch.zeros(len(rows), L, dtype=torch.long, device=self.device)
        valid = torch.zeros(len(rows), L, dtype=torch.bool, device=self.device)
        for i, (_, t) in enumerate(rows):
            tokens[i, : len(t)] = torch.tensor(t, dtype=torch.long)
            valid[i, : len(t)] = True
        hidden = None
        if L > 1:
            x = self.model.llm.get_input_embeddings()(tokens[:, :-1])
            mask = torch.cat([prefix.mask[idx], valid[:, :-1].long()], 1)
            pos = prefix.pos[idx, None] + torch.arange(1, L, device=self.device)
            hidden = self._hidden(x, mask, pos, _select(prefix.cache, idx))
        # the first token: the prefix's own last logits, normalised once per prefix row
        lp = F.log_softmax(prefix.logits, -1)[idx, tokens[:, 0]]
        ok = (prefix.logits.argmax(-1)[idx] == tokens[:, 0]).float()
        out = torch.stack([lp, torch.ones_like(lp), ok], 1).cpu()
        for j in range(1, L):  # then one place at a time, real rows only: never [R, L, V] logits
            v = valid[:, j].nonzero()[:, 0]
            logits = self._head(hidden[v, j - 1])
            t = tokens[v, j]
            lp = F.log_softmax(logits, -1).gather(1, t[:, None])[:, 0]
            ok = (logits.argmax(-1) == t).float()
            out.index_add_(0, v.cpu(), torch.stack([lp, torch.ones_like(lp), ok], 1).cpu())
        return out

    # ------------------------------------------------------------------ greedy and sampling
    def _choose(self, logits: torch.Tensor, gens: list) -> tuple[torch.Tensor, torch.Tensor]:
        """(token [R], its log-probability [R]) by argmax, or sampled per row."""
        if self.cfg.temperature == 0:
            logprobs = F.log_softmax(logits, -1)
            tokens = logprobs.argmax(-1)
            return tokens, logprobs.gather(1, tokens[:, None])[:, 0]
        logprobs = F.log_softmax(logits / self.cfg.temperature, -1)
        probs = logprobs.exp()
        if self.cfg.top_p < 1:
            sorted_p, order = probs.sort(-1, descending=True)
            drop = sorted_p.cumsum(-1) - sorted_p >= self.cfg.top_p  # keep the smallest set reaching top_p
            probs = probs.scatter(1, order, sorted_p.masked_fill(drop, 0.0))
        tokens = torch.stack([torch.multinomial(p.cpu(), 1, generator=g)[0] for p, g in zip(probs, gens)])
        tokens = tokens.to(logits.device)
        return tokens, logprobs.gather(1, tokens[:, None])[:, 0]

    def _sample(self, prefix: Prefix) -> list[Generation]:
        n = len(prefix.mask)
        out = [Generation() for _ in range(n)]
        gens = [torch.Generator().manual_seed(self.cfg.seed) for _ in range(n)] if self.cfg.temperature else []
        logits, cache, mask, pos = self._suppressed(prefix.logits.clone()), prefix.cache, prefix.mask, prefix.pos
        rows = list(range(n))  # live row -> request index
        for step in range(self.cfg.max_new_tokens):
            tokens, lp = self._choose(logits, [gens[r] for r in rows] if gens else [])
            keep = []
            for j, (r, t, p) in enumerate(zip(rows, tokens.tolist(), lp.tolist())):
                out[r].logprob += p
                if t in self.stop_ids:
                    out[r].finished = True
                else:
                    out[r].tokens.append(t)
                    keep.append(j)
            if not keep or step + 1 == self.cfg.max_new_tokens:
                break
            if len(keep) < len(rows):  # finished rows leave the batch
                idx = torch.tensor(keep, device=self.device)
                cache.reorder_cache(idx)
                mask, pos, tokens = mask[idx], pos[idx], tokens[idx]
                rows = [rows[j] for j in keep]
            logits, mask, pos = self._step(tokens, cache, mask, pos)
        return out

    # ------------------------------------------------------------------ beam search
    def _beam(self, prefix: Prefix) -> list[Generation]:
        K, max_new, n = self.cfg.beam_size, self.cfg.max_new_tokens, len(prefix.mask)
        logits, cache, mask, pos = self._suppressed(prefix.logits.clone()), prefix.cache, prefix.mask, prefix.pos
        expand = torch.arange(n, device=self.device).repeat_interleave(K)
        cache.reorder_cache(expand)
        mask, pos, logits = mask[expand], pos[expand], logits[expand]
        # the first step draws from beam 0 only: the K copies of a prefix are the same beam
        scores = torch.tensor([0.0] + [float("-inf")] * (K - 1), device=self.device).repeat(n)
        seqs: list[list[int]] = [[] for _ in range(n * K)]
        done: list[list[tuple[float, Generation]]] = [[] for _ in range(n)]
        live = list(range(n))
        for step in range(max_new):
            cand = (scores[:, None] + F.log_softmax(logits, -1)).view(len(live), -1)
            top, idx = cand.topk(K + len(self.stop_ids), dim=1)  # always K candidates that do not stop
            V = logits.shape[-1]
            picks, still = [], []
            for j, r in enumerate(live):
                new = self._expand_beam(j, top[j].tolist(), idx[j].tolist(), V, seqs, done[r])
                if len(done[r]) >= K:
                    continue
                if step + 1 == max_new:  # out of tokens: the live beams are hypotheses too
                    done[r] += [self._hyp(seqs[row] + [t], s, False) for row, t, s in new]
                    continue
                still.append(r)
                picks += new
            if not still:
                break
            rows = torch.tensor([row for row, _, _ in picks], device=self.device)
            cache.reorder_cache(rows)
            mask, pos = mask[rows], pos[rows]
            seqs = [seqs[row] + [t] for row, t, _ in picks]
            scores = torch.tensor([s for _, _, s in picks], device=self.device)
            live = still
            logits, mask, pos = self._step(torch.tensor([t for _, t, _ in picks], device=self.device),
                                           cache, mask, pos)
        return [max(d, key=lambda h: h[0])[1] for d in done]

    def _expand_beam(self, j: int, top: list[float], idx: list[int], V: int, seqs, done) -> list:
        """One input's candidates -> its next K live beams (row, token, score); stops go to `done`."""
        K, new = self.cfg.beam_size, []
        for rank, (s, flat) in enumerate(zip(top, idx)):
            row, t = j * K + flat // V, flat % V
            if t in self.stop_ids:
                if rank < K:
                    done.append(self._hyp(seqs[row], s, True))
                continue
            if len(new) < K:
                new.append((row, t, s))
        return new

    def _hyp(self, tokens: list[int], score: float, finished: bool) -> tuple[float, Generation]:
        length = len(tokens) + finished
        return score / max(length, 1) ** self.cfg.length_penalty, Generation(list(tokens), score, finished)
