"""The errors a user can cause, and how every entry point reports them.

A bad value from the user (a config key, a path, a task, a full disk) is a `UserError`: entry
points (`qwen-audio-mt VERB`, `python -m qwen_audio_mt.train` / `.eval`, and sweeps through train)
print it as one line, `PROG: error: ...`, and exit 2. Hydra's own composition errors (an unknown
group option, a key not in the config, an override that does not parse) are reported the same
way, folded onto one line. Anything else is a bug and keeps its traceback. With
QWEN_AUDIO_MT_DEBUG=1 (or Hydra's HYDRA_FULL_ERROR=1) user errors show their traceback too.

A run that seems hung can be asked where it is: `kill -USR2 PID` (a rank of a `run_main` entry
point; forked loader workers inherit the handler) prints every thread's Python stack to its
stderr, and the run goes on.
SIGUSR2, not faulthandler's usual SIGUSR1: Lightning's SLURM auto-requeue takes SIGUSR1.

No imports at module level beyond the standard library, so tags/, tasks and tokenizer code can
subclass these without loading torch or Hydra.
"""
from __future__ import annotations

import faulthandler
import os
import signal
import sys
import traceback
from collections.abc import Callable
from pathlib import Path

DEBUG_ENV = "QWEN_AUDIO_MT_DEBUG"
EXIT_USER = 2  # argparse's status for a bad command line; every entry point uses it for bad values


class UserError(ValueError):
    """A bad value from the user; the message names it and what is allowed, on one line."""


class CliError(UserError):
    """A bad command line of `qwen-audio-mt VERB` (unknown option, missing file)."""


class ConfigError(UserError):
    """A config value that cannot work: names the key, the value and what is allowed."""


class DiskFullError(UserError, OSError):
    """No space left where a job writes; names the folder and the free space."""


class DataError(UserError):
    """Training data that cannot be used (e.g. too many corrupt samples); names the shards."""


_OURS = "_QWEN_AUDIO_MT_SET_HYDRA_FULL_ERROR"  # marks HYDRA_FULL_ERROR as set by run_main, not the user


def _on(name: str) -> bool:
    return os.environ.get(name, "") not in ("", "0")


def debugging() -> bool:
    return _on(DEBUG_ENV) or (_on("HYDRA_FULL_ERROR") and not _on(_OURS))


def free_space(folder) -> str:
    """'12.0 MiB free' for the file system holding `folder` (or its nearest existing parent)."""
    import shutil
    from pathlib import Path
    p = Path(folder).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        return f"{shutil.disk_usage(p).free / 2**20:,.1f} MiB free"
    except OSError:
        return "free space unknown"


def one_line(text: str) -> str:
    """Hydra and OmegaConf write errors over several lines (a list of options, `full_key:`
    details): fold them onto one, lists as 'header: a, b, c'."""
    out: list[str] = []
    items: list[str] = []
    for raw in str(text).splitlines():
        line = raw.strip()
        if not line or line.startswith(("full_key:", "object_type=", "reference_type=", "provider=", "Config search path")):
            continue
        if raw.startswith(("\t", "  ")) and out and out[-1].endswith(":"):
            items.append(line)
            continue
        if items:
            out[-1] += " " + ", ".join(items)
            items = []
        out.append(line)
    if items:
        out[-1] += " " + ", ".join(items)
    return " ".join(s if s.endswith((".", ":", ";")) or s is out[-1] else s + ";" for s in out)


def _hydra_errors() -> tuple[tuple[type, ...], type | None]:
    """Composition and override errors of Hydra and OmegaConf (imported only when installed)."""
    try:
        from hydra.errors import HydraException, InstantiationException
        from omegaconf.errors import OmegaConfBaseException
    except ImportError:
        return (), None
    return (HydraException, OmegaConfBaseException), InstantiationException


def user_cause(exc: BaseException) -> BaseException | None:
    """The user error behind `exc` (itself, or what Hydra's instantiate or Lightning wrapped),
    else None. Hydra's InstantiationException is a user error only when its cause is one."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, UserError):
            return exc
        hydra, wrapper = _hydra_errors()
        if isinstance(exc, hydra) and not (wrapper and isinstance(exc, wrapper)):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def report(prog: str, exc: BaseException) -> int:
    print(f"{prog}: error: {one_line(str(exc))}", file=sys.stderr)
    return EXIT_USER


def exit_on_user_error(prog: str, fn: Callable, *args):
    """`fn(*args)`; a user error ends the process with one line and exit 2. Used inside a Hydra
    task function too: Hydra would first print "Error executing job with overrides: [...]"."""
    try:
        return fn(*args)
    except Exception as exc:  # noqa: BLE001 - sorted into user errors and bugs below
        cause = user_cause(exc)
        if cause is None or debugging():
            raise
        sys.exit(report(prog, cause))


def sweep_job(prog: str, fn: Callable[[], float], run_dir: Path) -> float:
    """One point of a multirun: `fn()`, or on any error its one line (a bug's traceback too, on
    stderr) written to RUN_DIR/error.txt and nan returned, so the sweep's other points still run
    and the sweep report lists this one as failed with its reason."""
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 - every failure of a point is recorded, none stops the sweep
        cause = user_cause(exc)
        if cause is None:
            traceback.print_exc()
        line = one_line(str(cause)) if cause is not None else f"{type(exc).__name__}: {one_line(str(exc))}"
        print(f"{prog}: error: {line}", file=sys.stderr)
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "error.txt").write_text(line + "\n")
        return float("nan")


def run_main(prog: str, main: Callable[[], object]) -> None:
    """Run a `@hydra.main` function so that composition errors end in one line and exit 2 too.
    Hydra is told to re-raise (HYDRA_FULL_ERROR=1) so we, not it, decide what to print; the
    variable also reaches DDP ranks that Lightning starts by re-running this command."""
    if debugging():
        os.environ[DEBUG_ENV] = "1"  # DDP ranks re-run the command: they show tracebacks too
    os.environ["HYDRA_FULL_ERROR"] = os.environ[_OURS] = "1"
    if hasattr(signal, "SIGUSR2"):  # forked loader workers inherit it (a C-level handler)
        faulthandler.register(signal.SIGUSR2, all_threads=True)
    exit_on_user_error(prog, main)
