"""Training entry point: every experiment composes (CPU ones run), a short run exports what it
trained, the stage flags freeze what they promise, and a non-finite loss skips its step.

Resume after SIGKILL / SIGTERM and DDP through the real command line: test_train_resume.py.
"""
from __future__ import annotations

import csv
import json
import math
from dataclasses import asdict, replace
from pathlib import Path

import lightning as L
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig
from conftest import save_tiny_qwen2_audio

from qwen_audio_mt import train as train_mod
from qwen_audio_mt.config import from_dict, plain
from qwen_audio_mt.paths import data_available, data_root
from qwen_audio_mt.tokenizer import Tokenizer, TokenizerSpec
from qwen_audio_mt.train import CONF_DIR, data_config, job_config

EXPERIMENTS = sorted(p.stem for p in (Path(CONF_DIR) / "experiment").glob("*.yaml"))
TRAINERS = sorted(p.stem for p in (Path(CONF_DIR) / "trainer").glob("*.yaml"))
LOGGERS = sorted(p.stem for p in (Path(CONF_DIR) / "logger").glob("*.yaml"))

# the tiny default, shrunk further: a 30-step run takes seconds on 2 cores
SHRINK = ["model.encoder.n_state=64", "model.encoder.n_head=2", "model.encoder.n_layer=1",
          "model.llm.config.hidden_size=64", "model.llm.config.intermediate_size=128",
          "model.llm.config.num_hidden_layers=1", "model.llm.config.num_attention_heads=2",
          "model.llm.config.num_key_value_heads=1"]
SMALL_BATCHES = ["data.loader.limits.max_batch_size=8", "data.loader.limits.pool=32",
                 "data.loader.num_workers=0"]
QUIET = ["trainer.enable_progress_bar=false", "+trainer.enable_model_summary=false"]

# rows of the real Qwen-7B / Qwen2-0.5B embedding matrices (config.json vocab_size of both)
QWEN_ROWS = 151_936


def compose_train(run_dir: Path, *overrides: str) -> DictConfig:
    """The lightning-hydra-template way: compose with the hydra node, register it, run in-process."""
    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=[f"run_dir={run_dir}", *overrides], return_hydra_config=True)
        HydraConfig().set_config(cfg)
    return cfg


# ---------------------------------------------------------------------------- stand-in checkpoints
@pytest.fixture(scope="module")
def stand_ins(tmp_path_factory) -> Path:
    """Tiny checkpoints where the GPU experiments look for the real ones (`paths.checkpoints`).

    - whisper/large-v2.pt, whisper/small.pt: whisper.load_model's format,
      {"dims": asdict(ModelDimensions), "model_state_dict": Whisper(dims).state_dict()}.
    - Qwen-7B/, Qwen2-0.5B/: transformers folders of a tiny Qwen2ForCausalLM with the real models'
      151,936 embedding rows (Qwen-7B untied, Qwen2-0.5B tied, as released).
    - Qwen2-Audio-7B/, Qwen-Audio/: the released layouts (model/interop.py), tiny, with rows for
      Qwen's ids, where qwen2_audio_7b.yaml and qwen_audio.yaml look.
    """
    from transformers import Qwen2Config, Qwen2ForCausalLM
    from whisper.model import ModelDimensions, Whisper
    root = tmp_path_factory.mktemp("checkpoints")
    (root / "whisper").mkdir()
    torch.manual_seed(0)
    dims = ModelDimensions(n_mels=80, n_audio_ctx=1500, n_audio_state=32, n_audio_head=2, n_audio_layer=1,
                           n_vocab=64, n_text_ctx=8, n_text_state=32, n_text_head=2, n_text_layer=1)
    for name in ("large-v2", "small"):
        torch.save({"dims": asdict(dims), "model_state_dict": Whisper(dims).state_dict()},
                   root / "whisper" / f"{name}.pt")
    for name, tied in (("Qwen-7B", False), ("Qwen2-0.5B", True)):
        conf = Qwen2Config(vocab_size=QWEN_ROWS, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                           num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=tied)
        Qwen2ForCausalLM(conf).save_pretrained(root / name)
    if data_available("qwen_audio", "qwen.tiktoken"):  # the released layouts, rows for Qwen's ids
        from qwen_audio_mt.model.builders import LLMConfig, ModelConfig, build_model
        from qwen_audio_mt.model.encoder import EncoderConfig
        from qwen_audio_mt.model.qwen_audio import save_qwen_audio
        tok = Tokenizer.from_spec(TokenizerSpec(base=str(data_root() / "qwen_audio" / "qwen.tiktoken"), pattern="qwen"))
        save_tiny_qwen2_audio(root / "Qwen2-Audio-7B", tok)
        qwen = ModelConfig(EncoderConfig(n_state=16, n_head=2, n_layer=1), tokenizer=tok.spec, llm=LLMConfig(config=dict(
            hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
            vocab_size=155_947, tie_word_embeddings=False)))  # Qwen-Audio's 155,947 rows
        save_qwen_audio(build_model(qwen, tok), tok, root / "Qwen-Audio")
    return root


def test_stand_in_whisper_is_whisper_load_models_format(stand_ins):
    import whisper
    model = whisper.load_model(str(stand_ins / "whisper" / "small.pt"), device="cpu")
    assert model.dims.n_audio_state == 32


# ---------------------------------------------------------------------------- helpers
def one_batch(raw: dict, **limits) -> dict:
    """The first train batch of the config's own data pipeline (small pool, no workers)."""
    from qwen_audio_mt.data.collate import BatchLimits
    from qwen_audio_mt.data.datamodule import AudioDataModule
    dcfg = data_config(raw)
    loader = replace(dcfg.loader, num_workers=0, limits=BatchLimits(**{"max_batch_size": 4, "pool": 8, **limits}))
    return next(iter(AudioDataModule(replace(dcfg, loader=loader)).train_dataloader()))


def build_module(raw: dict):
    from qwen_audio_mt.lit import AudioLMModule, OptimConfig
    from qwen_audio_mt.model.builders import ModelConfig
    optim = from_dict(OptimConfig, {**raw["optim"], "total_steps": max(raw["trainer"]["max_steps"], 1)})
    return AudioLMModule(from_dict(ModelConfig, raw["model"]), optim, raw["log_every"])


def embedding_weights(model) -> list[torch.nn.Parameter]:
    weights = [model.llm.get_input_embeddings().weight, model.llm.get_output_embeddings().weight]
    return list({id(w): w for w in weights}.values())  # tied: one tensor


def assert_stage(module, batch: dict, old_rows: int) -> None:
    """requires_grad per part as the stage says, then one backward pass: frozen parts get no
    gradient; with the LLM frozen, only embedding rows past the checkpoint's `old_rows` do."""
    model, t = module.model, module.model_cfg.trainable
    assert all(p.requires_grad == t.encoder for p in model.encoder.parameters())
    assert all(p.requires_grad == t.adapter for p in model.adapter.parameters())
    emb = {id(w) for w in embedding_weights(model)}
    for name, p in model.llm.named_parameters():
        assert p.requires_grad == (t.llm or (t.new_token_rows and id(p) in emb)), name

    module.train()
    module._forward(batch).loss.backward()
    for part, flag in (("encoder", t.encoder), ("adapter", t.adapter)):
        grads = [p.grad for p in getattr(model, part).parameters()]
        assert all(g is None for g in grads) if not flag else any(g is not None and g.abs().sum() > 0 for g in grads)
    if t.llm:
        assert all(p.grad is not None for p in model.llm.parameters() if p.requires_grad)
        return
    for name, p in model.llm.named_parameters():
        if id(p) not in emb:
            assert p.grad is None, name
    # the checkpoint's own rows stop where the tag tokens begin (Qwen pads its vocabulary, and the
    # tags land in that padding from [[[AUDIO:modality]]] on)
    frozen = min(old_rows, model.placeholder_id)
    for w in embedding_weights(model):
        assert w.shape[0] > old_rows, "the tag tokens must have added rows"
        assert w.grad[:frozen].abs().max() == 0, "a checkpoint row moved while the LLM is frozen"
        assert w.grad[frozen:].abs().amax(dim=1).gt(0).any()
    # the input rows of the new tags in the prompts learn (<audio> and </audio> are the adapter's
    # bos/eos vectors, not embedding rows)
    ids = batch["input_ids"].unique()
    tags = ids[(ids >= old_rows) & (ids != model.audio_start_id) & (ids != model.audio_end_id)]
    assert len(tags), "no new tag token in the batch"
    assert model.llm.get_input_embeddings().weight.grad[tags].abs().amax(dim=1).gt(0).any()


# ---------------------------------------------------------------------------- every experiment
@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_composes_and_runs(experiment, tmp_path, small_corpus, stand_ins, request):
    """CPU experiments: one train + one valid batch through train(cfg) (debug=fast). GPU ones:
    everything that can exist without CUDA is instantiated and checked, then skipped. Chat SFT
    (sft) reads conversations and starts from a pretraining run's export (sft_roots)."""
    paths = [f"paths.shards={small_corpus}"]
    if experiment.startswith("sft"):  # chat SFT: conversation shards
        shards, output = request.getfixturevalue("sft_roots")
        paths = [f"paths.shards={shards}", f"paths.output={output}"]
    cfg = compose_train(tmp_path / "run", f"experiment={experiment}", *paths,
                        f"paths.checkpoints={stand_ins}", *QUIET)
    raw = plain(job_config(cfg))
    if raw["trainer"]["accelerator"] == "cpu":
        cfg = compose_train(tmp_path / "run", f"experiment={experiment}", *paths, "debug=fast", *QUIET)
        summary = train_mod.train(cfg)
        assert summary["step"] == 1 and summary["nan_skipped"] == 0 and summary["realised_mixture"]
        only = {t for s in raw["mixture"]["sources"] for t in (s.get("tasks") or ())}
        assert not only or set(summary["realised_mixture"]) <= only
        return

    # --- a GPU experiment on a CPU machine: strategy, callbacks, loggers, data, model
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.strategies import Strategy
    strategy = cfg.trainer.get("strategy")
    if isinstance(strategy, DictConfig):
        assert isinstance(instantiate(strategy), Strategy)
    callbacks = [instantiate(c) for c in cfg.callbacks.values()]
    ckpt = next(c for c in callbacks if isinstance(c, ModelCheckpoint))
    assert Path(ckpt.dirpath) == tmp_path / "run" / "checkpoints"
    assert [instantiate(c) for c in cfg.logger.values()]
    dcfg = data_config(raw)
    assert dcfg.loader.tokenizer.base == raw["model"]["tokenizer"]["base"]
    assert dcfg.loader.n_mels == raw["model"]["encoder"]["n_mels"]
    if not Path(raw["model"]["tokenizer"]["base"]).exists():
        pytest.skip(f"tokenizer ranks not found at {raw['model']['tokenizer']['base']} (shared data root)")

    module = build_module(raw)
    model = module.model
    if raw["model"]["encoder"]["checkpoint"]:
        saved = torch.load(raw["model"]["encoder"]["checkpoint"], weights_only=True)["model_state_dict"]
        assert torch.equal(model.encoder.whisper.conv1.weight, saved["encoder.conv1.weight"])
    else:  # a released checkpoint's audio tower (model.released)
        from safetensors.torch import load_file
        saved = load_file(Path(raw["model"]["released"]["path"]) / "model.safetensors")
        key = {"qwen2-audio": "audio_tower.conv1.weight", "qwen-audio": "transformer.audio.conv1.weight"}
        assert torch.equal(model.encoder.whisper.conv1.weight, saved[key[raw["model"]["released"]["format"]]])
    assert model.llm.get_input_embeddings().weight.dtype == getattr(torch, raw["model"]["llm"]["dtype"])
    groups = module.configure_optimizers()["optimizer"].param_groups
    assert sum(len(g["params"]) for g in groups) == sum(1 for p in model.parameters() if p.requires_grad)
    if not module.model_cfg.trainable.llm:  # decay would move the frozen rows: none on embeddings
        no_decay = {id(p) for g in groups if g["weight_decay"] == 0 for p in g["params"]}
        assert all(id(w) in no_decay for w in embedding_weights(model))
    batch = one_batch(raw)
    if dcfg.loader.pad_to_30s:
        assert batch["mel"].shape[-1] == 3000
    assert_stage(module, batch, QWEN_ROWS)
    pytest.skip(f"needs CUDA: {experiment} runs on trainer.accelerator=cuda "
                f"(strategy, callbacks, loggers, data and model were built and checked)")


def test_sft_stage_freezes_the_encoder(tmp_path, small_corpus, stand_ins):
    cfg = compose_train(tmp_path, "experiment=pretrain_small", "stage=sft", f"paths.shards={small_corpus}",
                        f"paths.checkpoints={stand_ins}")
    raw = plain(job_config(cfg))
    if not Path(raw["model"]["tokenizer"]["base"]).exists():
        pytest.skip("qwen.tiktoken not found (shared data root)")
    assert raw["model"]["trainable"] == {"encoder": False, "adapter": True, "llm": True, "new_token_rows": True}
    assert_stage(build_module(raw), one_batch(raw), QWEN_ROWS)


def test_pretrain_trains_tag_rows_inside_checkpoint_padding(tmp_path, small_corpus, stand_ins):
    cfg = compose_train(tmp_path, "experiment=pretrain_small", f"paths.shards={small_corpus}",
                        f"paths.checkpoints={stand_ins}")
    raw = plain(job_config(cfg))
    if not Path(raw["model"]["tokenizer"]["base"]).exists():
        pytest.skip("qwen.tiktoken not found (shared data root)")
    module = build_module(raw)
    from qwen_audio_mt.tokenizer import Tokenizer, TokenizerSpec
    tok = Tokenizer.from_spec(from_dict(TokenizerSpec, raw["model"]["tokenizer"]))
    transcribe = tok.token_id("<|startoftranscript|>")
    assert transcribe < QWEN_ROWS
    module._forward(one_batch(raw)).loss.backward()
    assert module.model.llm.get_output_embeddings().weight.grad[transcribe].abs().sum() > 0


@pytest.mark.parametrize("name", TRAINERS)
def test_trainer_strategy_instantiates(name, tmp_path):
    cfg = compose_train(tmp_path, f"trainer={name}")
    strategy = cfg.trainer.strategy
    if not isinstance(strategy, DictConfig):
        assert strategy == "auto"
        return
    if "DeepSpeed" in strategy._target_:
        pytest.importorskip("deepspeed", reason="trainer=deepspeed needs `pip install deepspeed` (GPU machine)")
    from lightning.pytorch.strategies import Strategy
    built = instantiate(strategy)
    assert isinstance(built, Strategy)
    if name == "fsdp":  # every transformer block its own unit, not the whole model as one
        from torch.distributed.fsdp.wrap import ModuleWrapPolicy
        from transformers.models.qwen2.modeling_qwen2 import Qwen2DecoderLayer
        from whisper.model import ResidualAttentionBlock
        policy = built.kwargs["auto_wrap_policy"]
        assert isinstance(policy, ModuleWrapPolicy) and policy._module_classes == {Qwen2DecoderLayer, ResidualAttentionBlock}


@pytest.mark.parametrize("name", LOGGERS)
def test_logger_group_writes_into_the_run_folder(name, tmp_path):
    cfg = compose_train(tmp_path, f"logger={name}")
    for logger in (instantiate(c) for c in cfg.logger.values()):
        logger.log_metrics({"train/loss": 1.5}, step=3)
        logger.finalize("success")
    written = {p.relative_to(tmp_path).parts[0] for p in tmp_path.rglob("*") if p.is_file()}
    assert written == ({"logs", "tensorboard"} if name == "tensorboard" else {"logs"})
    assert "1.5" in (tmp_path / "logs" / "metrics.csv").read_text()
    if name == "tensorboard":
        assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))


# ---------------------------------------------------------------------------- a short real run
def test_short_run_checkpoints_exports_and_logs(tmp_path, small_corpus, monkeypatch):
    from qwen_audio_mt.model.export import load_checkpoint, load_exported
    built = {}
    real_build = train_mod.build

    def spy(cfg):  # keep the trained in-memory module
        built["module"], built["dm"], trainer = real_build(cfg)
        return built["module"], built["dm"], trainer

    monkeypatch.setattr(train_mod, "build", spy)
    run = tmp_path / "run"
    # a periodic save at 20, none at the end: FinalCheckpoint saves step 30 as one more periodic file
    cfg = compose_train(run, f"paths.shards={small_corpus}", "trainer.max_steps=30", "evaluate=false",
                        "callbacks.model_checkpoint.every_n_train_steps=20", *SHRINK, *SMALL_BATCHES, *QUIET)
    summary = train_mod.train(cfg)
    assert summary["step"] == 30 and summary["nan_skipped"] == 0
    last = run / "checkpoints" / "last.ckpt"
    assert sorted(p.name for p in last.parent.iterdir()) == ["last.ckpt", "step000020.ckpt", "step000030.ckpt"]
    assert last.is_symlink() and last.resolve().name == "step000030.ckpt"
    assert Path(summary["export"]) == run / "export"

    ckpt = torch.load(last, map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 30 and ckpt["model_config"]["llm"]["config"]["hidden_size"] == 64

    module, dm = built["module"].eval(), built["dm"]
    exported, _, _ = load_exported(run / "export")
    from_ckpt, _ = load_checkpoint(last)
    batch = next(iter(dm.val_dataloader()))
    args = (batch["input_ids"], batch["attention_mask"], batch["mel"], batch["mel_lengths"], batch["labels"])
    with torch.no_grad():
        losses = [m(*args).loss for m in (module.model, exported, from_ckpt)]
    assert torch.isfinite(losses[0]) and torch.equal(losses[0], losses[1]) and torch.equal(losses[0], losses[2])

    with open(run / "logs" / "metrics.csv", newline="") as f:
        header = next(csv.reader(f))
    per_task = {c for c in header if c.startswith("train/loss_")}
    mix = {c for c in header if c.startswith("mix/")}
    assert len(per_task) >= 10 and len(mix) >= 30, (sorted(per_task), sorted(mix))
    assert {c.removeprefix("mix/") for c in mix} == set(summary["realised_mixture"])
    # model FLOPs over wall time, and MFU over the matmul throughput measured on this CPU
    assert {"perf/tflops", "perf/mfu"} <= set(header)
    perf = summary["perf"]
    assert perf["tflop"] > 0 and perf["seconds"] > 0 and 0 < perf["mfu"] < 1
    assert round(perf["samples_per_s"] * perf["seconds"]) >= 29  # every timed step (not the first) has samples
    assert perf["peak"] == "matmul throughput measured on this CPU" and perf["tflops"] < perf["peak_tflops"]


def test_packed_run_trains_through_lightning(tmp_path, small_corpus, monkeypatch):
    """data.loader.limits.pack: the trainer steps on packed batches (mel_layout, restarting
    position ids, no attention mask) with every sample's task still logged."""
    from qwen_audio_mt.data import loader
    seen = []
    real_collate = loader.collate_for

    def spy(batch, pad_id, lim):
        out = real_collate(batch, pad_id, lim)
        seen.append(out)
        return out

    monkeypatch.setattr(loader, "collate_for", spy)  # num_workers=0: batches are made in this process
    run = tmp_path / "run"
    cfg = compose_train(run, f"paths.shards={small_corpus}", "trainer.max_steps=10", "evaluate=false",
                        "data.loader.limits.pack=true", *SHRINK, *SMALL_BATCHES, *QUIET)
    summary = train_mod.train(cfg)
    assert summary["step"] == 10 and summary["nan_skipped"] == 0
    packed = [b for b in seen if b.get("mel_layout") is not None]
    assert packed and all(b["attention_mask"] is None and b["position_ids"] is not None for b in packed)
    assert any(len(b["tasks"]) > b["input_ids"].shape[0] for b in packed)  # samples shared rows
    with open(run / "logs" / "metrics.csv", newline="") as f:
        header = next(csv.reader(f))
    assert "train/loss" in header and sum(c.startswith("train/loss_") for c in header) >= 5


def test_compile_option_compiles_the_llm_in_place(tmp_path, small_corpus):
    cfg = compose_train(tmp_path, f"paths.shards={small_corpus}", "compile=true", *SHRINK, *SMALL_BATCHES, *QUIET)
    module, _, _ = train_mod.build(cfg)
    plain_keys = set(train_mod.build(compose_train(tmp_path, f"paths.shards={small_corpus}", *SHRINK,
                                                   *SMALL_BATCHES, *QUIET))[0].state_dict())
    assert module.model.llm.get_decoder()._compiled_call_impl is not None
    assert set(module.state_dict()) == plain_keys  # checkpoints and exports keep their keys


# ---------------------------------------------------------------------------- a non-finite loss
def test_non_finite_loss_skips_the_step(small_corpus, monkeypatch, tmp_path):
    from qwen_audio_mt.data.collate import BatchLimits
    from qwen_audio_mt.data.datamodule import AudioDataModule, DataConfig
    from qwen_audio_mt.data.loader import LoaderConfig
    from qwen_audio_mt.data.mixture import MixtureConfig, SourceConfig
    from qwen_audio_mt.lit import AudioLMModule, OptimConfig
    from qwen_audio_mt.model.builders import LLMConfig, ModelConfig
    from qwen_audio_mt.model.encoder import EncoderConfig
    L.seed_everything(0, verbose=False)
    mcfg = ModelConfig(EncoderConfig(n_state=64, n_head=2, n_layer=1),
                       LLMConfig(config={"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 1,
                                         "num_attention_heads": 2, "num_key_value_heads": 1,
                                         "tie_word_embeddings": True}))
    module = AudioLMModule(mcfg, OptimConfig(warmup_steps=1, total_steps=4), log_every=1)
    dm = AudioDataModule(DataConfig(MixtureConfig((SourceConfig(str(small_corpus / "embedded")),)),
                                    LoaderConfig(num_workers=0, batches_per_epoch=10,
                                                 limits=BatchLimits(max_batch_size=8, pool=32))))
    real_forward, calls = module.model.forward, []

    def forward(*args, **kwargs):  # the second training step's loss is NaN
        out = real_forward(*args, **kwargs)
        calls.append(1)
        if len(calls) == 2:
            out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(module.model, "forward", forward)

    class Watch(L.Callback):
        changed, losses = [], []

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            self.before = [p.detach().clone() for p in pl_module.parameters()]

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            self.changed.append(any(not torch.equal(a, p) for a, p in zip(self.before, pl_module.parameters())))
            loss = (outputs or {}).get("loss")  # a skipped step returns nothing
            self.losses.append(None if loss is None else float(loss))

    watch = Watch()
    trainer = L.Trainer(accelerator="cpu", max_steps=4, limit_val_batches=0, logger=False, callbacks=[watch],
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        gradient_clip_val=1.0, default_root_dir=tmp_path)
    trainer.fit(module, datamodule=dm)
    assert module.nan_skipped == 1
    assert watch.changed[1] is False, "the NaN step changed parameters"
    assert trainer.global_step == 4 and len(watch.changed) == 4  # a skipped step still counts
    assert watch.changed[0] and all(watch.changed[2:]), watch.changed
    assert watch.losses[1] is None and all(math.isfinite(x) for i, x in enumerate(watch.losses) if i != 1)
    assert all(torch.isfinite(p).all() for p in module.parameters())
    trainer.save_checkpoint(tmp_path / "nan.ckpt")
    assert torch.load(tmp_path / "nan.ckpt", weights_only=True)["nan_skipped"] == 1


# ---------------------------------------------------------------------------- in-loop validation
def test_in_loop_validation_metrics_and_best_checkpoint(tmp_path, small_corpus):
    """Every val_check_interval the registry metrics of a fixed validation subset are logged per
    task and as one aggregate, which the best-checkpoint callback monitors."""
    from qwen_audio_mt.tasks import load_tasks
    run = tmp_path / "run"
    cfg = compose_train(run, f"paths.shards={small_corpus}", "trainer.max_steps=20", "trainer.val_check_interval=10",
                        "trainer.limit_val_batches=2", "evaluate=false", "callbacks.validation_metrics.per_task=1",
                        "callbacks.validation_metrics.max_new_tokens=8", *SHRINK, *SMALL_BATCHES, *QUIET)
    train_mod.train(cfg)
    with open(run / "logs" / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    agg = [(int(r["step"]), float(r["val/aggregate"])) for r in rows if r.get("val/aggregate")]
    assert [s for s, _ in agg] == [9, 19]  # after steps 10 and 20 (Lightning logs the 0-based step)
    reg = load_tasks()
    logged = {k for k in rows[0] if k.startswith("val/") and k.count("/") == 2}
    every = {f"val/{t.name}/{t.metric}" for t in reg}
    # a timestamp shift needs at least one matched word, which an untrained model may not give
    assert every - {"val/word_timestamps/timestamp_shift"} <= logged <= every
    # best.ckpt is weights only (no callback state): it holds the step of the first best aggregate
    # (a tie does not replace it)
    ckpt = torch.load(run / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)
    best_step, _ = max(agg, key=lambda sa: sa[1])
    assert ckpt["global_step"] == best_step + 1 and "optimizer_states" not in ckpt


def test_continue_qwen2_audio_trains_tag_rows_and_leaves_the_llm(tmp_path, small_corpus, stand_ins):
    """experiment=continue_qwen2_audio on a tiny Qwen2-Audio-layout checkpoint, 20 CPU steps:
    encoder and adapter move, our tag rows learn, every other LLM tensor and row is unchanged."""
    from safetensors.torch import load_file
    if not (stand_ins / "Qwen2-Audio-7B").exists():
        pytest.skip("qwen.tiktoken not found (shared data root)")
    cfg = compose_train(tmp_path / "run", "experiment=continue_qwen2_audio", f"paths.shards={small_corpus}",
                        f"paths.checkpoints={stand_ins}", "trainer=cpu", "trainer.max_steps=20",
                        "model.llm.dtype=float32", "model.gradient_checkpointing=false", "evaluate=false",
                        "data.loader.num_workers=0", "data.loader.limits.max_batch_size=8", "optim.warmup_steps=2",
                        "optim.lr=1e-3", *QUIET)
    summary = train_mod.train(cfg)
    assert summary["step"] == 20
    after = load_file(tmp_path / "run" / "export" / "model.safetensors")
    before = load_file(stand_ins / "Qwen2-Audio-7B" / "model.safetensors")
    assert json.loads((tmp_path / "run" / "export" / "config.json").read_text())["encoder"]["compat"] == "qwen2-audio"
    assert not torch.equal(after["encoder.whisper.conv1.weight"], before["audio_tower.conv1.weight"])
    assert not torch.equal(after["adapter.proj.weight"], before["multi_modal_projector.linear.weight"])
    for key, theirs in before.items():
        if key.startswith("language_model.model.layers") or key == "language_model.model.norm.weight":
            assert torch.equal(after["llm.model." + key[len("language_model.model."):]], theirs), key
    tok = Tokenizer.from_spec(TokenizerSpec(base=str(data_root() / "qwen_audio" / "qwen.tiktoken"), pattern="qwen"))
    first_tag = tok.role_id("audio_placeholder")
    for ours, theirs in (("llm.model.embed_tokens.weight", "language_model.model.embed_tokens.weight"),
                         ("llm.lm_head.weight", "language_model.lm_head.weight")):
        assert torch.equal(after[ours][:first_tag], before[theirs][:first_tag]), ours
        moved = (after[ours][first_tag:] != before[theirs][first_tag:]).any(dim=1)
        assert moved[tok.token_id("<|startofanalysis|>") - first_tag] and moved.sum() >= 5, ours
