"""google-tunix's own DPO and ORPO loss (tunix.sft.dpo.dpo_trainer) on fixed logits.

Runs in the separate Tunix environment (.venv-tunix, `make tunix-env`) and imports nothing of this
project:

    .venv-tunix/bin/python tests/tunix_preference.py request.json out.json

request.json: a list of {"batch": a .npz file, "kwargs": keyword arguments of `dpo_loss_fn` (algorithm,
beta, lambda_orpo, label_smoothing)}. Each .npz holds prompt_ids, prompt_mask [B, P] (left-padded), chosen_ids, chosen_mask, rejected_ids,
rejected_mask [B, T] (right-padded), logits and ref_logits [2B, P + T, V] (chosen rows first, then
rejected: Tunix's order), the logits the policy and the reference "models" return for every position.
out.json: per request, the loss and its aux metrics.

The batch goes through DPOTrainer's own `_prepare_inputs` (concatenation, masks, reference log-probs by
`compute_logps`) and `dpo_loss_fn`, so Tunix's slicing of the logits and its masking are the ones used.
"""

import json
import sys
import types

import jax.numpy as jnp
import numpy as np
from flax import nnx
from tunix.sft.dpo import dpo_trainer


class FixedLogits(nnx.Module):
    """A model that returns the same logits whatever it is given (the loss reads nothing else of it)."""

    def __init__(self, logits: np.ndarray):
        self.logits = nnx.Param(jnp.asarray(logits, jnp.float32))

    def __call__(self, tokens, positions, cache=None, attention_mask=None):
        assert tokens.shape == self.logits.value.shape[:2], (tokens.shape, self.logits.value.shape)
        return self.logits.value, None


FIELDS = ("prompt_ids", "prompt_mask", "chosen_ids", "chosen_mask", "rejected_ids", "rejected_mask")


def main(request_path: str, out_path: str) -> None:
    results = []
    for request in json.loads(open(request_path).read()):
        arrays, kwargs = dict(np.load(request["batch"])), request["kwargs"]
        training_input = dpo_trainer.TrainingInput(**{f: jnp.asarray(arrays[f]) for f in FIELDS})
        with_ref = kwargs["algorithm"] == "dpo"
        trainer = types.SimpleNamespace(  # what `_prepare_inputs` reads of its trainer
            model=FixedLogits(arrays["logits"]),
            ref_model=FixedLogits(arrays["ref_logits"]) if with_ref else None,
            _ref_model_exists=with_ref,
        )
        example = dpo_trainer.DPOTrainer._prepare_inputs(trainer, training_input)
        loss, aux = dpo_trainer.dpo_loss_fn(trainer.model, example, **kwargs)
        results.append({"loss": float(loss), **{k: float(v) for k, v in aux.items()}})
    with open(out_path, "w") as f:
        json.dump(results, f)


if __name__ == "__main__":
    main(*sys.argv[1:])
