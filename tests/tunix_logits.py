"""Logits of a Hugging Face Gemma 2 / Gemma 3 directory as google-tunix's own loaders and models compute them.

Runs in the separate Tunix environment (.venv-tunix, `make tunix-env`: google-tunix
pins safetensors < 0.8 and older transformers/tokenizers than the project's lock),
so it imports nothing of this project:

    .venv-tunix/bin/python tests/tunix_logits.py request.json out.npy

request.json: {"dir", "family" (2 | 3), "config" (the tunix ModelConfig fields, attention
types as "local"/"global") or "preset" (a ModelConfig constructor such as "gemma3_270m"),
"tokens" [[int]]}. Rows are unpadded; positions 0..T-1.
"""

import dataclasses
import json
import sys

import jax
import jax.numpy as jnp
import numpy as np


def main(request_path: str, out_path: str) -> None:
    request = json.loads(open(request_path).read())
    fields = dict(request.get("config") or {})
    if request["family"] == 3:
        from tunix.models.gemma3 import model as model_lib
        from tunix.models.gemma3 import params_safetensors
    else:
        from tunix.models.gemma import model as model_lib
        from tunix.models.gemma import params_safetensors

        kinds = {"local": model_lib.AttentionType.LOCAL_SLIDING, "global": model_lib.AttentionType.GLOBAL}
        fields["attention_types"] = tuple(kinds[k] for k in fields["attention_types"])
    if request["family"] == 3:
        fields["param_dtype"] = jnp.float32
    if "preset" in request:  # Tunix's own config of a published shape
        config = getattr(model_lib.ModelConfig, request["preset"])()
        if request["family"] == 3:
            config = dataclasses.replace(config, param_dtype=jnp.float32)
    else:
        config = model_lib.ModelConfig(**fields)
    model = params_safetensors.create_model_from_safe_tensors(request["dir"], config, dtype=jnp.float32)
    tokens = jnp.asarray(request["tokens"], jnp.int32)
    b, t = tokens.shape
    positions = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t))
    causal = jnp.broadcast_to(jnp.tril(jnp.ones((t, t), jnp.bool_)), (b, t, t))
    logits, _ = model(tokens, positions, None, causal)
    np.save(out_path, np.asarray(jax.device_get(logits), np.float32))


if __name__ == "__main__":
    main(*sys.argv[1:])
