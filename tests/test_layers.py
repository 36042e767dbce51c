"""The package's layers: what may import what (every import statement, function-level ones too)."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "qwen_audio_mt"


def imports(path: Path) -> set[str]:
    """Absolute module names a file imports (relative imports resolved)."""
    mod = ("qwen_audio_mt." + ".".join(path.relative_to(PKG).with_suffix("").parts)).removesuffix(".__init__")
    package = mod if path.name == "__init__.py" else mod.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            out |= {base} | {f"{base}.{a.name}" for a in node.names}
    return out


def files(*parts: str) -> list[Path]:
    where = PKG.joinpath(*parts)
    return sorted(where.rglob("*.py")) if where.is_dir() else [where.with_suffix(".py")]


RULES = [  # (files, forbidden module prefixes, why)
    (files("data"), ("qwen_audio_mt.model",), "data/ never imports model/"),
    (files("model"), ("qwen_audio_mt.data", "lightning", "qwen_audio_mt.lit"), "model/ imports neither data/ nor Lightning"),
    ([p for name in ("generate", "evaluation", "infer", "scoring", "baselines", "metrics", "parse", "longform",
                     "commands", "eval") for p in files(name)],
     ("qwen_audio_mt.train", "qwen_audio_mt.lit", "qwen_audio_mt.callbacks", "lightning"),
     "generation and evaluation sit above model/ and data/ and never import the trainer"),
]


@pytest.mark.parametrize("paths, forbidden, why", RULES, ids=[r[2] for r in RULES])
def test_layers(paths, forbidden, why):
    assert paths
    bad = {str(p.relative_to(PKG)): sorted(m for m in imports(p) if m.startswith(forbidden)) for p in paths}
    assert not {k: v for k, v in bad.items() if v}, why


def test_text_layers_load_without_torch():
    """tags, tokenizer, tasks, targets, render, output parsing and metrics import no torch."""
    code = ("import sys, qwen_audio_mt.tags, qwen_audio_mt.tokenizer, qwen_audio_mt.tasks, qwen_audio_mt.targets, "
            "qwen_audio_mt.render, qwen_audio_mt.parse, qwen_audio_mt.metrics; print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_the_rule_sees_relative_imports():
    assert "qwen_audio_mt.render.IGNORE" in imports(PKG / "model" / "audio_lm.py")
    assert "qwen_audio_mt.data.features" in imports(PKG / "infer.py")
