"""The KV-cache sampler: greedy decoding equals transformers' `generate`, token for token.

The batch mixes prompt lengths (5, 13 and 20 tokens, left-padded to one bucket)
and decodes far past the sliding window (8), so padding, per-row positions, the
cache and the window all matter. The random weights are scaled so the model
does not just repeat one token; the smallest top-2 logit gap over these runs
(1.6e-4) is ~40x the float32 difference between the two implementations
(~4e-6), so no near-tie can flip a token.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from test_parity import hf_model  # noqa: E402

from training.hf_io import load_pretrained  # noqa: E402
from training.sampler import (  # noqa: E402
    Sampler,
    SamplingConfig,
    bucket_length,
    choose,
    left_pad,
    phase_widths,
    sample_inverse_cdf,
)

PAD, N = 0, 16
PROMPTS = [list(np.random.default_rng(3).integers(3, 128, n)) for n in (5, 13, 20)]
GREEDY = SamplingConfig(max_new_tokens=N)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """case -> (transformers model, our model loaded from its checkpoint), built once per module."""
    built = {}

    def get(case):
        if case not in built:
            ref = hf_model(case, stds=(0.03, 1.0, 0.2))
            directory = tmp_path_factory.mktemp(case)
            ref.save_pretrained(directory)
            built[case] = ref, load_pretrained(directory)
        return built[case]

    return get


def hf_generate(model, prompts, eos: int) -> np.ndarray:
    """Greedy continuations [B, N], `PAD` after a row's end (transformers' own convention too)."""
    length = max(map(len, prompts))
    ids = np.full((len(prompts), length), PAD)
    mask = np.zeros_like(ids)
    for row, prompt in enumerate(prompts):
        ids[row, length - len(prompt) :] = prompt
        mask[row, length - len(prompt) :] = 1
    with torch.no_grad():
        out = model.generate(
            input_ids=torch.tensor(ids),
            attention_mask=torch.tensor(mask),
            do_sample=False,
            use_cache=True,
            max_new_tokens=N,
            pad_token_id=PAD,
            eos_token_id=eos,
        )
    new = out[:, length:].numpy()
    return np.pad(new, ((0, 0), (0, N - new.shape[1])), constant_values=PAD)  # generate stops when all rows end


@pytest.mark.parametrize("case", ["gemma2", "gemma3"])
def test_greedy_matches_transformers_generate(models, case):
    ref_model, ours = models(case)
    eos = 1
    ref = hf_generate(ref_model, PROMPTS, eos)
    assert all(len(set(row)) > 3 for row in ref)  # a varied continuation, not one repeated token
    sampler = Sampler(ours, eos_ids=[eos], pad_id=PAD)
    np.testing.assert_array_equal(sampler(PROMPTS, GREEDY).tokens, ref)
    # decode phases of 3, 6, 12 and 16 new tokens, each over a longer cache: the same tokens
    np.testing.assert_array_equal(sampler(PROMPTS, dataclasses.replace(GREEDY, phase_tokens=3)).tokens, ref)


@pytest.mark.parametrize("case", ["gemma2", "gemma3"])
def test_each_row_stops_at_its_own_end(models, case):
    """Pick as end token one that row 1 first produces at step >= 3: row 1 stops there, each other row
    at its own first occurrence (if any), and transformers agrees."""
    ref_model, ours = models(case)
    free = Sampler(ours, eos_ids=[1], pad_id=PAD)(PROMPTS, GREEDY).tokens  # compiled already: same structure
    row1 = list(free[1])
    step = next(i for i in range(3, N) if row1[i] not in row1[:i])
    eos = int(row1[step])
    expected, lengths = free.copy(), []
    for row in expected:
        hits = np.flatnonzero(row == eos)
        lengths.append(int(hits[0]) if hits.size else N)
        row[lengths[-1] + 1 :] = PAD
    gen = Sampler(ours, eos_ids=[eos], pad_id=PAD)(PROMPTS, GREEDY)
    np.testing.assert_array_equal(gen.tokens, expected)
    np.testing.assert_array_equal(gen.lengths, lengths)
    assert lengths[1] == step and gen.truncated.tolist() == [n == N for n in lengths]
    np.testing.assert_array_equal(hf_generate(ref_model, PROMPTS, eos), expected)


@pytest.fixture(scope="module")
def sampler(models):
    """Sampling is checked on one family; greedy over this model is compiled already (by the tests above)."""
    return Sampler(models("gemma3")[1], eos_ids=[1], pad_id=PAD)


def test_sampling_is_reproducible_and_depends_on_the_key(sampler):
    cfg = SamplingConfig(max_new_tokens=N, temperature=1.0)
    a = sampler(PROMPTS, cfg, jax.random.key(7))
    b = sampler(PROMPTS, cfg, jax.random.key(7))
    c = sampler(PROMPTS, cfg, jax.random.key(8))
    np.testing.assert_array_equal(a.tokens, b.tokens)
    assert not np.array_equal(a.tokens, c.tokens)


def test_rows_split_over_devices_decode_as_one_program(models):
    """Split over the 8 test devices (rows padded to whole shares), the rows get what one program
    on one device gives them, greedy and sampled: each row's key is its own."""
    ours = models("gemma3")[1]
    split, single = (Sampler(ours, eos_ids=[1], pad_id=PAD, devices=d) for d in (None, jax.devices()[:1]))
    assert split.mesh.size == 8 and single.mesh is None
    for cfg in (GREEDY, SamplingConfig(max_new_tokens=N, temperature=1.0)):
        a, b = split(PROMPTS, cfg, jax.random.key(5)), single(PROMPTS, cfg, jax.random.key(5))
        for field in ("tokens", "lengths", "truncated"):
            np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    sampled = split(PROMPTS * 2, SamplingConfig(max_new_tokens=N, temperature=1.0), jax.random.key(5)).tokens
    assert not np.array_equal(sampled[:3], sampled[3:])  # the same prompt in another row draws its own


@pytest.mark.parametrize("devices", [1, 2, 8])
@pytest.mark.parametrize("repeats", [2, 4])
def test_a_prompt_prefilled_once_samples_as_its_repeated_rows(models, devices, repeats):
    """`repeats` rows of each prompt get what the prompts written out that many times get, greedy and
    sampled, on one device and split over 2 and 8 (shares that hold whole groups, parts of one, and
    padding): the shared prefill is a copy, and each row still draws with its own key."""
    sampler = Sampler(models("gemma3")[1], eos_ids=[1], pad_id=PAD, devices=jax.devices()[:devices])
    written_out = [p for p in PROMPTS for _ in range(repeats)]
    for cfg in (GREEDY, SamplingConfig(max_new_tokens=N, temperature=1.0)):
        a = sampler(PROMPTS, cfg, jax.random.key(5), repeats=repeats)
        b = sampler(written_out, cfg, jax.random.key(5))
        for field in ("tokens", "lengths", "truncated"):
            np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    assert not np.array_equal(a.tokens[0], a.tokens[1])  # a group's rows draw their own completions


def wide_model(vocab=None, softcap=None):
    """A two-layer Gemma at the wide vocabulary (or `vocab`), small enough to decode in seconds."""
    from flax import nnx

    from training import config as configs
    from training import cpu_tuning
    from training.model import Gemma

    cfg = configs.tiny(
        vocab or cpu_tuning.WIDE_VOCAB,
        hidden_size=32,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
    )
    return Gemma(dataclasses.replace(cfg, final_logit_softcapping=softcap), rngs=nnx.Rngs(0))


def test_finished_rows_are_dropped_from_a_wide_vocabulary_decode(monkeypatch):
    """At a wide vocabulary a device's rows are halved as they finish (16, 8, 4 here), the running
    ones gathered first: every row gets the tokens, lengths and padding it gets when all 16 decode to
    the end (each row draws with its own key), and rows that end early are padded after their end."""
    import training.sampler as sampler_module
    from training import cpu_tuning

    model = wide_model()
    cfg = model.config
    assert cpu_tuning.compaction_sizes(16, cfg.vocab_size) == [16, 8, 4]
    assert cpu_tuning.compaction_sizes(16, 1024) == [16]  # the tiny default decodes as it always did
    eos = list(range(2, cfg.vocab_size, 16))  # one id in 16 ends a row: rows end at many different steps
    prompts = [list(np.random.default_rng(row).integers(3, 500, 3 + row % 5)) for row in range(16)]
    runs = []
    for floor in (cpu_tuning.MIN_COMPACT_ROWS, 10**6):  # compacting, then one level throughout
        monkeypatch.setattr(cpu_tuning, "MIN_COMPACT_ROWS", floor)
        sampler_module._generate.clear_cache()
        sampler = Sampler(model, eos_ids=eos, pad_id=PAD, devices=jax.devices()[:1])
        runs.append(
            [
                sampler(prompts, c, jax.random.key(4))
                for c in (SamplingConfig(24, temperature=1.0), SamplingConfig(24, temperature=0.7, top_k=50))
            ]
        )
    sampler_module._generate.clear_cache()
    for compacted, whole in zip(*runs):
        for field in ("tokens", "lengths", "truncated"):
            np.testing.assert_array_equal(getattr(compacted, field), getattr(whole, field))
        assert len(set(compacted.lengths.tolist())) > 4 and (compacted.lengths < 12).sum() >= 8  # half end by half-way
        for row, n in enumerate(compacted.lengths):
            assert (compacted.tokens[row, n + 1 :] == PAD).all()


def test_the_decode_loop_gathers_running_rows_and_writes_each_to_its_own_place():
    """`decode_levels` without a model: row r picks 100 + 10·r + i at step i and ends at step END[r]. Over
    levels of 8, 4 and 2 rows and phases of 2, 4 and 8 tokens, every row's tokens land in its own row of
    `tokens` up to its end, pad after; each phase grows the cache first, and the loop stops once all end."""
    from training.sampler import DecodeState, compact, decode_levels

    end = jnp.asarray([7, 1, 3, 2, 8, 5, 1, 4])  # the step at which each row picks its last token
    grown = []

    def step(state):
        nxt = jnp.where(state.done, PAD, 100 + 10 * state.rows + state.step)
        tokens = state.tokens.at[state.rows, state.step].set(nxt)
        done = state.done | (state.step >= end[state.rows])
        return state._replace(step=state.step + 1, last=nxt, done=done, tokens=tokens)

    def grow(cache, width):
        grown.append(width)
        return jnp.pad(cache, ((0, 0), (0, width - cache.shape[1])))

    rows = jnp.arange(8)
    start = DecodeState(
        step=jnp.int32(1),
        last=100 + 10 * rows,
        positions=rows,
        done=jnp.zeros(8, bool),
        rows=rows,
        keys=rows,
        tokens=jnp.zeros((8, 9), jnp.int32).at[:, 0].set(100 + 10 * rows),
        cache=jnp.zeros((8, 1)),
    )
    out = decode_levels(step, start, widths=[2, 4, 8], sizes=[8, 4, 2], max_new_tokens=9, grow=grow)
    expected = np.full((8, 9), PAD)
    for r, e in enumerate(end.tolist()):
        expected[r, : e + 1] = 100 + 10 * r + np.arange(e + 1)
    np.testing.assert_array_equal(out.tokens, expected)
    assert grown == [2, 4, 8, 8, 8] and out.cache.shape == (2, 8) and bool(out.done.all())
    assert int(out.step) == 9  # row 4 ends at step 8, the last the budget has
    # a compaction keeps the running rows first, in order, and everything of theirs with them
    kept = compact(start._replace(done=jnp.asarray([1, 0, 1, 0, 0, 1, 1, 1], bool)), 4)
    assert kept.rows.tolist() == [1, 3, 4, 0] and kept.keys.tolist() == [1, 3, 4, 0] and kept.cache.shape == (4, 1)
    assert kept.tokens.shape == (8, 9)  # every row's tokens stay


def test_top_k_1_is_greedy(sampler):
    greedy = sampler(PROMPTS, GREEDY).tokens
    top1 = sampler(PROMPTS, SamplingConfig(max_new_tokens=N, temperature=1.0, top_k=1), jax.random.key(3)).tokens
    np.testing.assert_array_equal(top1, greedy)


def test_choose_keeps_only_the_top_k_and_top_p_sets():
    probs = jnp.asarray([[0.5, 0.3, 0.15, 0.05]])
    logits = jnp.log(probs)
    keys = jax.random.split(jax.random.key(0), 2000)

    def draws(cfg):
        return np.asarray(jax.vmap(lambda k: choose(logits[0], k, cfg))(keys))

    assert set(draws(SamplingConfig(1, temperature=1.0, top_p=0.7)).tolist()) == {0, 1}  # 0.5 < 0.7 <= 0.8
    assert set(draws(SamplingConfig(1, temperature=1.0, top_k=3)).tolist()) == {0, 1, 2}
    full = draws(SamplingConfig(1, temperature=1.0))
    assert set(full.tolist()) == {0, 1, 2, 3}
    assert abs((full == 0).mean() - 0.5) < 0.05


@pytest.mark.parametrize("vocab", [4, 1000, 4099])
def test_inverse_cdf_draws_follow_the_softmax(vocab):
    """One uniform a row draws each token at its softmax probability, in whichever block of the running
    sums it lies (a vocabulary that does not fill its last block included), and never a token of zero mass."""
    weights = np.zeros(vocab)
    middle = np.random.default_rng(0).choice(np.arange(1, vocab - 1), 2, replace=False)
    picked = np.asarray([0, vocab - 1, *middle])  # the first and last blocks among them
    weights[picked] = [0.4, 0.3, 0.2, 0.1]
    logits = jnp.log(jnp.asarray(weights, jnp.float32))  # -inf where the mass is zero
    keys = jax.random.split(jax.random.key(1), 20_000)
    draws = np.asarray(jax.jit(jax.vmap(lambda k: sample_inverse_cdf(logits, k)))(keys))
    assert set(draws.tolist()) == set(picked.tolist())
    for token, p in zip(picked, [0.4, 0.3, 0.2, 0.1]):
        assert abs((draws == token).mean() - p) < 0.015, (token, p)


def test_decode_phases_double_up_to_the_budget():
    assert phase_widths(256, 64) == [64, 128, 256]
    assert phase_widths(300, 64) == [64, 128, 256, 300]
    assert phase_widths(16, 64) == [16]


def test_left_pad_and_buckets():
    assert [bucket_length(n) for n in (1, 16, 17, 33)] == [16, 16, 32, 64]
    tokens, positions, segments = left_pad([[5, 6], [7, 8, 9]], 4, PAD)
    np.testing.assert_array_equal(tokens, [[0, 0, 5, 6], [0, 7, 8, 9]])
    np.testing.assert_array_equal(positions, [[0, 0, 0, 1], [0, 0, 1, 2]])
    np.testing.assert_array_equal(segments, [[0, 0, 1, 1], [0, 1, 1, 1]])
    with pytest.raises(ValueError, match="prompt 0"):
        left_pad([[]], 4, PAD)


def test_a_decode_step_copies_no_kv_cache():
    """XLA:CPU as the stages set it up (`configure_host_cpu`) keeps the decode loop's KV-cache writes in
    place: no loop body copies a cache (without the setting, or with a product reading the written cache,
    every layer's keys and values were copied twice a step). A fresh process: XLA reads its flags once."""
    import subprocess
    import sys

    script = """
import dataclasses, re
import jax, jax.numpy as jnp, numpy as np
from flax import nnx
from training import config as configs, cpu_tuning, sampler
from training.model import Gemma
cpu_tuning.configure_host_cpu(1)
real = configs.gemma3_270m()
cfg = dataclasses.replace(real, vocab_size=cpu_tuning.WIDE_VOCAB, num_hidden_layers=2, layer_types=real.layer_types[:2])
graphdef, state = nnx.split(Gemma(cfg, rngs=nnx.Rngs(0)))
tokens, positions, segments = sampler.left_pad([[1] * 20] * 8, 32, 0)
hlo = sampler._generate.lower(graphdef, state, tokens, positions, segments, np.arange(8, dtype=np.int32),
    jax.random.key(0), jnp.asarray([1], jnp.int32), jnp.int32(0), cfg=sampler.SamplingConfig(40, temperature=1.0),
    cache_dtype="float32", head_dtype=None, repeats=1).compile().as_text()
bodies = re.findall(r"while\\(.*?body=(%[\\w.\\-]+)", hlo)
copies = 0
for name in bodies:
    start = hlo.index("\\n" + name + " ")
    copies += len(re.findall(r"= f32\\[\\d+,\\d+,\\d+,\\d+\\]\\{[\\d,]+\\} copy\\(", hlo[start : hlo.index("\\n}\\n", start)]))
print(len(bodies), copies)
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout.split()
    bodies, copies = map(int, out[-2:])
    assert bodies >= 2 and copies == 0  # (two loops: the batch of 8, then its 4 still running)


@pytest.mark.parametrize("softcap", [None, 30.0])
def test_the_greedy_argmax_head_picks_the_argmax_of_the_whole_logits(softcap):
    """`argmax_head` (a wide vocabulary, many rows) gives each row the id argmax gives over `lm_head`'s
    logits, ties to the lowest id (across its blocks too); a vocabulary id when logits are NaN; and it is
    not used below its row count or at a small vocabulary."""
    from training import cpu_tuning

    model = wide_model(softcap=softcap)
    rows, block = cpu_tuning.MIN_ARGMAX_HEAD_ROWS, cpu_tuning.ARGMAX_BLOCK
    table = np.asarray(model.embed_tokens[...]).copy()
    table[3 * block + 5] = table[7]  # a copy in a later block: the two tie, the lower id wins
    model.embed_tokens[...] = jnp.asarray(table)
    hidden = np.random.default_rng(0).standard_normal((rows, 32)).astype(np.float32)
    hidden[1] = 0.0  # every logit 0: the lowest id
    hidden[2] = table[7] * 50  # id 7 and its copy score highest

    def both(model, hidden):
        head, greedy = cpu_tuning.lm_head(model, rows, None), cpu_tuning.argmax_head(model, rows, None)
        want = np.asarray(jnp.argmax(head(jnp.asarray(hidden)), axis=0))
        return np.asarray(jax.jit(greedy)(jnp.asarray(hidden))), want

    got, want = both(model, hidden)
    np.testing.assert_array_equal(got, want)
    assert got[1] == 0 and got[2] == 7 and len(set(got.tolist())) > rows // 4  # the check can fail
    table[300, 0] = np.nan  # id 300's logit is NaN in every row; and every logit of row 4
    model.embed_tokens[...] = jnp.asarray(table)
    hidden[4, 0] = np.nan
    got, _ = both(model, hidden)
    assert ((got >= 0) & (got < model.config.vocab_size)).all()
    assert cpu_tuning.argmax_head(model, rows - 1, None) is None
    assert cpu_tuning.argmax_head(wide_model(vocab=1024), rows, None) is None


def test_greedy_decoding_at_a_wide_vocabulary_is_the_same_with_and_without_the_argmax_head(monkeypatch):
    """The sampler's greedy tokens, lengths and ends at a wide vocabulary are the same whether each step's
    token comes from `argmax_head` or from the argmax of the whole logits, through the compaction levels
    (rows end at many steps, so the levels below the argmax head's row count decode too)."""
    import training.sampler as sampler_module
    from training import cpu_tuning

    model = wide_model()
    rows = cpu_tuning.MIN_ARGMAX_HEAD_ROWS
    prompts = [list(np.random.default_rng(row).integers(3, 5000, 3 + row % 7)) for row in range(rows)]
    # end tokens the rows pick at many different steps: greedy rows of random weights repeat themselves
    free = Sampler(model, eos_ids=[model.config.vocab_size], pad_id=PAD, devices=jax.devices()[:1])
    tokens = free(prompts, SamplingConfig(24)).tokens
    eos = sorted({int(tokens[row, 2 + row % 16]) for row in range(0, rows, 3)})
    runs = []
    for threshold in (rows, 10**6):  # the argmax head at the batch's own level, then nowhere
        monkeypatch.setattr(cpu_tuning, "MIN_ARGMAX_HEAD_ROWS", threshold)
        sampler_module._generate.clear_cache()
        sampler = Sampler(model, eos_ids=eos, pad_id=PAD, devices=jax.devices()[:1])
        runs.append(sampler(prompts, SamplingConfig(24)))
    sampler_module._generate.clear_cache()
    with_head, whole = runs
    for field in ("tokens", "lengths", "truncated"):
        np.testing.assert_array_equal(getattr(with_head, field), getattr(whole, field))
    assert len(set(whole.lengths.tolist())) > 3  # rows end at several steps: the levels below run too
