"""The tiny preset's BPE tokenizer: one token per digit, fixed special ids, lossless round trip."""

from stages.tokenizer import training_texts
from training import chat
from training import tokenizer as bpe

RECORDS = [
    {
        "prompt": f"What is {a} + {b}?",
        "steps": [{"i": 1, "type": "compute", "content": f"{a} + {b} = {a + b}"}],
        "final_answer": str(a + b),
    }
    for a, b in [(123, 456), (78, 9), (1000, 2024), (5, 5)]
]


def test_special_tokens_have_fixed_ids_and_digits_stay_single():
    tok = bpe.train_bpe(training_texts(RECORDS) * 5, vocab_size=400, min_frequency=1)
    assert [tok.token_to_id(t) for t in bpe.SPECIAL_TOKENS] == list(range(len(bpe.SPECIAL_TOKENS)))
    ids = tok.encode("12345 + 678", add_special_tokens=False).ids
    digits = [tok.id_to_token(i) for i in ids if tok.id_to_token(i).strip("Ġ").isdigit()]
    assert digits == list("12345678")
    for tag in (chat.REASONING_OPEN, chat.ANSWER_CLOSE, chat.END_OF_TURN):
        assert tok.encode(tag, add_special_tokens=False).ids == [tok.token_to_id(tag)]


def test_round_trip_is_lossless():
    tok = bpe.train_bpe(training_texts(RECORDS) * 5, vocab_size=400, min_frequency=1)
    for text in training_texts(RECORDS) + ["Ünïcode ½ × 3 → 1,000.5 m"]:
        ids = tok.encode(text, add_special_tokens=False).ids
        assert tok.decode(ids, skip_special_tokens=False) == text


def test_training_is_deterministic(tmp_path):
    texts = training_texts(RECORDS) * 5
    a, b = tmp_path / "a", tmp_path / "b"
    bpe.save_hf(bpe.train_bpe(texts, 400, 1), a)
    bpe.save_hf(bpe.train_bpe(texts, 400, 1), b)
    assert (a / "tokenizer.json").read_bytes() == (b / "tokenizer.json").read_bytes()


def test_chat_instruction_is_one_token_inside_the_requested_vocab_size():
    texts = training_texts(RECORDS) * 5
    tok = bpe.train_bpe(texts, vocab_size=300, min_frequency=1)
    assert tok.get_vocab_size() <= 300
    ids = tok.encode(texts[0], add_special_tokens=False).ids
    assert tok.token_to_id(chat.SYSTEM_INSTRUCTION) in ids
    without = tok.encode(texts[0].replace(chat.SYSTEM_INSTRUCTION, ""), add_special_tokens=False).ids
    assert len(ids) <= len(without) + 1  # the whole instruction costs one token
    # an ordinary token: decoding without special tokens keeps the words
    assert chat.SYSTEM_INSTRUCTION in tok.decode(ids, skip_special_tokens=True)
