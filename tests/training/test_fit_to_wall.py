"""``fit_steps_to_wall``: a run sized to a fixed lease of a machine of unknown speed (e.g. a lent GPU)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.training.test_train_smoke import _config_file
from training import loop
from training.config import load_config
from training.loop import LoopSettings, RunningMeans, cosine_factor, fitted_max_steps, run_steps
from training.trainer import Trainer


def test_fitted_max_steps_uses_the_measured_pace_and_keeps_a_margin() -> None:
    # 10 steps took 20 s (2 s a step); 100 s are left, 4 % held back: 48 more steps.
    assert fitted_max_steps(10, 10, 20.0, 100.0) == 58
    assert fitted_max_steps(10, 10, 20.0, 100.0, margin=0.0) == 60
    assert fitted_max_steps(10, 10, 20.0, -5.0) == 10  # out of time already: never below the current step


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class _Host:
    """One simulated second per step and five per validation."""

    def __init__(self, clock: _Clock) -> None:
        self.step, self.clock, self.validated = 0, clock, []

    def train_step(self, batch: dict) -> dict[str, float]:
        self.clock.now += 1.0
        self.step += 1
        return {"loss": 1.0}

    def _validate_and_save(self, running: RunningMeans) -> None:
        self.clock.now += 5.0
        self.validated.append(self.step)


def test_run_steps_refits_max_steps_once_and_ends_inside_the_wall(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = _Clock()
    monkeypatch.setattr(loop.time, "monotonic", clock)
    host, fitted = _Host(clock), []
    settings = LoopSettings(1000, 5, 1, False, 100.0, fit_to_wall=True)
    run_steps(host, iter(lambda: {}, None), settings, 0.0, on_fit=fitted.append)
    # The pace skips the first step (warm-up: val_every // 5): steps 2-5 and the validation took 9 s, 2.25 s a step;
    # 90 s are left, 4 % held back -> 38 more steps.
    assert fitted == [43]
    assert host.step == 43 and host.validated[-1] == 43
    assert clock.now <= 100.0  # it ended on its fitted length, not on the wall limit


def test_run_steps_needs_a_callback_to_fit() -> None:
    settings = LoopSettings(10, 5, 1, False, 100.0, fit_to_wall=True)
    with pytest.raises(ValueError, match="on_fit"):
        run_steps(_Host(_Clock()), iter(lambda: {}, None), settings, 0.0)


def test_config_needs_a_wall_limit_to_fit(tmp_path: Path, sots_small: Path) -> None:
    with pytest.raises(ValueError, match="max_wall_seconds"):
        load_config(_config_file(tmp_path, sots_small, fit_steps_to_wall=True))


def test_fitted_length_drives_the_schedule_and_survives_resume(
    tmp_path: Path, sots_small: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The pace of a real run varies; here the fit at the first validation (step 2) always grants two more steps.
    monkeypatch.setattr(loop, "fitted_max_steps", lambda step, *args, **kwargs: step + 2)
    cfg_path = _config_file(tmp_path, sots_small, max_steps=3, fit_steps_to_wall=True, max_wall_seconds=3600)
    trainer = Trainer(load_config(cfg_path))
    trainer.train()
    fitted = trainer.total_steps
    assert trainer.steps_fitted and fitted == 4 and trainer.step == 4
    lr0, lr_min = trainer.cfg.optim.lr_phi, trainer.cfg.optim.lr_min
    # The schedule follows the fitted length, not the config's 3 steps.
    step = trainer.step
    assert trainer.sched_phi.get_last_lr()[0] == pytest.approx(lr0 * cosine_factor(step, fitted, lr0, lr_min))
    run = tmp_path / "run"
    assert yaml.safe_load((run / "config.yaml").read_text())["max_steps"] == fitted

    resumed = Trainer(load_config(cfg_path), resume=True)
    assert resumed.steps_fitted and resumed.total_steps == fitted and resumed.step == trainer.step
    assert resumed.sched_phi.get_last_lr()[0] == pytest.approx(trainer.sched_phi.get_last_lr()[0])
    assert yaml.safe_load((run / "config.yaml").read_text())["max_steps"] == fitted


def test_corun_fitted_length_drives_its_schedule_and_survives_resume(
    tmp_path: Path, sots_small: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.training.test_corun_train import _config_file as corun_config_file
    from training.corun_config import load_corun_config
    from training.corun_train import CorunTrainer

    monkeypatch.setattr(loop, "fitted_max_steps", lambda step, *args, **kwargs: step + 2)
    run = tmp_path / "run"
    path = corun_config_file(run, sots_small, max_steps=3, fit_steps_to_wall=True, max_wall_seconds=3600)
    trainer = CorunTrainer(load_corun_config(path))
    trainer.train()
    assert trainer.steps_fitted and trainer.total_steps == 4 and trainer.step == 4
    lr0, lr_min = trainer.cfg.optim.lr, trainer.cfg.optim.lr_min
    assert trainer.sched.get_last_lr()[0] == pytest.approx(lr0 * cosine_factor(4, 4, lr0, lr_min))
    assert yaml.safe_load((run / "config.yaml").read_text())["max_steps"] == 4

    resumed = CorunTrainer(load_corun_config(path), resume=True)
    assert resumed.steps_fitted and resumed.total_steps == 4 and resumed.step == 4
    assert resumed.sched.get_last_lr()[0] == pytest.approx(trainer.sched.get_last_lr()[0])
    with pytest.raises(ValueError, match="max_wall_seconds"):
        load_corun_config(corun_config_file(tmp_path / "nowall", sots_small, fit_steps_to_wall=True))
