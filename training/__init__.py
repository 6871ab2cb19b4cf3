"""tunix-rt's JAX/Flax library: the Gemma model family, HF import/export, tokenizer and chat
rendering, data packing, the SFT trainer and the KV-cache sampler."""
