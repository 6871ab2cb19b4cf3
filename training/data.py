"""Tokenised SFT examples packed into fixed-length rows, served in a seeded order.

Each example contributes `len(tokens) - 1` (input, target) pairs; several
examples share a row, told apart by segment ids (0 = padding) with positions
restarting at 0, so attention and RoPE see each one as if it were alone. The
batch for step `s` is a pure function of (rows, seed, s): resuming at a step
needs no other state.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping

import numpy as np
from tokenizers import Tokenizer

from training import chat


@dataclasses.dataclass(frozen=True)
class Example:
    tokens: np.ndarray  # int32 [n]
    target_mask: np.ndarray  # bool [n]: tokens of the model's turn (the loss targets)


def encode_trace(tok: Tokenizer, record: Mapping) -> Example:
    prompt = tok.encode(chat.render_prompt(record["prompt"]), add_special_tokens=False).ids
    completion = tok.encode(
        chat.render_completion(record["steps"], record["final_answer"]), add_special_tokens=False
    ).ids
    tokens = np.asarray(prompt + completion, np.int32)
    mask = np.concatenate([np.zeros(len(prompt), bool), np.ones(len(completion), bool)])
    return Example(tokens, mask)


@dataclasses.dataclass(frozen=True)
class PackedRows:
    """Arrays [rows, seq_len]: inputs, targets, weights (loss mask), positions, segments."""

    inputs: np.ndarray
    targets: np.ndarray
    weights: np.ndarray
    positions: np.ndarray
    segments: np.ndarray
    truncated: int  # examples cut to fit a row

    def __len__(self) -> int:
        return len(self.inputs)

    @property
    def fill(self) -> float:
        """Fraction of row slots holding real tokens."""
        return float((self.segments > 0).mean())


def pack(examples: Iterable[Example], seq_len: int, pad_id: int = 0) -> PackedRows:
    """Best-fit packing, in the given order: each example goes to the fullest row it fits."""
    pieces: list[list[tuple[np.ndarray, ...]]] = []  # row -> examples' (inputs, targets, weights)
    free: dict[int, list[int]] = {}  # free slots -> rows with that much room
    truncated = 0
    for ex in examples:
        inp, tgt, w = ex.tokens[:-1], ex.tokens[1:], ex.target_mask[1:]
        if len(inp) > seq_len:
            inp, tgt, w, truncated = inp[:seq_len], tgt[:seq_len], w[:seq_len], truncated + 1
        n = len(inp)
        room = next((r for r in range(n, seq_len) if free.get(r)), None)
        if room is None:
            row, room = len(pieces), seq_len
            pieces.append([])
        else:
            row = free[room].pop()
        pieces[row].append((inp, tgt, w))
        if room - n > 0:
            free.setdefault(room - n, []).append(row)

    shape = (len(pieces), seq_len)
    out = {k: np.zeros(shape, np.int32) for k in ("inputs", "targets", "positions", "segments")}
    out["inputs"][:] = pad_id
    out["targets"][:] = pad_id
    weights = np.zeros(shape, np.float32)
    for r, row in enumerate(pieces):
        at = 0
        for s, (inp, tgt, w) in enumerate(row, start=1):
            sl = slice(at, at + len(inp))
            out["inputs"][r, sl], out["targets"][r, sl], weights[r, sl] = inp, tgt, w
            out["positions"][r, sl] = np.arange(len(inp))
            out["segments"][r, sl] = s
            at += len(inp)
    return PackedRows(weights=weights, truncated=truncated, **out)


class BatchStream:
    """Batches of packed rows: each epoch a fresh seeded permutation, continuous across epochs."""

    def __init__(self, rows: PackedRows, batch_size: int, seed: int):
        if len(rows) == 0:
            raise ValueError("no training rows")
        self.rows, self.batch_size, self.seed = rows, batch_size, seed
        self._perms: dict[int, np.ndarray] = {}

    def _perm(self, epoch: int) -> np.ndarray:
        if epoch not in self._perms:
            self._perms[epoch] = np.random.default_rng([self.seed, epoch]).permutation(len(self.rows))
        return self._perms[epoch]

    def indices(self, step: int) -> np.ndarray:
        n = len(self.rows)
        flat = np.arange(step * self.batch_size, (step + 1) * self.batch_size)
        return np.array([self._perm(int(i // n))[i % n] for i in flat])

    def batch(self, step: int) -> dict[str, np.ndarray]:
        idx = self.indices(step)
        r = self.rows
        return {
            "inputs": r.inputs[idx],
            "targets": r.targets[idx],
            "weights": r.weights[idx],
            "positions": r.positions[idx],
            "segments": r.segments[idx],
        }
