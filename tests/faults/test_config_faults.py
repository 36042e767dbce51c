"""A training command with a bad override stops before anything starts, in one line, exit 2."""
from __future__ import annotations

import pytest
from test_errors import run

from qwen_audio_mt.paths import REPO_ROOT

MODELS = sorted(p.stem for p in (REPO_ROOT / "conf" / "model").glob("*.yaml"))  # Hydra lists them sorted


# the override mistakes of issue 11, then Hydra's own composition errors
MISTAKES = [
    ("mixture.temperature=0", "mixture.temperature=0: must be > 0"),
    ("mixture.sources=[{path: /nonexistent/shards}]", "mixture.sources: /nonexistent/shards: cannot read"),
    ("model.encoder.n_state=130", "model.encoder.n_state=130 is not divisible by model.encoder.n_head=4"),
    ("optim.loss_reduction=bogus", "optim.loss_reduction='bogus': allowed are 'token' and 'sample'"),
    ("model=bogus", "Could not find 'model/bogus'; Available options in 'model': " + ", ".join(MODELS)),
    ("optim.lr_typo=1", "Could not override 'optim.lr_typo'"),
    ("mixture.temperature=abc", "mixture.temperature='abc': expected float"),
]


@pytest.mark.fault(fault="override mistakes: mixture.temperature=0, a missing mixture source, model.encoder.n_state=130, "
                   "optim.loss_reduction=bogus, an unknown group option or key, a string for a float",
                   outcome="exit 2 with one line naming the key, the value and what is allowed; no traceback",
                   lost="nothing (nothing starts)")
@pytest.mark.parametrize("override,message", MISTAKES, ids=[m[0].split("=")[0] for m in MISTAKES])
def test_train_override_mistake_is_one_line_exit_2(override, message, tmp_path):
    out = run("qwen_audio_mt.train", override, f"hydra.run.dir={tmp_path}")
    assert out.returncode == 2, out.stderr
    assert out.stderr.splitlines() == [out.stderr.strip()], out.stderr  # one line, nothing else
    assert out.stderr.startswith("qwen_audio_mt.train: error: ") and message in out.stderr
    assert out.stdout == ""


def test_a_config_mistake_is_found_before_the_trainers_imports():
    """train.check_config rejects the mistake without importing lightning or transformers' model
    code (the ~5 s of a training's imports): a typo answers in about two seconds."""
    import subprocess
    import sys
    code = ("import sys; from hydra import compose, initialize_config_dir; from qwen_audio_mt.config import plain;"
            "from qwen_audio_mt.errors import UserError; from qwen_audio_mt.train import CONF_DIR, check_config\n"
            "with initialize_config_dir(CONF_DIR, version_base='1.3'):\n"
            "    cfg = compose('train', overrides=['mixture.temperature=0', 'run_dir=.'])\n"
            "try:\n    check_config(plain(cfg))\nexcept UserError as e:\n    print(e)\n"
            "print(sorted(m for m in ('lightning', 'transformers.modeling_utils') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["mixture.temperature=0: must be > 0 (1 proportional, larger flatter)", "[]"]
