"""Text-side metric machinery for `metrics.py`: normalisation, edit operations, BLEU, CIDEr-D.

- Normalisation: Whisper's `EnglishTextNormalizer` for English (None counts as English), its
  `BasicTextNormalizer` for every other language, whitespace collapsed afterwards.
- Units: words; characters (whitespace removed after normalising) for the languages marked
  `char_level` in tags/languages.yaml, or for every item when the caller asks (metric `cer`).
- Edit operations: jiwer's alignment over the unit sequences (each unit is encoded as one opaque
  token first, so labels with spaces or punctuation survive jiwer's word splitting).
- cpWER: hypotheses are padded with empty transcripts to the number of reference talkers (and
  vice versa), and the assignment of hypotheses to talkers with the fewest errors is taken: the
  exact minimum over all k! assignments, found by the Hungarian algorithm on the k x k error matrix.
- BLEU: sacrebleu's corpus BLEU (0-100). Tokenizer by target language: `zh` for zh / zh_tr,
  `ja-mecab` for ja when sacrebleu can build it (MeCab installed), else `char`; `char` for the
  other char_level languages; `13a` otherwise. Several languages in one corpus: each sentence is
  tokenised with its own language's tokenizer, then one corpus BLEU with `tokenize="none"`.
- CIDEr-D: pycocoevalcap's `Cider` (CIDEr-D: clipped tf-idf n-grams 1-4, Gaussian length penalty
  sigma 6, x10), fed by `ptb_tokenize`, a Python reproduction of what pycocoevalcap's Java
  PTBTokenizer (Stanford CoreNLP 3.4.1, -preserveLines -lowerCase, then its punctuation filter)
  returns. References and hypotheses are tokenised as two files, as pycocoevalcap does, because
  PTBTokenizer looks past the end of a line (an abbreviation ending a caption keeps or splits its
  period depending on the next caption). Its quirks are kept on purpose: brackets become -lrb- etc.
  and survive the filter (it lists only -LRB-, upper case), "??" and "!!" are kept.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from functools import cache, lru_cache
from pathlib import Path
from typing import NamedTuple

import jiwer
import numpy as np
import yaml

from .paths import tags_dir


# ---------------------------------------------------------------------- normalisation
@lru_cache(maxsize=4)
def _char_level(path: str) -> frozenset[str]:
    spec = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    return frozenset(x["code"] for x in spec["languages"] if x.get("char_level"))


def is_char_level(lang: str | None) -> bool:
    return (lang or "en") in _char_level(str(tags_dir() / "languages.yaml"))


@lru_cache(maxsize=2)
def _normalizer(english: bool):
    # whisper's package imports torch: load it on first use, not when metrics is imported
    from whisper.normalizers import BasicTextNormalizer, EnglishTextNormalizer
    return EnglishTextNormalizer() if english else BasicTextNormalizer()


def normalize(text: str | None, lang: str | None) -> str:
    return " ".join(_normalizer((lang or "en") == "en")(text or "").split())


def text_units(text: str | None, lang: str | None, by_char: bool = False) -> list[str]:
    norm = normalize(text, lang)
    if by_char or is_char_level(lang):
        return [c for c in norm if not c.isspace()]
    return norm.split()


# ---------------------------------------------------------------------- edit operations
class EditOps(NamedTuple):
    hits: int = 0
    substitutions: int = 0
    deletions: int = 0
    insertions: int = 0
    chunks: tuple = ()     # jiwer AlignmentChunks (type, ref_start_idx, ref_end_idx, hyp_...)

    @property
    def errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    @property
    def ref_units(self) -> int:
        return self.hits + self.substitutions + self.deletions

    def plus(self, other: EditOps) -> EditOps:
        return EditOps(*(a + b for a, b in zip(self[:4], other[:4])))


def edit_ops(ref: Sequence, hyp: Sequence) -> EditOps:
    if not ref or not hyp:  # jiwer 3 refuses an empty reference
        return EditOps(deletions=len(ref), insertions=len(hyp))
    ids: dict = {}
    ref_s, hyp_s = (" ".join(f"u{ids.setdefault(u, len(ids))}" for u in seq) for seq in (ref, hyp))
    out = jiwer.process_words(ref_s, hyp_s)
    return EditOps(out.hits, out.substitutions, out.deletions, out.insertions,
                   tuple(out.alignments[0]))


def cp_edit_ops(refs: Sequence[Sequence], hyps: Sequence[Sequence]) -> EditOps:
    """Concatenated minimum-permutation edit operations over talkers (cpWER)."""
    from scipy.optimize import linear_sum_assignment
    k = max(len(refs), len(hyps))
    refs, hyps = list(refs) + [[]] * (k - len(refs)), list(hyps) + [[]] * (k - len(hyps))
    ops = [[edit_ops(r, h) for h in hyps] for r in refs]
    total = EditOps()
    if k:
        rows, cols = linear_sum_assignment(np.array([[o.errors for o in row] for row in ops]))
        for r, c in zip(rows, cols):
            total = total.plus(ops[r][c])
    return total


# ---------------------------------------------------------------------- BLEU
@cache
def _sacrebleu_tokenizer(name: str):
    from sacrebleu.metrics.bleu import BLEU
    return BLEU(tokenize=name).tokenizer


@lru_cache(maxsize=1)
def _have_ja_mecab() -> bool:
    try:
        _sacrebleu_tokenizer("ja-mecab")
    except (ImportError, RuntimeError):  # sacrebleu raises RuntimeError without MeCab
        return False
    return True


def bleu_tokenizer(lang: str | None) -> str:
    lang = lang or "en"
    if lang in ("zh", "zh_tr"):
        return "zh"
    if lang == "ja":
        return "ja-mecab" if _have_ja_mecab() else "char"
    return "char" if is_char_level(lang) else "13a"


def corpus_bleu(hyps: Sequence[str], refs: Sequence[str], langs: Sequence[str]) -> tuple[float | None, dict]:
    from sacrebleu.metrics.bleu import BLEU
    if not hyps:
        return None, {}
    by_lang = {}
    for lang in sorted(set(langs)):
        idx = [i for i, x in enumerate(langs) if x == lang]
        res = BLEU(tokenize=bleu_tokenizer(lang)).corpus_score([hyps[i] for i in idx], [[refs[i] for i in idx]])
        by_lang[lang] = {"bleu": res.score, "n": len(idx), "tokenize": bleu_tokenizer(lang)}
    if len(by_lang) == 1:
        bleu = BLEU(tokenize=bleu_tokenizer(langs[0]))
        res = bleu.corpus_score(list(hyps), [list(refs)])
    else:
        tok = [_sacrebleu_tokenizer(bleu_tokenizer(x)) for x in langs]
        bleu = BLEU(tokenize="none")
        res = bleu.corpus_score([t(h) for t, h in zip(tok, hyps)], [[t(r) for t, r in zip(tok, refs)]])
    return res.score, {"by_language": by_lang, "signature": str(bleu.get_signature()),
                       "precisions": list(res.precisions), "bp": res.bp,
                       "hyp_len": res.sys_len, "ref_len": res.ref_len}


# ---------------------------------------------------------------------- CIDEr-D
def cider_d(hyps: Sequence[str], refs: Sequence[Sequence[str]]) -> tuple[float | None, list[float]]:
    """CIDEr-D over the corpus (pycocoevalcap's scale, 0-10) and per item; None without references."""
    from pycocoevalcap.cider.cider import Cider
    refs = [list(r) or [""] for r in refs]
    flat = iter(ptb_tokenize([r for rs in refs for r in rs]))
    gts = {i: [next(flat) for _ in rs] for i, rs in enumerate(refs)}
    res = {i: [h] for i, h in enumerate(ptb_tokenize(list(hyps)))}
    if not any(r.split() for rs in gts.values() for r in rs):
        return None, []  # no reference n-gram: pycocoevalcap's document-frequency assert would fail
    score, scores = Cider().compute_score(gts, res)
    return float(score), [float(s) for s in scores]


# ---------------------------------------------------------------------- PTB tokenizer
# The caption subset of PTBLexer 3.4.1 (checked line by line against the Java tokenizer on
# tests/fixtures/metrics/ptb_tokenized.json); URLs, e-mail, SGML and phone numbers are not covered.
_AP = "'\u2019"
_L, _AN = r"[^\W\d_]", r"[^\W_]"                 # a letter; a letter or digit
_NUM = r"(?:\d+(?:[.:,]\d+)*|\d*(?:[.,]\d+)+)"
_WORD = rf"{_L}{_AN}*(?:[.!?]{_L}{_AN}*)*"     # "bark.then" stays one token, as in PTBLexer
_THING = (rf"(?:[dDoOlL][{_AP}]{_AN})?(?:{_AN}+|[-+]?{_NUM})"
          rf"(?:-(?:[dDoOlL][{_AP}]{_AN})?(?:{_AN}+|{_NUM}))*")
# a straight apostrophe's clitic may not run into a letter; a curly one may ("’sounds": 's ounds)
_REDAUX = r"'(?i:s|m|d|re|ve|ll)(?![A-Za-z])|\u2019(?i:s|m|d|re|ve|ll)"
# words with an apostrophe inside: 'n' 'em 'til '90s O'Brien ma'am y'
_APOWORD = (rf"[{_AP}][nN][{_AP}]?|[{_AP}](?i:em|till?|cause)|[{_AP}][2-9]0[sS]|[{_AP}][tT](?=(?i:is|was))"
            rf"|[A-HJ-XZn][{_AP}]{_L}{{2}}{_L}*|{_L}+[aeiouyAEIOUY][{_AP}][aeiouA-Z]{_L}*|[yY][{_AP}]")
# abbreviations that end a sentence before space + capital; some are case-sensitive in their
# first letter (Mass. vs mass.), as PTBLexer's character classes are
_ABBREV1 = (r"(?:(?i:jan|feb|mar|apr|jun|jul|aug|sept?|oct|nov|dec|mon|tues?|wed|thu(?:rs)?|fri"
            r"|ala|ariz|calif|colo|conn|ct|dak|fla|ga|ind|kans?|ky|md|mich|minn|mo|mont|neb|nev"
            r"|okla|penn|tenn|va|vt|wisc?|wyo|inc|cos?|corp|ltd|plc|rt|bancorp|bhd|assn|univ|intl"
            r"|sys|tel|est|ext|sq|jr|sr|bros|(?:ed|ph)\.d|esq|etc|al|seq|bldg|blvd|rd)"
            r"|(?i:pt)[ye]|A(?i:z|rk)|D(?i:el)|I(?i:ll)|L(?i:a)|M(?i:ass|iss)|O(?i:re)|P(?i:a)"
            r"|T(?i:ex)|W(?i:ash))\.")
_ABBREV3 = r"(?i:ca|figs?|prop|nos?|vols?|sect?s?|arts?|bldg|pp|op)\."   # kept before a number
_ACRO = r"[A-Za-z](?:\.[A-Za-z])*\."
_TITLE = (r"(?:M(?i:iss)|(?i:mr|mrs|ms|drs?|profs?|sens?|reps?|lt|col|gen|govs?|adm|rev|maj|sgt"
          r"|capt|st[ae]?|ave|pres|hon|mt|ft|invt|elec|natl|mfg|dept|cf|vs|a\.k\.a))\.")
# an acronym before one of these words ends the sentence: its period is also a token
_FUNC_WORDS = ("A About According Additionally After An As At But Earlier He Her Here However If In It "
               "Last Many More Mr. Ms. Now Once One Other Our She Since So Some Such That The Their "
               "Then There These They This We What When While Yet You")
_FUNC = "|".join(re.escape(x) for w in _FUNC_WORDS.split() for x in (w, w.upper()))
_SYMBOLS = {"(": "-LRB-", ")": "-RRB-", "[": "-LSB-", "]": "-RSB-", "{": "-LCB-", "}": "-RCB-",
            "\u00bc": "1/4", "\u00bd": "1/2", "\u00be": "3/4", "\u20ac": "$", "\u00a3": "#",
            "\u00a2": "cents", "``": "``", "''": "''", "\u201c": "``", "\u201d": "''", "\u00ab": "``",
            "\u00bb": "''", "`": "`", "\u2018": "`", "\u2019": "'", "\u2039": "`", "\u203a": "'"}
# (pattern, kind): group 1 is the token; what follows it is trailing context, which counts
# towards the longest match (ties: the earlier rule), as in JFlex
_RULES = [(re.compile(p), kind) for p, kind in [
    (rf"(?i:(cannot|gonna|gotta|wanna|lemme|gimme))(?!{_L})", "split"),
    (rf"([A-Za-z]*[A-MO-Za-mo-z])[nN][{_AP}][tT]", "tok"),
    (rf"([nN][{_AP}][tT]|{_REDAUX})", "clitic"),
    (rf"({_WORD})(?:{_REDAUX})", "tok"),
    (rf"({_APOWORD})", "tok"),
    (r"([\u00bc-\u00be])", "symbol"),
    (r"([<>]?[:;=][-o*']?[()DPdpO])(?![A-Za-z0-9])", "smiley"),
    (rf"({_WORD})", "tok"),
    (rf"([-+]?{_NUM})", "tok"),
    (rf"(#{_L}{_AN}*|@[A-Za-z_][A-Za-z_0-9]*)", "tok"),
    (rf"({_THING})", "tok"),
    (r"([A-Z]+(?:[+&][A-Z]+)+)", "tok"),
    (rf"({_AN}+(?:-{_L}+){{0,2}}(?:\\?/{_AN}+(?:-{_L}+){{0,2}}){{1,2}})", "tok"),
    (r"((?:\d{1,4}[- \u00a0])?\d{1,4}\\?/\d{1,4})", "fraction"),
    (rf"({_ACRO})[ \t\n]+(?:{_FUNC})[ \t\n]", "period_again"),
    (rf"({_ABBREV1})[ \t\n](?:[ \t\n]|[A-Z])", "period_again"),
    (rf"({_ABBREV1}s?)[\s\S]{{2}}", "tok"),
    (rf"({_ABBREV3})[ \t\n]?\d", "tok"),
    (rf"({_ABBREV1}s?)", "period_again"),       # only at the end of the text
    (rf"((?:{_ACRO}|{_TITLE})s?)", "tok"),
    (rf"({_WORD}\.)[,;:]", "tok"),
    (r"(\.{3,5}|\u2026|\. \.(?: \.)+)", "ellipsis"),
    (r"(\"|''|``|[\u201c\u201d\u00ab\u00bb\u2039\u203a])([A-Za-z0-9$])?", "quote"),
    (rf"([`'\u2018\u2019])({_L})?", "quote"),
    (r"(--+|[\u2013\u2014])", "dash"),
    (r"([?!]+|\*+|#+|@+|_+|[^\s\U00010000-\U0010ffff])", "symbol"),  # astral chars: deleted
]]
_PTB_PUNCTUATION = frozenset(["''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!",
                              ",", ":", "-", "--", "...", ";"])  # pycocoevalcap's list, verbatim


_RENDER = {"clitic": lambda t: t.replace("\u2019", "'"), "fraction": lambda t: t.replace(" ", "\u00a0"),
           "smiley": lambda t: t.replace("(", "-LRB-").replace(")", "-RRB-"),
           "ellipsis": lambda t: "...", "dash": lambda t: "--", "quote": lambda t: _SYMBOLS[t],
           "symbol": lambda t: _SYMBOLS.get(t, t), "tok": lambda t: t,
           "period_again": lambda t: t if len(t) > 2 else t[0]}   # "A." -> "A", then "."


def _render(kind: str, tok: str, m: re.Match) -> list[str]:
    if kind == "split":
        return [tok[:3], tok[3:]] if tok.lower() == "cannot" else [tok[:-2], tok[-2:]]
    if kind == "quote" and tok in ('"', "'"):   # straight quotes open before a letter (" also digit, $)
        return [("``" if tok == '"' else "`") if m.group(2) else ("''" if tok == '"' else "'")]
    return [_RENDER[kind](tok)]


def _ptb_lines(text: str):
    """PTBLexer's tokens of text, one list per line."""
    i, line = 0, []
    while i < len(text):
        if text[i] == "\n":
            yield line
            line, i = [], i + 1
            continue
        if text[i].isspace():
            i += 1
            continue
        hits = [(rx.match(text, i), kind) for rx, kind in _RULES]
        m, kind = max(((m, k) for m, k in hits if m and m.group(1)), key=lambda h: h[0].end(), default=(None, None))
        if m is None:  # untokenizable (astral) character: PTBTokenizer deletes it
            i += 1
            continue
        tok = m.group(1)
        line += _render(kind, tok, m)
        # "period_again" returns the period to the input, to be read as a token of its own
        i = i + len(tok) - (kind == "period_again")
    yield line


def ptb_tokenize(captions: Sequence[str]) -> list[str]:
    """pycocoevalcap's PTBTokenizer output for captions tokenised as one file: lower case, tokens
    joined by spaces, its punctuation tokens removed."""
    if not captions:
        return []
    text = "\n".join(re.sub(r"[\r\n]", " ", c or "") for c in captions)
    # lower-cased before the filter, as the Java output is: so -lrb- is not filtered (only -LRB- is listed)
    lines = ([t.lower() for t in line] for line in _ptb_lines(text))
    return [" ".join(t for t in line if t not in _PTB_PUNCTUATION) for line in lines]
