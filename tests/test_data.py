"""Packing and batching: every example's tokens land intact, loss only on the model's turn, seeded order."""

import numpy as np

from training import chat
from training import tokenizer as bpe
from training.data import BatchStream, Example, encode_trace, pack

RECORD = {
    "prompt": "What is 12 + 30?",
    "steps": [{"i": 1, "type": "compute", "content": "12 + 30: 2+0=2, 1+3=4, so 42"}],
    "final_answer": "42",
}


def tokenizer():
    texts = [chat.render_prompt(RECORD["prompt"]) + chat.render_completion(RECORD["steps"], "42")] * 4
    return bpe.train_bpe(texts, vocab_size=300, min_frequency=1)


def test_loss_mask_covers_exactly_the_model_turn():
    tok = tokenizer()
    ex = encode_trace(tok, RECORD)
    target_text = tok.decode(ex.tokens[ex.target_mask].tolist(), skip_special_tokens=False)
    assert target_text == chat.render_completion(RECORD["steps"], "42")
    prompt_text = tok.decode(ex.tokens[~ex.target_mask].tolist(), skip_special_tokens=False)
    assert prompt_text == chat.render_prompt(RECORD["prompt"])


def _examples(lengths, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for n in lengths:
        tokens = rng.integers(1, 50, n).astype(np.int32)
        mask = np.zeros(n, bool)
        mask[n // 2 :] = True
        out.append(Example(tokens, mask))
    return out


def test_packing_keeps_every_example_whole_and_separate():
    examples = _examples([30, 17, 50, 9, 64, 33, 12, 5])
    rows = pack(examples, seq_len=64)
    assert rows.truncated == 0
    found = []
    for r in range(len(rows)):
        for s in range(1, rows.segments[r].max() + 1):
            sel = rows.segments[r] == s
            np.testing.assert_array_equal(rows.positions[r, sel], np.arange(sel.sum()))
            found.append((rows.inputs[r, sel].tolist(), rows.targets[r, sel].tolist(), rows.weights[r, sel].tolist()))
    expected = [
        (e.tokens[:-1].tolist(), e.tokens[1:].tolist(), e.target_mask[1:].astype(float).tolist()) for e in examples
    ]
    assert sorted(found) == sorted(expected)
    assert rows.weights[rows.segments == 0].sum() == 0  # padding never carries loss
    assert len(rows) < len(examples)  # packing actually shares rows


def test_overlong_examples_are_truncated_and_counted():
    rows = pack(_examples([100, 10]), seq_len=32)
    assert rows.truncated == 1
    assert (rows.segments > 0).sum() == 32 + 9


def test_batches_are_a_pure_function_of_seed_and_step():
    rows = pack(_examples([20] * 50), seq_len=64)
    a, b = BatchStream(rows, 4, seed=7), BatchStream(rows, 4, seed=7)
    for step in (0, 5, 3, 100):
        for key, value in a.batch(step).items():
            np.testing.assert_array_equal(value, b.batch(step)[key])
    assert not np.array_equal(BatchStream(rows, 4, seed=8).indices(0), a.indices(0))
    # one epoch visits every row exactly once
    n = len(rows)
    seen = np.concatenate([a.indices(s) for s in range(n // 4)])
    assert len(set(seen.tolist())) == len(seen)
