"""The tiny preset's tokenizer: byte-level BPE trained with Hugging Face `tokenizers`.

Digits are split one per token (as Gemma's tokenizer does) so arithmetic is
learnable; the chat markers and the output tags are single special tokens.
The chat instruction, the same words in every prompt, is one added (ordinary,
not special) token: spelt out it was a quarter of every training row, compute
a model trained from scratch learns nothing from. The text is unchanged, so
the rendering stays the one Gemma sees.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers

from training import chat

# Fixed ids 0..3 match Gemma's pad/eos/bos/unk.
SPECIAL_TOKENS = [
    "<pad>",
    "<eos>",
    chat.BOS,
    "<unk>",
    chat.START_OF_TURN,
    chat.END_OF_TURN,
    chat.REASONING_OPEN,
    chat.REASONING_CLOSE,
    chat.ANSWER_OPEN,
    chat.ANSWER_CLOSE,
]
# The files of a Hugging Face tokenizer that travel with a model directory.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model")
# Whole phrases that are one token each: the last ids of the vocabulary.
PHRASE_TOKENS = [chat.SYSTEM_INSTRUCTION]


def train_bpe(texts: Iterable[str], vocab_size: int, min_frequency: int) -> Tokenizer:
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - len(PHRASE_TOKENS),
        min_frequency=min_frequency,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    tok.add_tokens([AddedToken(phrase, special=False, normalized=False) for phrase in PHRASE_TOKENS])
    return tok


def save_hf(tok: Tokenizer, directory: Path) -> None:
    """tokenizer.json plus the small config files transformers reads beside it."""
    directory.mkdir(parents=True, exist_ok=True)
    tok.save(str(directory / "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": chat.BOS,
        "eos_token": chat.END_OF_TURN,
        "pad_token": "<pad>",
        "unk_token": "<unk>",
        "add_bos_token": False,
        "model_max_length": 2048,
    }
    (directory / "tokenizer_config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def load(directory: Path) -> Tokenizer:
    return Tokenizer.from_file(str(Path(directory) / "tokenizer.json"))


def token_id(tok: Tokenizer, token: str) -> int:
    """Id of a token that must exist (special tokens of the chat rendering)."""
    idx = tok.token_to_id(token)
    if idx is None:
        raise ValueError(f"tokenizer has no token {token!r}")
    return idx


def stop_ids(tok: Tokenizer) -> list[int]:
    """Token ids that end the model's turn: <end_of_turn>, and <eos> when the vocabulary has it."""
    return [token_id(tok, chat.END_OF_TURN)] + [i for i in [tok.token_to_id("<eos>")] if i is not None]
