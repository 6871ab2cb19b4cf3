"""Hyperparameter sweeps over the DVC pipeline; every trial is a real DVC experiment.

`python -m sweeps.ray_sweep --space sweeps/lr_warmup.yaml` searches a space
(YAML, see `sweeps.space`) with Ray Tune. Each trial runs `dvc exp run` in a
private clone of the repo that shares its DVC cache (`sweeps.experiment`),
streams the train loss to Tune so ASHA can stop bad trials early, and pushes
the finished experiment back, so `dvc exp show` in the repo compares them and
`dvc exp apply <name>` promotes one. Nothing here imports JAX.
"""
