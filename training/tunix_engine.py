"""Tunix's own SFT trainer, `PeftTrainer`, on our packed batches: the `tunix` engine of the train stage and
the reference our trainer is checked against step by step (tests/test_tunix_engine.py).

Runs in the Tunix environment (.venv-tunix: google-tunix pins older safetensors and transformers than
our lock), started by training/tunix_launch.py from the project root:

    .venv-tunix/bin/python -m training.tunix_engine request.json

Of this project it imports only training.loop (JAX and optax alone) and training/tunix_launch.py's names:
the optimizer and schedule Tunix steps with are the very ones our trainer builds (`make_optimizer`), not a
copy that could drift.

What is Tunix's and what is ours:

- the model is Tunix's Gemma (`ModelConfig.<preset>()`, float32) built from our Hugging Face directory by
  its own `params_safetensors.create_model_from_safe_tensors`; the step, gradients, optimizer update,
  Orbax checkpoints and resume are `PeftTrainer`'s;
- the batches are ours, token for token (the main environment packs and writes them): Tunix's trainer
  refuses packing (`max_seq_token_per_tpu`), so each row's examples are kept apart by the attention mask
  (causal within a segment) and by their positions, which restart at 0 per example, as ours;
- the loss is Tunix's default (`peft_trainer._default_loss_fn`: log-softmax of the logits at the target,
  summed over target tokens, divided by their count + 1e-8) with our explicit targets instead of the
  input shifted by one: a packed row's last token of an example has its own target, not the next
  example's first token. BOS is whatever the tokens hold (ours: the chat template's `<bos>`); nothing is
  prepended.

request.json: {"model_dir", "preset" (ours: gemma3-270m | gemma3-1b), "loop" (training.loop
LoopConfig fields), "batches" (.npz of inputs, targets, weights, positions, segments, each
[steps, rows, seq_len]), "log" (JSON lines, one per step: step, loss, grad_norm, learning_rate,
tokens_per_second),
optional "checkpoint_dir" and "save_every" (Orbax, through PeftTrainer; a rerun resumes from the latest),
optional "export" (a directory: the trained weights written there as model.safetensors under Hugging Face
names; training/tunix_launch.py `load_export` adds the config and reads them as our model),
optional "lora" ({"rank", "alpha", "targets" (ours: q_proj ... down_proj), "rslora", "init" (a .safetensors of
the adapters to start from, under PEFT's names and shapes)}: qwix LoRA on those projections, only the adapters
trained, as PeftTrainer does when the model has `nnx.LoRAParam`s; "export" then receives the trained adapters
as adapter_model.safetensors under PEFT's names and shapes instead of the whole model)}.

LoRA: qwix's `LoraProvider` adds s · B A x beside the frozen base on each targeted einsum or `nnx.Linear`,
s = alpha / rank (rsLoRA's alpha / √rank is passed as qwix's alpha = alpha · √rank). Tunix fuses k_proj and
v_proj into one einsum (`kv_einsum`, [2, K, D, H]), on which plain qwix LoRA would share one A between k and
v; `StackedLoraProvider` gives each of the stacked projections its own A and B, as ours and PEFT do.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from training.loop import LoopConfig, learning_rate_schedule, make_optimizer
from training.peft_names import adapter_name
from training.tunix_launch import BATCH_KEYS, TUNIX_PRESETS

# our (Hugging Face) projection -> (the Tunix Gemma 3 module it is in, under layers.<i>, and its weight; the
# index into a stacked einsum's leading axis, or None)
TUNIX_PROJECTIONS = {
    "q_proj": ("attn.q_einsum", "w", None),
    "k_proj": ("attn.kv_einsum", "w", 0),
    "v_proj": ("attn.kv_einsum", "w", 1),
    "o_proj": ("attn.attn_vec_einsum", "w", None),
    "gate_proj": ("mlp.gate_proj", "kernel", None),
    "up_proj": ("mlp.up_proj", "kernel", None),
    "down_proj": ("mlp.down_proj", "kernel", None),
}


def tunix_model(model_dir: str, preset: str):
    """Tunix's Gemma 3 of `preset`, in float32, with the weights of our Hugging Face directory."""
    from tunix.models.gemma3 import model as model_lib
    from tunix.models.gemma3 import params_safetensors

    config = dataclasses.replace(getattr(model_lib.ModelConfig, TUNIX_PRESETS[preset])(), param_dtype=jnp.float32)
    return params_safetensors.create_model_from_safe_tensors(model_dir, config, dtype=jnp.float32)


def model_inputs(batch: dict) -> dict:
    """A packed batch as the loss reads it: each example attends causally to itself only."""
    seg = batch["segments"]
    t = seg.shape[-1]
    causal = jnp.tril(jnp.ones((t, t), jnp.bool_))
    mask = (seg[:, :, None] == seg[:, None, :]) & causal[None]
    return {
        "inputs": batch["inputs"],
        "targets": batch["targets"],
        "weights": batch["weights"],
        "positions": batch["positions"],
        "attention_mask": mask,
    }


def packed_loss(model, inputs, targets, weights, positions, attention_mask) -> jax.Array:
    """Tunix's default SFT loss (mean negative log-likelihood over target tokens) with explicit targets."""
    logits, _ = model(inputs, positions, None, attention_mask)
    logp = jax.nn.log_softmax(logits.astype(jnp.float32))
    picked = jnp.take_along_axis(logp, targets[..., None].astype(jnp.int32), axis=-1)[..., 0]
    return -jnp.sum(picked * weights) / (jnp.sum(weights) + 1e-8)


def batches(path: str):
    """The steps' batches, read one at a time from the .npz (PeftTrainer skips those already trained)."""
    with np.load(path) as data:
        arrays = {k: data[k] for k in BATCH_KEYS}
    for i in range(len(arrays["inputs"])):
        yield {k: v[i] for k, v in arrays.items()}


def loop_config(fields: dict) -> LoopConfig:
    return LoopConfig(**{k: v for k, v in fields.items() if k in LoopConfig.__dataclass_fields__})


def run(request: dict) -> list[dict]:
    """Train as `request` says; return (and append to request["log"]) one row per step trained here."""
    import orbax.checkpoint as ocp
    from tunix.sft import hooks, peft_trainer

    cfg = loop_config(request["loop"])
    schedule = learning_rate_schedule(cfg)
    model = tunix_model(request["model_dir"], request["preset"])
    if request.get("lora"):
        model = with_lora(model, request["lora"])
    options = None
    if request.get("checkpoint_dir") and request.get("save_every"):
        options = ocp.CheckpointManagerOptions(save_interval_steps=request["save_every"], max_to_keep=1)
    training_config = peft_trainer.TrainingConfig(
        eval_every_n_steps=cfg.steps + 1,
        max_steps=cfg.steps,
        checkpoint_root_directory=request.get("checkpoint_dir") if options else None,
        checkpointing_options=options,
        pbar_description=None,
    )
    trainer = peft_trainer.PeftTrainer(model, make_optimizer(cfg), training_config)
    trainer.with_gen_model_input_fn(model_inputs).with_loss_fn(packed_loss)
    rows: list[dict] = []
    log_path = Path(request["log"])
    with np.load(request["batches"]) as data:
        tokens_per_step = int(np.prod(data["inputs"].shape[1:]))
    clock = [time.perf_counter()]

    class Rows(hooks.TrainingHooks):
        """One row per step as PeftTrainer reports it (its metrics trail the step by one)."""

        def on_train_step_end(self, train_ctx, train_step, train_loss):
            norms = train_ctx.metrics_logger.get_metric_history("", "grad_norm", "train")
            now = time.perf_counter()
            row = {
                "step": int(train_step),
                "loss": float(train_loss),
                "grad_norm": float(norms[-1]),
                "learning_rate": float(schedule(int(train_step) - 1)),
                # every slot of the rows, padding included, as ours counts; the first step's includes compiling
                "tokens_per_second": tokens_per_step / max(now - clock[0], 1e-9),
            }
            clock[0] = now
            rows.append(row)
            with log_path.open("a") as f:
                f.write(json.dumps(row) + "\n")

        def on_train_start(self, train_ctx):
            clock[0] = time.perf_counter()

        def on_train_end(self, train_ctx):
            pass

        def on_train_step_start(self, train_ctx):
            pass

        def on_eval_step_start(self, train_ctx):
            pass

        def on_eval_step_end(self, train_ctx, eval_loss):
            pass

    trainer.with_training_hooks(Rows())
    trainer.train(batches(request["batches"]))
    del trainer  # its optimizer state goes before the export's copy of the weights comes
    gc.collect()
    if request.get("export"):
        from safetensors.numpy import save_file

        Path(request["export"]).mkdir(parents=True, exist_ok=True)
        if request.get("lora"):
            save_file(peft_adapters(model, request["lora"]["targets"]), str(Path(request["export"]) / ADAPTERS))
        else:
            save_file(hf_weights(model), str(Path(request["export"]) / "model.safetensors"))
    return rows


ADAPTERS = "adapter_model.safetensors"  # the export's file with LoRA: PEFT's name for it


def lora_provider(lora: dict):
    """qwix's LoRA on the projections `lora["targets"]` names (ours), each with its own A and B."""
    import qwix
    from qwix._src.core import einsum_info
    from qwix._src.providers import lora as qwix_lora
    from qwix._src.providers import ptq
    from qwix._src.utils import flax_util

    class StackedLoraProvider(qwix.LoraProvider):
        """LoraProvider, but an einsum whose weight stacks projections on a leading axis that the output leads
        with too (kv_einsum's 'BSD,CKDH->CBSKH') gets one adapter per stacked projection: A [C, D, r] and
        B [C, r, K, H], where LoraProvider's would be one A [D, r] shared by all (qwix 0.1.8's private helpers:
        the version .venv-tunix pins)."""

        def einsum(self, einsum_str, *operands, **kwargs):
            if len(operands) != 2:
                return super().einsum(einsum_str, *operands, **kwargs)
            lhs, rhs = operands
            info = einsum_info.EinsumInfo.parse(einsum_str, ndims=(lhs.ndim, rhs.ndim))
            stack = info.rhs[0]
            if stack in info.lhs or not info.out.startswith(stack):
                return super().einsum(einsum_str, *operands, **kwargs)
            res = ptq.PtqProvider.einsum(self, einsum_str, *operands, **kwargs)
            rule, _ = self._get_current_rule_and_op_id("einsum", repeated_call=True)
            if not isinstance(rule, qwix_lora.LoraRule):
                return res
            weight_name = flax_util.find_param(rhs, ptq.WithAux)
            if weight_name is None:
                return res
            r = qwix_lora._find_lora_dim_char(set(info.lhs) | set(info.rhs))
            contract = [i for i, c in enumerate(info.rhs) if i > 0 and c in info.lhs]
            remain = [i for i, c in enumerate(info.rhs) if i > 0 and c not in info.lhs]
            a_str = stack + "".join(info.rhs[i] for i in contract) + r
            b_str = stack + r + "".join(info.rhs[i] for i in remain)
            lora_a, lora_b = qwix_lora._get_or_create_lora_params(
                name=weight_name,
                rule=rule,
                a_shape=(rhs.shape[0], *(rhs.shape[i] for i in contract), rule.rank),
                b_shape=(rhs.shape[0], rule.rank, *(rhs.shape[i] for i in remain)),
                a_sharding_transpose=(0, *contract, None),
                b_sharding_transpose=(0, None, *remain),
            )
            delta = jnp.einsum(f"{info.lhs},{a_str},{b_str}->{info.out}", lhs, lora_a, lora_b, **kwargs)
            return res + delta * (rule.alpha / rule.rank)

    modules = sorted({TUNIX_PROJECTIONS[t][0].replace(".", "/") for t in lora["targets"]})
    rank = lora["rank"]
    # qwix scales by alpha / rank; rsLoRA's alpha / √rank is that scale with alpha · √rank
    alpha = lora["alpha"] * np.sqrt(rank) if lora.get("rslora") else lora["alpha"]
    return StackedLoraProvider(module_path=rf"layers/\d+/({'|'.join(modules)})", rank=rank, alpha=float(alpha))


def _module(model, layer: int, path: str):
    module = model.layers[layer]
    for part in path.split("."):
        module = getattr(module, part)
    return module


def with_lora(model, lora: dict):
    """`model` with qwix LoRA as `lora` says, its adapters set from `lora["init"]` when given.

    Why ours: qwix draws A from its own PRNG with he_uniform (bound √6/√fan_in, and an einsum-shaped A's fan-in
    is not the projection's), ours PEFT's kaiming_uniform(a=√5) (bound 1/√fan_in) from our seed. With B = 0
    both start at the base model whatever A is, but A is the direction B's first gradient takes
    (dL/dB = s · (x A)ᵀ dL/dy): the first step's loss would agree and every adapter after it differ."""
    import qwix
    from flax import nnx

    model = qwix.apply_lora_to_model(model, lora_provider(lora), **model.get_model_input(), rngs=nnx.Rngs(0))
    if lora.get("init"):
        from safetensors.numpy import load_file

        set_adapters(model, load_file(lora["init"]), lora["targets"])
    return model


def _adapter_params(model, targets):
    """(layer, target, lora_a param, lora_b param, stacked index) of every adapter `targets` names."""
    for i in range(len(model.layers)):
        for target in targets:
            path, weight, index = TUNIX_PROJECTIONS[target]
            module = _module(model, i, path)
            yield i, target, getattr(module, weight + "_lora_a"), getattr(module, weight + "_lora_b"), index


def peft_adapters(model, targets) -> dict[str, np.ndarray]:
    """The trained adapters under PEFT's names and shapes (lora_A [r, in], lora_B [out, r]), float32.

    qwix's A holds the projection's contracted axes then r (q, k, v and the MLP: [D, r]; o: [N, H, r]), its B
    r then the output axes (q: [r, N, H], k and v: [r, K, H], o and the MLP: [r, out]); flattening them in
    that order is the order `hf_weights` flattens the base weight's ([N, D, H] -> [N·H, D])."""
    out = {}
    for i, target, a, b, index in _adapter_params(model, targets):
        a, b = np.asarray(a[...], np.float32), np.asarray(b[...], np.float32)
        if index is not None:
            a, b = a[index], b[index]
        rank = a.shape[-1]
        out[adapter_name(i, target, "A")] = np.ascontiguousarray(a.reshape(-1, rank).T)
        out[adapter_name(i, target, "B")] = np.ascontiguousarray(b.reshape(rank, -1).T)
    return out


def set_adapters(model, tensors: dict[str, np.ndarray], targets) -> None:
    """`peft_adapters` backwards: every adapter set from PEFT-shaped `tensors` (each must be there)."""
    for i, target, a, b, index in _adapter_params(model, targets):
        shape_a, shape_b = a[...].shape, b[...].shape
        if index is not None:
            shape_a, shape_b = shape_a[1:], shape_b[1:]
        new_a = tensors[adapter_name(i, target, "A")].T.reshape(shape_a)
        new_b = tensors[adapter_name(i, target, "B")].T.reshape(shape_b)
        if index is not None:
            new_a, new_b = a[...].at[index].set(new_a), b[...].at[index].set(new_b)
        a.value = jnp.asarray(new_a, a[...].dtype)
        b.value = jnp.asarray(new_b, b[...].dtype)


def hf_weights(model) -> dict[str, np.ndarray]:
    """The trained Tunix Gemma 3 as Hugging Face tensors: `params_safetensors`' mapping run backwards."""
    from flax import nnx

    flat = {".".join(str(p) for p in path): np.asarray(v) for path, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}
    cfg = model.config
    out = {"model.embed_tokens.weight": flat["embedder.input_embedding"], "model.norm.weight": flat["final_norm.scale"]}

    def proj(w: np.ndarray) -> np.ndarray:  # [heads, D, H] -> [heads * H, D]
        n, d, h = w.shape
        return w.transpose(0, 2, 1).reshape(n * h, d)

    norms = {
        "pre_attention_norm": "input_layernorm",
        "post_attention_norm": "post_attention_layernorm",
        "pre_ffw_norm": "pre_feedforward_layernorm",
        "post_ffw_norm": "post_feedforward_layernorm",
        "attn._query_norm": "self_attn.q_norm",
        "attn._key_norm": "self_attn.k_norm",
    }
    for i in range(cfg.num_layers):
        ours, theirs = f"model.layers.{i}.", f"layers.{i}."
        if theirs + "attn.qkv_einsum.w" in flat:
            q, k, v = flat[theirs + "attn.qkv_einsum.w"]
        else:
            q = flat[theirs + "attn.q_einsum.w"]
            k, v = flat[theirs + "attn.kv_einsum.w"]
        out[ours + "self_attn.q_proj.weight"] = proj(q)
        out[ours + "self_attn.k_proj.weight"] = proj(k)
        out[ours + "self_attn.v_proj.weight"] = proj(v)
        o = flat[theirs + "attn.attn_vec_einsum.w"]  # [heads, H, D]
        out[ours + "self_attn.o_proj.weight"] = o.reshape(-1, o.shape[-1]).T
        for name in ("gate_proj", "up_proj", "down_proj"):
            out[ours + f"mlp.{name}.weight"] = flat[theirs + f"mlp.{name}.kernel"].T
        for theirs_norm, ours_norm in norms.items():
            out[ours + ours_norm + ".weight"] = flat[theirs + theirs_norm + ".scale"]
    return {k: np.ascontiguousarray(v, np.float32) for k, v in out.items()}


def main(request_path: str) -> None:
    run(json.loads(Path(request_path).read_text()))


if __name__ == "__main__":
    main(*sys.argv[1:])
