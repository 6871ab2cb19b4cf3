"""Tune callback for a sweep: one line per trial event, a bar over all trials, leftover cleanup."""

from __future__ import annotations

from pathlib import Path

from ray.tune import Callback

from sweeps.space import fmt, normalize
from sweeps.trial import cleanup, exp_name


class Progress(Callback):
    """Tune callback: one line per trial event, a progress bar over all trials, leftover cleanup."""

    def __init__(self, ctx: dict, total: int):
        self.ctx = ctx
        self.total = total
        self.bar = None
        self.done = 0

    def __getstate__(self):  # Tune pickles its run config; the bar stays behind
        return {"ctx": self.ctx, "total": self.total, "bar": None, "done": self.done}

    def _name(self, trial) -> str:
        return exp_name(self.ctx["sweep"], trial.trial_id)

    def _bar(self):
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=self.total, desc=f"sweep {self.ctx['sweep']}", unit="trial", dynamic_ncols=True)
        return self.bar

    def _write(self, text: str) -> None:
        self._bar().write(text)

    def setup(self, **info):
        self._bar()

    def on_trial_start(self, iteration, trials, trial, **info):
        params = ", ".join(f"{k}={fmt(normalize(v))}" for k, v in trial.config.items())
        self._write(f"{self._name(trial)}: started ({params})")

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if "step" in result:
            self._bar().set_postfix_str(f"{self._name(trial)} step {result['step']} loss {result['loss']:.4f}")

    def on_trial_complete(self, iteration, trials, trial, **info):
        name = self._name(trial)
        last = trial.last_result or {}
        if last.get("completed"):
            self._write(
                f"{name}: completed (primary_score {fmt(last.get('primary_score'))}, loss {fmt(last.get('loss'))})"
            )
        else:
            self._write(
                f"{name}: stopped early by the scheduler at step {last.get('step')} (loss {fmt(last.get('loss'))})"
            )
        self._finish(name)

    def on_trial_error(self, iteration, trials, trial, **info):
        name = self._name(trial)
        err = Path(self.ctx["workdir"]) / name / "error.txt"
        line = err.read_text().strip().splitlines()[-1] if err.is_file() and err.read_text().strip() else "see log"
        self._write(f"{name}: failed: {line}")
        self._finish(name)

    def on_experiment_end(self, trials, **info):
        if self.bar is not None:
            self.bar.close()

    def _finish(self, name: str) -> None:
        cleanup(self.ctx, name)
        self.done += 1
        self._bar().update(1)
