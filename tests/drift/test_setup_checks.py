"""The training setups DRIFT refuses, however DeepSpeed or FSDP reach the Trainer."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from frankmerge.drift.callback import check_training_setup
from frankmerge.drift.errors import DriftSetupError


def _args(**fields: object) -> SimpleNamespace:
    values: dict[str, object] = {"fsdp": "", "deepspeed": None, "deepspeed_plugin": None, "fp16": False}
    return SimpleNamespace(**{**values, **fields})


@pytest.fixture(autouse=True)
def _no_accelerate_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ACCELERATE_USE_DEEPSPEED", "ACCELERATE_DEEPSPEED_ZERO_STAGE", "ACCELERATE_USE_FSDP", "FSDP_VERSION"):
        monkeypatch.delenv(name, raising=False)


def test_plain_ddp_setups_pass():
    for timing in ("backward", "step"):
        check_training_setup(_args(), "adaptive", timing)  # type: ignore[arg-type]
    check_training_setup(_args(fp16=True), "adaptive", "backward")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "args",
    [
        _args(deepspeed="ds.json", hf_deepspeed_config=SimpleNamespace(config={"zero_optimization": {"stage": 3}})),
        _args(deepspeed_plugin=SimpleNamespace(zero_stage=3)),  # accelerate launch with a DeepSpeed config
        _args(deepspeed_plugin=SimpleNamespace(zero_stage=None, deepspeed_config={"zero_optimization": {"stage": 3}})),
    ],
    ids=["trainer_json", "accelerate_plugin", "plugin_config"],
)
def test_zero3_is_refused_however_deepspeed_is_configured(args: SimpleNamespace):
    with pytest.raises(DriftSetupError, match="ZeRO-3"):
        check_training_setup(args, "adaptive", "backward")  # type: ignore[arg-type]


def test_zero2_from_accelerate_refuses_step_timing_only():
    args = _args(deepspeed_plugin=SimpleNamespace(zero_stage=2))
    check_training_setup(args, "adaptive", "backward")  # type: ignore[arg-type]
    with pytest.raises(DriftSetupError, match="timing 'step' cannot run under DeepSpeed"):
        check_training_setup(args, "adaptive", "step")  # type: ignore[arg-type]


def test_accelerate_environment_alone_is_recognised(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_ZERO_STAGE", "3")
    with pytest.raises(DriftSetupError, match="ZeRO-3"):
        check_training_setup(_args(), "adaptive", "backward")  # type: ignore[arg-type]
    monkeypatch.delenv("ACCELERATE_USE_DEEPSPEED")
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    with pytest.raises(DriftSetupError, match="FSDP"):
        check_training_setup(_args(), "adaptive", "backward")  # type: ignore[arg-type]


def test_fsdp_and_fp16_absolute_are_refused():
    with pytest.raises(DriftSetupError, match="FSDP"):
        check_training_setup(_args(fsdp="full_shard"), "adaptive", "backward")  # type: ignore[arg-type]
    with pytest.raises(DriftSetupError, match="fp16 loss scaling"):
        check_training_setup(_args(fp16=True), "absolute", "backward")  # type: ignore[arg-type]
    check_training_setup(_args(fp16=True), "absolute", "step")  # type: ignore[arg-type]


def test_runner_defaults_are_the_papers(tmp_path):  # type: ignore[no-untyped-def]
    """3 epochs, lr 1e-6, cosine schedule, 5 % warm-up, per-device batch 1 reach the Trainer."""
    from frankmerge.drift.train import TrainOptions, _training_arguments

    args = _training_arguments(tmp_path, TrainOptions())
    assert args.num_train_epochs == 3.0 and args.learning_rate == 1e-6 and args.per_device_train_batch_size == 1
    assert getattr(args.lr_scheduler_type, "value", args.lr_scheduler_type) == "cosine"
    assert args.get_warmup_steps(1000) == 50, "5 % of the steps warm up"


def test_fsdp2_is_accepted_with_step_timing_and_fsdp1_is_refused(monkeypatch: pytest.MonkeyPatch):
    check_training_setup(_args(fsdp=True, fsdp_config={"version": 2}), "adaptive", "step")  # type: ignore[arg-type]
    with pytest.raises(DriftSetupError, match="use timing 'step'"):
        check_training_setup(_args(fsdp=True, fsdp_config={"version": 2}), "adaptive", "backward")  # type: ignore[arg-type]
    with pytest.raises(DriftSetupError, match="FSDP1 flattens.*use FSDP2"):
        check_training_setup(_args(fsdp=True, fsdp_config={"version": 1}), "adaptive", "step")  # type: ignore[arg-type]
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")  # accelerate launch --config_file fsdp.yaml
    with pytest.raises(DriftSetupError, match="FSDP1"):  # accelerate reads a missing FSDP_VERSION as 1
        check_training_setup(_args(), "adaptive", "step")  # type: ignore[arg-type]
    monkeypatch.setenv("FSDP_VERSION", "2")
    check_training_setup(_args(), "grad_norm", "step")  # type: ignore[arg-type]


def test_zero3_refusal_names_fsdp2_as_the_alternative():
    with pytest.raises(DriftSetupError, match="use FSDP2 with timing 'step'"):
        check_training_setup(_args(deepspeed_plugin=SimpleNamespace(zero_stage=3)), "adaptive", "step")  # type: ignore[arg-type]
