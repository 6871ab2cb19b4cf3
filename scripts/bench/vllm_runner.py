"""vLLM's side of the `generate` benchmark, run by `.venv-vllm`'s Python (vllm and the stdlib only).

    .venv-vllm/bin/python scripts/bench/vllm_runner.py < request.json

The request (JSON on stdin): `model` (a Hugging Face directory), `dtype`, `prompts` (token ids, one list
a row: the widest batch's), `batches`, `new_tokens`, `repeats`. Each batch's first rows are sent as one
`generate` call of greedy decoding that runs every row to `new_tokens` (end of sequence ignored); the
call is timed whole (prefill included, as ours is) after one untimed call, `repeats` times. The last line
printed is the result: per batch the median new tokens/s and the first row's new token ids.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import sys
import time


def peak_rss_mib() -> float:
    """This process's (the engine's model and KV cache live in a child process, not counted)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    request = json.load(sys.stdin)
    # The CPU build's defaults: a KV cache sized for serving (4 GiB), usage reports, and one core kept for
    # its scheduler process (half of a 2-core machine); here every core computes, as ours do.
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
    os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from vllm import LLM, SamplingParams

    prompts, new_tokens = request["prompts"], request["new_tokens"]
    llm = LLM(
        model=request["model"],
        dtype=request["dtype"],
        seed=0,
        max_model_len=len(prompts[0]) + new_tokens,
        max_num_seqs=max(request["batches"]),
        max_num_batched_tokens=max(request["batches"]) * (len(prompts[0]) + new_tokens),  # one prefill a batch
        enforce_eager=True,  # no torch.compile: its minutes of compiling are not what a call costs
    )
    greedy = SamplingParams(temperature=0.0, max_tokens=new_tokens, min_tokens=new_tokens, ignore_eos=True)
    results = {}
    for batch in request["batches"]:
        rows = [{"prompt_token_ids": ids} for ids in prompts[:batch]]
        generate = lambda rows=rows: llm.generate(rows, greedy, use_tqdm=False)
        generate()
        times, outputs = [], None
        for _ in range(request["repeats"]):
            start = time.perf_counter()
            outputs = generate()
            times.append(time.perf_counter() - start)
        made = [len(o.outputs[0].token_ids) for o in outputs]
        if made != [new_tokens] * batch:
            raise SystemExit(f"vllm_runner: asked {new_tokens} new tokens a row, got {made}")
        results[str(batch)] = {
            "new_tokens_per_s": batch * new_tokens / statistics.median(times),
            "first_row_tokens": list(outputs[0].outputs[0].token_ids),
        }
    print(json.dumps({"dtype": request["dtype"], "batches": results, "peak_rss_mib": peak_rss_mib()}))


if __name__ == "__main__":
    main()
