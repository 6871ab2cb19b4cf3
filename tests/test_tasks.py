"""The generator registry: each generator registered where it is written, and the default data kept byte for byte."""

from __future__ import annotations

import hashlib
import random
import shutil
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from reasoning import tasks  # noqa: E402
from reasoning.tasks.core import Draft, generator  # noqa: E402
from stages import paths, seed  # noqa: E402
from stages.common import load_params  # noqa: E402


def test_default_params_write_the_traces_dvc_lock_records(tmp_path):
    """Registration order is draw order: moving or re-weighting a generator would change these bytes."""
    shutil.copytree(ROOT / paths.EVALSETS, tmp_path / paths.EVALSETS)  # every configured set (decontamination)
    seed.run(load_params(path=ROOT / "params.yaml"), tmp_path)
    lock = yaml.safe_load((ROOT / "dvc.lock").read_text())
    recorded = {o["path"]: o["md5"] for o in lock["stages"]["seed"]["outs"]}
    assert hashlib.md5((tmp_path / paths.TRAIN).read_bytes()).hexdigest() == recorded[paths.TRAIN.as_posix()]


def test_every_family_and_category_has_generators_named_after_their_category():
    for name, gen in tasks.GENERATORS.items():
        assert name.startswith(f"{gen.category}.") and gen.category in tasks.CATEGORIES
        assert gen.weight > 0 and set(gen.difficulties) <= set(tasks.DIFFICULTIES)
    assert {g.category for g in tasks.GENERATORS.values()} == set(tasks.CATEGORIES)
    assert {g.family for g in tasks.GENERATORS.values()} == set(tasks.FAMILIES)


def test_a_generator_labels_its_task_and_refuses_a_difficulty_it_lacks():
    task = tasks.generate("percentage.of", "easy", random.Random(3))
    assert (task.generator, task.category, task.difficulty) == ("percentage.of", "percentage", "easy")
    with pytest.raises(ValueError, match="percentage.of has no hard tasks"):
        tasks.generate("percentage.of", "hard", random.Random(3))


@pytest.mark.parametrize("name", ["rate.total", "weather.rain", "rate"])
def test_registering_a_taken_name_or_an_unknown_category_fails(name):
    with pytest.raises(ValueError, match="must be new and be <category>.<kind>"):
        generator(name, weight=1)(lambda rng, difficulty: Draft("p", [], "1"))
    assert "weather.rain" not in tasks.GENERATORS and "rate" not in tasks.GENERATORS
