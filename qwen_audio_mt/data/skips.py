"""Skipped samples: counted by (reason, shard) where they are read, tallied where training runs.

Readers (loader workers, or the main process with num_workers=0) count in a `SkipCounter`. A pass
over a shard that yields fewer samples than its index entry counts the missing ones as
`corrupt_tar` (an unreadable region, a truncated or unopenable file: stream.tar_samples). The
train stream sends each batch's new skips with it (`batch["skipped"]`, rows [reason, shard, n,
detail], the detail only with a reader's first skip of that reason and shard), so counts made in
worker processes reach the main process. There `tally` adds them to the loader state (reason ->
n, and reason -> shard -> n) and logs a warning at the first skip of each (reason, shard);
`over_limit` tells when the skipped share of the samples read passes
`data.loader.max_skip_fraction` (once `skip_limit_min_samples` were read, so one early bad sample
cannot stop a run).

A train stream resamples its shards forever: a component whose every shard is unreadable would
spin without yielding. A reader that skips `STUCK_AFTER` times in a row stops with a DataError
naming the shards instead.

Reasons: corrupt_tar, incomplete_sample, unexpected_member (a member other than .flac/.json, e.g. a
pickle: never unpickled), label_too_large, label_not_utf8, bad_label_json, undecodable_sample,
non_finite_audio, bad_label (labels that do not fit the task), too_many_tokens, conversation_too_long
(a conversation whose first exchange alone passes data.loader.max_conversation_tokens).
"""
from __future__ import annotations

import logging
import re
from collections import Counter

from ..errors import DataError

log = logging.getLogger(__name__)

STUCK_AFTER = 1000          # skips in a row (no good sample between) that mean a stream cannot go on
UNKNOWN_SHARD = "unknown shard"
_NAME = re.compile(r"name='([^']+)'")


def shard_of(exn: BaseException) -> str:
    """The shard a webdataset error came from: its URL is the last string webdataset appended
    to the exception's args (url_opener, tar_file_expander), or the file object's name in the
    message (tar_file_iterator)."""
    args = getattr(exn, "args", ())
    for arg in reversed(args[1:]):
        if isinstance(arg, str) and arg:
            return arg
    found = _NAME.search(str(args[0]) if args else "")
    return found.group(1) if found else UNKNOWN_SHARD


def error_text(exn: BaseException) -> str:
    return f"{type(exn).__name__}: {exn.args[0] if exn.args else ''}"


class SkipCounter(Counter):
    """Skipped samples by (reason, shard); also the webdataset exception handler (go on).

    `log_first`: warn at the first skip of each (reason, shard) here (readers whose counts reach
    no main-process tally: evaluation). `stuck_after`: raise DataError after that many skips in a
    row (train streams, which never end)."""

    def __init__(self, log_first: bool = True, stuck_after: int | None = None):
        super().__init__()
        self.log_first, self.stuck_after = log_first, stuck_after
        self.details: dict[tuple[str, str], str] = {}
        self.streak: Counter = Counter()   # skips since the last good sample

    def skip(self, reason: str, shard: str | None, detail: str, n: int = 1) -> None:
        """`n` samples lost to one fault (an unreadable tar region loses the rest of its shard)."""
        key = (reason, shard or UNKNOWN_SHARD)
        if key not in self:
            self.details[key] = detail[:300]
            if self.log_first:
                log.warning("skipping %s in %s: %s (further ones counted, not logged)", reason, key[1], detail[:300])
        self[key] += n
        self.streak[key] += 1  # faults, not samples: one truncated big shard is not a stuck stream
        if self.stuck_after is not None and sum(self.streak.values()) >= self.stuck_after:
            raise DataError(f"no usable sample after {self.stuck_after} skips in a row ({describe(self.streak)}); "
                            "fix or remove these shards, or drop their task from the mixture")

    def ok(self) -> None:
        """A good sample went out: the run of skips is over."""
        if self.streak:
            self.streak.clear()

    def handler(self, exn: Exception) -> bool:
        """webdataset's handler where no sample count is known: one skip per error."""
        self.skip("corrupt_tar", shard_of(exn), error_text(exn))
        return True

    def rows(self, reported: Counter) -> list[list]:
        """[reason, shard, n, detail] of the skips not in `reported` (which is then updated); the
        detail only with the first row of a (reason, shard)."""
        new = self - reported
        out = [[reason, shard, n, "" if (reason, shard) in reported else self.details.get((reason, shard), "")]
               for (reason, shard), n in sorted(new.items())]
        reported.update(new)
        return out


def tally(by_reason: dict, by_shard: dict, rows) -> None:
    """Add a batch's skip rows to the state's counts; warn at the first of each (reason, shard)."""
    for reason, shard, n, detail in rows or ():
        shards = by_shard.setdefault(reason, {})
        if shard not in shards:
            log.warning("skipped %s in %s: %s (counted; shown as skipped/%s in the progress bar)",
                        reason, shard, detail or "see the loader's log", reason)
        shards[shard] = shards.get(shard, 0) + int(n)
        by_reason[reason] = by_reason.get(reason, 0) + int(n)


def describe(counts, limit: int = 6) -> str:
    """'corrupt_tar 3 in a.tar, undecodable_sample 1 in b.tar' (largest first, at most `limit`),
    from {(reason, shard): n} or {reason: {shard: n}}."""
    if counts and isinstance(next(iter(counts.values())), dict):
        counts = {(r, s): n for r, shards in counts.items() for s, n in shards.items()}
    items = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    text = ", ".join(f"{reason} {n:,} in {shard}" for (reason, shard), n in items[:limit])
    return text + (f" and {len(items) - limit} more" if len(items) > limit else "")


def over_limit(seen: int, skipped: int, fraction: float | None, min_samples: int) -> bool:
    total = seen + skipped
    return fraction is not None and total >= min_samples and skipped > fraction * total


def limit_message(seen: int, skipped: int, fraction: float, by_shard: dict) -> str:
    total = seen + skipped
    return (f"{skipped:,} of {total:,} samples skipped ({skipped / total:.1%}), above "
            f"data.loader.max_skip_fraction={fraction:g}: {describe(by_shard)}; fix or remove these shards "
            "(or raise data.loader.max_skip_fraction)")


def merge(parts: list[dict]) -> dict:
    """{reason: {shard: n}} of several ranks, summed."""
    out: dict = {}
    for part in parts:
        for reason, shards in part.items():
            for shard, n in shards.items():
                out.setdefault(reason, {})[shard] = out.get(reason, {}).get(shard, 0) + n
    return out


def summary(seen: int, by_shard: dict) -> dict:
    """What train() returns as summary["skipped"]."""
    total = sum(n for shards in by_shard.values() for n in shards.values())
    return {"samples": seen + total, "skipped": total,
            "fraction": round(total / (seen + total), 6) if seen + total else 0.0,
            "by_reason": {r: sum(s.values()) for r, s in sorted(by_shard.items())},
            "by_shard": {r: dict(sorted(s.items())) for r, s in sorted(by_shard.items())}}


def summary_line(s: dict) -> str:
    """'skipped 12 of 1,012 samples (1.2%): corrupt_tar 12 in x.tar', or 'no samples skipped (1,000 read)'."""
    if not s["skipped"]:
        return f"no samples skipped ({s['samples']:,} read)"
    return f"skipped {s['skipped']:,} of {s['samples']:,} samples ({s['fraction']:.1%}): {describe(s['by_shard'])}"
