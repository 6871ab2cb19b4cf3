"""Stage `report`: reports/metrics.json, the primary eval set's metrics under the set's name.

    python -m stages.report

Every eval set has its own metrics (reports/sets/<set>/metrics.json, one
`evaluate@<set>` stage each); this stage keeps one `primary_score` at the top
for `dvc exp show --sort-by primary_score`, the sweeps and the README, taken
from the set marked `primary: true` in `evaluate.sets`.
"""

from __future__ import annotations

from pathlib import Path

from stages import evalsets, paths
from stages.common import dumps_json, load_params, read_json, run_stage, validate, write_json


def run(params: dict, root: Path = Path(".")) -> dict:
    """Write and return `root`'s reports/metrics.json."""
    primary = evalsets.primary(params, root)
    metrics = {**read_json(root / paths.set_metrics(primary.name), "metrics"), "primary_set": primary.name}
    validate(metrics, "metrics", str(paths.METRICS))
    write_json(root / paths.METRICS, metrics)
    return metrics


def main() -> None:
    print(dumps_json(run(load_params())), end="")


if __name__ == "__main__":
    run_stage(main)
