"""One line and exit 2 for every mistake a user can make in a config or on a command line, at
every entry point; a traceback only with QWEN_AUDIO_MT_DEBUG=1; bugs keep their traceback.
(The override mistakes of a training command: tests/faults/test_config_faults.py.)"""
from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import pytest

from qwen_audio_mt.config import ConfigError, from_dict
from qwen_audio_mt.data.mixture import MixtureConfig
from qwen_audio_mt.errors import UserError, one_line, user_cause
from qwen_audio_mt.model.builders import LLMConfig, ModelConfig
from qwen_audio_mt.model.encoder import EncoderConfig
from qwen_audio_mt.paths import REPO_ROOT

ENV = {k: v for k, v in os.environ.items() if k not in ("HYDRA_FULL_ERROR", "QWEN_AUDIO_MT_DEBUG")}


def run(module: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO_ROOT, capture_output=True, text=True,
                          env={**ENV, **(env or {})}, timeout=300)


def test_debug_shows_the_traceback(tmp_path):
    out = run("qwen_audio_mt.train", "mixture.temperature=0", f"hydra.run.dir={tmp_path}",
              env={"QWEN_AUDIO_MT_DEBUG": "1"})
    assert out.returncode == 1 and "Traceback" in out.stderr and "MixtureError" in out.stderr


def test_eval_and_cli_mistakes_are_one_line(tmp_path):
    out = run("qwen_audio_mt.eval", f"model={tmp_path}/none", f"hydra.run.dir={tmp_path}")
    assert (out.returncode, out.stderr) == (2, f"qwen_audio_mt.eval: error: {tmp_path}/none: no such export folder "
                                               "or checkpoint file\n")
    out = run("qwen_audio_mt.eval", "eval.bogus=1", f"hydra.run.dir={tmp_path}")
    assert out.returncode == 2 and len(out.stderr.splitlines()) == 1 and "eval.bogus" in out.stderr
    out = run("qwen_audio_mt", "render", "--task", "nope")
    assert (out.returncode, out.stderr) == (2, "qwen-audio-mt: error: unknown task 'nope'\n")


@pytest.mark.parametrize("cls,data,message", [
    (EncoderConfig, {"n_mels": 64}, "model.encoder.n_mels=64: Whisper's filter banks have 80 or 128"),
    (EncoderConfig, {"n_state": 130, "n_head": 4}, "model.encoder.n_state=130 is not divisible"),
    (LLMConfig, {"config": {"hidden_size": 100, "num_attention_heads": 3}},
     "model.llm.config.hidden_size=100 is not divisible by model.llm.config.num_attention_heads=3"),
    (LLMConfig, {"dtype": "fp8"}, "model.llm.dtype='fp8': allowed are float32, bfloat16, float16"),
])
def test_model_shapes_are_checked_when_the_config_is_read(cls, data, message):
    with pytest.raises(ConfigError) as e:
        cls(**data)
    assert str(e.value).startswith(message)


def test_from_dict_names_the_key():
    keys = ", ".join(sorted(f.name for f in dataclasses.fields(EncoderConfig)))
    with pytest.raises(ConfigError, match=rf"^model.encoder has no key\(s\) n_heads; its keys: {keys}$"):
        from_dict(ModelConfig, {"encoder": {"n_heads": 4}}, "model")
    with pytest.raises(ConfigError, match=r"^mixture.sources\[1\]='x': expected a mapping of path, weight"):
        from_dict(MixtureConfig, {"sources": [{"path": "a"}, "x"]}, "mixture")
    with pytest.raises(ConfigError, match=r"^mixture.cap=1.5: expected int"):
        from_dict(MixtureConfig, {"cap": 1.5}, "mixture")
    assert from_dict(MixtureConfig, {"temperature": 3, "cap": None}, "mixture").temperature == 3  # int for float


def test_one_line_folds_hydra_messages():
    hydra = ("In 'train': Could not find 'model/bogus'\n\nAvailable options in 'model':\n\tqwen_audio\n\ttiny\n"
             "Config search path:\n\tprovider=hydra, path=pkg://hydra.conf\n")
    assert one_line(hydra) == "In 'train': Could not find 'model/bogus'; Available options in 'model': qwen_audio, tiny"
    omega = "Could not override 'foo'.\nTo append to your config use +foo=1\nKey 'foo' is not in struct\n    full_key: foo"
    assert one_line(omega) == "Could not override 'foo'. To append to your config use +foo=1; Key 'foo' is not in struct"


def test_user_cause_unwraps_instantiation_but_not_bugs():
    from hydra.errors import InstantiationException
    inner = UserError("bad value")
    try:
        try:
            raise inner
        except UserError as e:
            raise InstantiationException("Error in call to target") from e
    except InstantiationException as wrapped:
        assert user_cause(wrapped) is inner
    assert user_cause(InstantiationException("Error in call to target")) is None  # a bug in a _target_
    assert user_cause(RuntimeError("shape mismatch")) is None
