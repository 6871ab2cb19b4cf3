"""A sweep's search space: a YAML file, validated against params.yaml before anything runs.

    # sweeps/lr_warmup.yaml
    search: {algorithm: random, num_samples: 8, seed: 0}     # optional; random (default) | grid
    scheduler:                                               # optional; early stopping on train loss
      asha: {grace_period: 60, reduction_factor: 2, max_t: 450}
    train.learning_rate: {loguniform: [3.0e-4, 1.0e-2]}
    train.warmup_steps: {choice: [20, 60, 120]}

Every other top-level key is a param path of params.yaml holding exactly one of
`{choice: [...]}`, `{grid: [...]}`, `{uniform: [lo, hi]}`, `{loguniform: [lo, hi]}`.
`grid` values are all tried (with `random`, once per sample, as Ray Tune does);
`choice`, `uniform` and `loguniform` are sampled. On an integer param, `uniform`
and `loguniform` sample integers in [lo, hi]. Floats sampled from a range are
rounded to 4 significant digits. With `algorithm: grid` every param must be a
finite list (`choice` or `grid`) and each combination runs once.

Each listed value and range bound is checked against schemas/params.schema.json,
so `learning_rate: {choice: [0.01, 5]}` fails here, naming file, line and key,
not minutes later inside a trial.
"""

from __future__ import annotations

import copy
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from stages.common import ParamsLoader, field_path, schema_error, shorten, yaml_line

KINDS = ("choice", "grid", "uniform", "loguniform")
ALGORITHMS = ("random", "grid")
RESERVED = ("search", "scheduler")
DEFAULT_RANDOM_SAMPLES = 8


class SweepError(Exception):
    """A mistake in the sweep's inputs; the message is one line naming file, line and key."""


class _Loader(yaml.SafeLoader):
    """YAML 1.1 safe loader that also reads `1e-4` (no dot) as a float, as YAML 1.2 does."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


@dataclass
class Dim:
    """One searched param: `kind` in KINDS, `values` (choice/grid) or `low`/`high` (ranges)."""

    path: str
    kind: str
    values: list[Any] = field(default_factory=list)
    low: float | None = None
    high: float | None = None
    integer: bool = False  # the param is an integer: ranges sample integers

    def describe(self) -> str:
        if self.kind in ("choice", "grid"):
            return f"{self.kind} {self.values}"
        return f"{self.kind} [{self.low}, {self.high}]" + (" (integers)" if self.integer else "")


@dataclass
class Asha:
    grace_period: int
    reduction_factor: float
    max_t: int


@dataclass
class Space:
    path: Path
    dims: list[Dim]
    algorithm: str = "random"
    num_samples: int = DEFAULT_RANDOM_SAMPLES
    seed: int | None = None
    asha: Asha | None = None
    steps: int = 0  # the most train steps any trial runs (ASHA's default max_t)

    def n_trials(self) -> int:
        grid = math.prod(len(d.values) for d in self.dims if d.kind == "grid")
        return grid * self.num_samples

    def keys(self) -> list[str]:
        return [d.path for d in self.dims]


def get_path(params: dict, path: str) -> Any:
    node: Any = params
    for part in path.split("."):
        node = node[part]
    return node


def set_path(params: dict, path: str, value: Any) -> None:
    parts = path.split(".")
    node = params
    for part in parts[:-1]:
        node = node[part]
    node[parts[-1]] = value


def normalize(value: Any) -> Any:
    """A sampled value as it is written to params.yaml: numpy scalars to Python, floats to 4 significant digits."""
    if hasattr(value, "item") and not isinstance(value, (list, dict, str)):
        value = value.item()
    if isinstance(value, float) and math.isfinite(value):
        value = float(f"{value:.4g}")
    return value


def fmt(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4g}"
    return str(value)


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def load_space(space_path: str | Path, params_path: str | Path = "params.yaml") -> Space:
    """Parse and validate a search space against the params it will change. Raises SweepError."""
    space_path = Path(space_path)
    params_path = Path(params_path)
    try:
        text = space_path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SweepError(f"{space_path}: file not found") from None
    try:
        doc = yaml.load(text, Loader=_Loader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{space_path}:{mark.line + 1}" if mark is not None else str(space_path)
        raise SweepError(f"{where}: not valid YAML: {getattr(err, 'problem', None) or err}") from None
    try:
        params = yaml.load(params_path.read_text(encoding="utf-8"), Loader=ParamsLoader)
    except FileNotFoundError:
        raise SweepError(f"{params_path}: file not found (run the sweep from the repo root)") from None

    def fail(keys: list[Any], message: str) -> SweepError:
        return SweepError(f"{space_path}:{yaml_line(text, keys)}: {field_path(keys)}: {message}")

    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise SweepError(
            f"{space_path}:1: expected a mapping of param paths to {{choice|grid|uniform|loguniform: ...}}"
        )

    dims = [_parse_dim(key, spec, params, fail) for key, spec in doc.items() if key not in RESERVED]
    if not dims:
        raise SweepError(
            f"{space_path}: empty search space: no param to search "
            "(add e.g. `train.learning_rate: {loguniform: [1.0e-4, 1.0e-2]}`)"
        )

    space = Space(path=space_path, dims=dims)
    _parse_search(doc.get("search"), space, fail)
    space.steps = _max_steps(space, params)
    _parse_scheduler(doc.get("scheduler"), space, fail)
    return space


def _parse_dim(key: Any, spec: Any, params: dict, fail) -> Dim:
    path = str(key)
    try:
        current = get_path(params, path)
    except (KeyError, TypeError):
        sections = ", ".join(params) if isinstance(params, dict) else ""
        raise fail(
            [key], f"not a param in params.yaml (param paths look like train.learning_rate; sections: {sections})"
        ) from None
    if isinstance(current, dict):
        raise fail([key], f"is a section of params.yaml, not a param (one of: {', '.join(current)})")
    if not isinstance(spec, dict) or len(spec) != 1 or next(iter(spec)) not in KINDS:
        raise fail(
            [key], "expected exactly one of {choice: [...]}, {grid: [...]}, {uniform: [lo, hi]}, {loguniform: [lo, hi]}"
        )
    kind, arg = next(iter(spec.items()))
    integer = isinstance(current, int) and not isinstance(current, bool)
    dim = Dim(path=path, kind=kind, integer=integer)
    if kind in ("choice", "grid"):
        if not isinstance(arg, list) or not arg:
            raise fail([key, kind], "expected a non-empty list of values")
        dim.values = list(arg)
        checks = list(enumerate(arg))
    else:
        if not isinstance(arg, list) or len(arg) != 2 or not all(_is_number(x) for x in arg):
            raise fail([key, kind], "expected [low, high], two numbers")
        low, high = arg
        if not low < high:
            raise fail([key, kind], f"low {low} must be less than high {high}")
        if kind == "loguniform" and low <= 0:
            raise fail([key, kind], f"low {low} must be positive for loguniform")
        if integer and not all(float(x).is_integer() for x in arg):
            raise fail([key, kind], f"{path} is an integer param: bounds must be integers")
        dim.low, dim.high = (int(low), int(high)) if integer else (float(low), float(high))
        checks = [(0, dim.low), (1, dim.high)]
    for index, value in checks:
        trial_params = copy.deepcopy(params)
        set_path(trial_params, path, value)
        err = schema_error(trial_params, "params")
        if err is not None:
            raise fail(
                [key, kind, index], f"{shorten(err.message)} (schema of params.yaml {field_path(err.absolute_path)})"
            )
    return dim


def _parse_search(search: Any, space: Space, fail) -> None:
    if search is None:
        search = {}
    if not isinstance(search, dict):
        raise fail(["search"], "expected a mapping {algorithm: random|grid, num_samples: N, seed: S}")
    unknown = set(search) - {"algorithm", "num_samples", "seed"}
    if unknown:
        raise fail(["search", sorted(unknown)[0]], "unknown key (expected algorithm, num_samples, seed)")
    algorithm = search.get("algorithm", "random")
    if algorithm not in ALGORITHMS:
        raise fail(["search", "algorithm"], f"{algorithm!r} is not one of {', '.join(ALGORITHMS)}")
    space.algorithm = algorithm
    if "seed" in search:
        if not isinstance(search["seed"], int) or isinstance(search["seed"], bool):
            raise fail(["search", "seed"], "expected an integer")
        space.seed = search["seed"]
    if algorithm == "grid":
        for dim in space.dims:
            if dim.kind in ("uniform", "loguniform"):
                raise fail([dim.path], f"algorithm grid needs a finite list of values, not {dim.kind}")
            dim.kind = "grid"
        if search.get("num_samples", 1) != 1:
            raise fail(["search", "num_samples"], "must be 1 with algorithm grid: the same params give the same result")
        space.num_samples = 1
    else:
        n = search.get("num_samples", DEFAULT_RANDOM_SAMPLES)
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise fail(["search", "num_samples"], f"{n!r} is not a positive integer")
        space.num_samples = n


def _max_steps(space: Space, params: dict) -> int:
    for dim in space.dims:
        if dim.path == "train.steps":
            return int(max(dim.values) if dim.values else dim.high)
    return int(params["train"]["steps"])


def _parse_scheduler(scheduler: Any, space: Space, fail) -> None:
    if scheduler is None:
        return
    if not isinstance(scheduler, dict) or set(scheduler) != {"asha"}:
        raise fail(["scheduler"], "expected {asha: {grace_period: N, reduction_factor: R, max_t: T}}")
    asha = scheduler["asha"] or {}
    if not isinstance(asha, dict):
        raise fail(["scheduler", "asha"], "expected a mapping {grace_period, reduction_factor, max_t}")
    unknown = set(asha) - {"grace_period", "reduction_factor", "max_t"}
    if unknown:
        raise fail(
            ["scheduler", "asha", sorted(unknown)[0]], "unknown key (expected grace_period, reduction_factor, max_t)"
        )
    grace = asha.get("grace_period", 1)
    rf = asha.get("reduction_factor", 2)
    max_t = asha.get("max_t", space.steps)
    for name, value, ok in (
        ("grace_period", grace, isinstance(grace, int) and not isinstance(grace, bool) and grace >= 1),
        ("reduction_factor", rf, _is_number(rf) and rf > 1),
        ("max_t", max_t, isinstance(max_t, int) and not isinstance(max_t, bool) and max_t >= 1),
    ):
        if not ok:
            raise fail(
                ["scheduler", "asha", name],
                f"{value!r} is not valid (grace_period and max_t: integers >= 1 in train steps; reduction_factor: > 1)",
            )
    if grace > max_t:
        raise fail(["scheduler", "asha", "grace_period"], f"{grace} is more than max_t {max_t}")
    space.asha = Asha(grace_period=grace, reduction_factor=float(rf), max_t=max_t)


def ray_param_space(space: Space) -> dict[str, Any]:
    """The space as Ray Tune domains, keyed by param path."""
    from ray import tune

    out: dict[str, Any] = {}
    for dim in space.dims:
        if dim.kind == "grid":
            out[dim.path] = tune.grid_search(dim.values)
        elif dim.kind == "choice":
            out[dim.path] = tune.choice(dim.values)
        elif dim.kind == "uniform":
            out[dim.path] = tune.randint(dim.low, dim.high + 1) if dim.integer else tune.uniform(dim.low, dim.high)
        else:
            out[dim.path] = (
                tune.lograndint(dim.low, dim.high + 1) if dim.integer else tune.loguniform(dim.low, dim.high)
            )
    return out
