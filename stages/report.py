"""Stage `report`: reports/metrics.json, the primary eval set's metrics under the set's name.

    python -m stages.report

Every eval set has its own metrics (reports/sets/<set>/metrics.json, one
`evaluate@<set>` stage each, under the set's name: `dvc exp show` columns
`tunix.primary_score`, `gsm8k_test.primary_score`, …); this stage keeps one
plain `primary_score` for `dvc exp show --sort-by primary_score`, the sweeps
and the README, taken from the set marked `primary: true` in `evaluate.sets`.
"""

from __future__ import annotations

from pathlib import Path

from stages import evalsets, paths
from stages.common import dumps_json, load_params, run_stage, validate, write_json


def run(params: dict, root: Path = Path(".")) -> dict:
    """Write and return `root`'s reports/metrics.json."""
    primary = evalsets.primary(params, root)
    metrics = {**evalsets.read_metrics(primary.name, root), "primary_set": primary.name}
    validate(metrics, "metrics", str(paths.METRICS))
    write_json(root / paths.METRICS, metrics)
    return metrics


def main() -> None:
    print(dumps_json(run(load_params())), end="")


if __name__ == "__main__":
    run_stage(main)
