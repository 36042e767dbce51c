"""DDP over gloo, 2 CPU ranks, uneven shards per rank: no hang, equal steps, different samples."""
import json
import os
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent('''
    import json, sys
    import lightning as L, torch
    from qwen_audio_mt.data.datamodule import AudioDataModule, DataConfig
    from qwen_audio_mt.data.loader import LoaderConfig
    from qwen_audio_mt.data.collate import BatchLimits
    from qwen_audio_mt.data.mixture import MixtureConfig, SourceConfig

    shards, out = sys.argv[1], sys.argv[2]

    class Probe(L.LightningModule):
        """A one-weight model: enough to make DDP all-reduce gradients every step."""
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))
            self.keys = []
        def training_step(self, batch, i):
            self.keys += batch["keys"]
            return (self.w * batch["mel"].mean()).pow(2).sum() + self.w.sum() * 0
        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)
        def on_train_end(self):
            with open(f"{out}/rank{self.global_rank}.json", "w") as f:
                json.dump({"keys": self.keys, "steps": self.global_step,
                           "seen": self.trainer.datamodule.state.seen}, f)

    dm = AudioDataModule(DataConfig(MixtureConfig((SourceConfig(shards),)),
                                    LoaderConfig(batches_per_epoch=6, num_workers=1,
                                                 limits=BatchLimits(max_batch_size=8, pool=32))))
    trainer = L.Trainer(accelerator="cpu", devices=2, strategy="ddp", max_epochs=1,
                        limit_val_batches=0, enable_progress_bar=False, logger=False,
                        enable_checkpointing=False, enable_model_summary=False)
    trainer.fit(Probe(), datamodule=dm)
''')


@pytest.fixture(scope="module")
def uneven_shards(tmp_path_factory):
    """One task in 3 shards: with 2 readers, rank 0 reads 2 shards and rank 1 reads 1."""
    from conftest import fsdd_manifest_lines
    from qwen_audio_mt.data.build import build
    from qwen_audio_mt.data.convert import manifest
    from qwen_audio_mt.data.shards import ShardConfig
    root = tmp_path_factory.mktemp("uneven")
    lines = [x for x in fsdd_manifest_lines() if '"digit_recognition"' in x]
    (root / "m.jsonl").write_text("\n".join(lines) + "\n")
    plan = manifest.plan(root / "m.jsonl")
    index = build(plan.streams, root / "shards", ShardConfig(workers=2, max_samples=200), plan.source,
                  progress=False)
    assert [s["samples"] for s in index["shards"] if s["split"] == "train"] == [200, 200, 140]
    return root / "shards"


def test_two_ranks_uneven_shards(uneven_shards, tmp_path):
    script = tmp_path / "ddp_probe.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    done = subprocess.run([sys.executable, str(script), str(uneven_shards), str(tmp_path)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["steps"] for r in ranks] == [6, 6]
    keys0, keys1 = set(ranks[0]["keys"]), set(ranks[1]["keys"])
    assert keys0 and keys1 and not keys0 & keys1  # split by node: disjoint shards per rank
    assert sum(ranks[0]["seen"].values()) == len(ranks[0]["keys"])  # the realised mixture counted
