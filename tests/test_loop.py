"""The shared loop (training/loop.py) on a toy step: history rows, checkpoints, resume and the non-finite stop."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from training import loop


@dataclasses.dataclass(frozen=True, kw_only=True)
class ToyConfig(loop.LoopConfig):
    def batch_split(self) -> tuple[int, int]:
        return 1, 1


def count(poison_at: int | None = None, crash_at: int | None = None):
    """A step that adds its index to x; its loss is x (NaN from step `poison_at` on)."""

    def step(index, state):
        x = state["x"] + np.float32(index)
        loss = np.float32("nan") if poison_at is not None and index + 1 >= poison_at else x
        return {"x": x}, {"loss": loss, "grad_norm": np.float32(1.0)}

    def row(done, metrics):
        if done == crash_at:
            raise KeyboardInterrupt
        return {"step": done, "loss": float(metrics["loss"])}

    return step, row


def test_a_resumed_run_logs_and_ends_as_an_uninterrupted_one(tmp_path):
    cfg = ToyConfig(steps=7, learning_rate=1.0, log_every=2, save_every=2)
    start = {"x": np.zeros((), np.float32)}
    clean = loop.run(cfg, start, *count(), checkpoint_dir=tmp_path / "clean")
    assert [r["step"] for r in clean.history] == [2, 4, 6, 7] and float(clean.state["x"]) == 21.0
    with pytest.raises(KeyboardInterrupt):
        loop.run(cfg, start, *count(crash_at=6), checkpoint_dir=tmp_path / "run")
    logged = []
    resumed = loop.run(cfg, start, *count(), checkpoint_dir=tmp_path / "run", on_log=lambda s, r: logged.append(s))
    assert resumed.resumed_from == 4 and logged == [6, 7]  # the save of step 6 follows its log
    assert resumed.history == clean.history and float(resumed.state["x"]) == 21.0


def test_a_non_finite_loss_stops_before_it_is_logged_or_saved(tmp_path):
    cfg = ToyConfig(steps=6, learning_rate=1.0, log_every=3, save_every=2)
    with pytest.raises(
        loop.NonFiniteLoss,
        match=r"^loss is nan \(gradient norm 1.0\) at step 4; the last good "
        r"checkpoint is kept in .*ckpt$",
    ):
        loop.run(cfg, {"x": np.zeros((), np.float32)}, *count(poison_at=4), checkpoint_dir=tmp_path / "ckpt")
    manager = loop.checkpoint_manager(tmp_path / "ckpt")
    step, state, history = loop.restore_latest(manager, {"x": np.zeros((), np.float32)})
    manager.close()
    assert step == 2 and float(state["x"]) == 1.0 and history == []  # no log step before it: an empty history
    with pytest.raises(loop.NonFiniteLoss, match="nothing was saved"):
        loop.run(cfg, {"x": np.zeros((), np.float32)}, *count(poison_at=3))


def test_the_schedule_is_counted_in_updates():
    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Twice(ToyConfig):
        @property
        def updates_per_step(self) -> int:
            return 2

    once = loop.learning_rate_schedule(ToyConfig(steps=4, learning_rate=1.0, warmup_steps=2, schedule="constant"))
    twice = loop.learning_rate_schedule(Twice(steps=4, learning_rate=1.0, warmup_steps=2, schedule="constant"))
    assert [float(once(i)) for i in range(3)] == [0.5, 1.0, 1.0]
    assert [float(twice(i)) for i in range(5)] == [0.25, 0.5, 0.75, 1.0, 1.0]
    assert loop.optimizer_key(Twice(steps=4, learning_rate=1.0)) != loop.optimizer_key(
        ToyConfig(steps=4, learning_rate=1.0)
    )
