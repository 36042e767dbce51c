"""Executing the notebooks: `qwen-audio-mt notebooks [--tiny] [--out DIR] [--timeout S] [NAMES...]`.

Each notebook of notebooks/ (stored without outputs) runs top to bottom in a fresh kernel whose
working folder is notebooks/ (their `../shards`, `../outputs` defaults resolve from there) and
whose environment is this process's (HF_HUB_OFFLINE=1 unless set) plus `env` (`--tiny` adds
QWEN_AUDIO_MT_NB_TINY=1). The executed copy goes to OUT/NAME.ipynb (default outputs/notebooks,
never notebooks/ itself), also when a cell fails, with the outputs up to the failing cell. One
line per notebook: ok or FAIL, seconds, and for a failure the cell and the error's one line;
then the total. Exit 1 when any notebook failed.

The kernel is this interpreter (sys.executable, with ipykernel) whatever kernelspecs are
installed: the kernel spec manager is given no kernel folders, so it finds only ipykernel's
native `python3` spec, which jupyter_client launches with sys.executable. A fresh venv needs no
`ipykernel install` step, and a user-level `python3` spec pointing at another Python cannot win.
"""
from __future__ import annotations

import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import UserError
from .paths import REPO_ROOT

NOTEBOOK_DIR = REPO_ROOT / "notebooks"
DEFAULT_OUT = Path("outputs") / "notebooks"
TINY_ENV = "QWEN_AUDIO_MT_NB_TINY"
DEFAULT_TIMEOUT = 600  # seconds per cell


class NotebookError(UserError):
    """An unknown notebook name, or an output folder that is the notebooks' own."""


@dataclass
class Result:
    name: str
    out: Path              # the executed copy
    seconds: float
    error: str | None = None   # one line: the failing cell and the error

    @property
    def ok(self) -> bool:
        return self.error is None


def find(names: Sequence[str] = (), folder: Path = NOTEBOOK_DIR) -> list[Path]:
    """The notebooks of `folder` (all, sorted), or those named (with or without .ipynb, or by
    their number prefix: `01`)."""
    known = sorted(folder.glob("*.ipynb"))
    if not names:
        return known
    out = []
    for name in names:
        stem = Path(name).name.removesuffix(".ipynb")
        match = [p for p in known if p.stem == stem] or [p for p in known if p.stem.split("_")[0] == stem]
        if len(match) != 1:
            raise NotebookError(f"no notebook {name!r} in {folder}; known: {', '.join(p.stem for p in known)}")
        out.append(match[0])
    return out


def kernel_manager():
    """An AsyncKernelManager for a python3 kernel on this interpreter (see the module docstring);
    its loopback traffic CurveZMQ-encrypted where jupyter_client and libzmq can (8.10+)."""
    import zmq
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import AsyncKernelManager
    extra = {"transport_encryption": "auto"} if ("transport_encryption" in AsyncKernelManager.class_trait_names()
                                                 and zmq.has("curve")) else {}
    return AsyncKernelManager(kernel_name="python3", kernel_spec_manager=KernelSpecManager(kernel_dirs=[]), **extra)


def _failure(nb, exc: Exception) -> str:
    """The failing cell (its index among all cells) and the error's one line."""
    for i, cell in enumerate(nb.cells):
        for out in cell.get("outputs", ()):
            if out.get("output_type") == "error":
                evalue = (str(out.get("evalue") or "").splitlines() or [""])[0]
                return f"cell {i}: {out.get('ename')}: {evalue[:200]}"
    first = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {first[:200]}"


def run_one(path: Path, out_dir: Path, env: Mapping[str, str], timeout: int) -> Result:
    import nbformat
    from nbclient import NotebookClient
    start = time.monotonic()
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, km=kernel_manager(), timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    error = None
    try:
        # offline as `generate` is (a hub name would retry for ~26 s); shut the kernel down: we own it
        client.execute(env={"HF_HUB_OFFLINE": "1", **os.environ, **env}, cleanup_kc=True)
    except Exception as e:  # CellExecutionError, CellTimeoutError, DeadKernelError...: reported, not raised
        error = _failure(nb, e)
    out = out_dir / path.name
    nbformat.write(nb, out)
    return Result(path.stem, out, time.monotonic() - start, error)


def execute(paths: Sequence[Path], env: Mapping[str, str] | None = None, timeout: int = DEFAULT_TIMEOUT,
            out_dir: str | Path = DEFAULT_OUT, echo: bool = False) -> list[Result]:
    """Run each notebook in its own kernel; write the executed copies to `out_dir`."""
    out_dir = Path(out_dir)
    for p in paths:
        if out_dir.resolve() == Path(p).parent.resolve():
            raise NotebookError(f"--out {out_dir}: the notebooks' own folder; executed copies go elsewhere")
    out_dir.mkdir(parents=True, exist_ok=True)
    results = []
    for p in paths:
        results.append(run_one(Path(p), out_dir, dict(env or {}), timeout))
        if echo:
            print(line(results[-1]), flush=True)
    return results


def line(r: Result) -> str:
    """`ok    NAME  SECONDS s  OUT`, or FAIL and a second line with the error."""
    head = f"{'ok  ' if r.ok else 'FAIL'}  {r.name:<28} {r.seconds:6.1f} s  {r.out}"
    return head + (f"\n      {r.error}" if r.error else "")


def cmd_notebooks(args) -> int:
    try:
        import ipykernel  # noqa: F401
        import nbclient  # noqa: F401
        import nbformat  # noqa: F401
    except ImportError as e:
        raise NotebookError(f"executing notebooks needs nbclient, nbformat and ipykernel ({e}); "
                            "pip install -e '.[dev]'") from None
    paths = find(args.names)
    if not paths:
        raise NotebookError(f"no notebooks in {NOTEBOOK_DIR}")
    env = {TINY_ENV: "1"} if args.tiny else {}
    start = time.monotonic()
    results = execute(paths, env, args.timeout, args.out, echo=True)
    failed = [r for r in results if not r.ok]
    print(f"{len(results) - len(failed)} of {len(results)} notebooks ok in {time.monotonic() - start:.1f} s"
          f"; executed copies in {args.out}", file=sys.stderr if failed else sys.stdout)
    return 1 if failed else 0


def register(sub) -> None:
    p = sub.add_parser("notebooks", help="execute the notebooks; executed copies go to outputs/notebooks")
    p.add_argument("names", nargs="*", metavar="NAME",
                   help="notebooks to run (default: all), e.g. 01 or 03_training_curves")
    p.add_argument("--tiny", action="store_true", help=f"limit the work ({TINY_ENV}=1: 3 tasks, 1 clip, 8 new tokens)")
    p.add_argument("--out", default=str(DEFAULT_OUT), help="folder for the executed copies")
    p.add_argument("--timeout", type=int, default=DEFAULT_TIMEOUT, help="seconds per cell")
    p.set_defaults(func=cmd_notebooks)
