"""Tests of the from-scratch tokenizers: byte-level BPE against a naive BPE and against Hugging Face
`tokenizers` (same merges, same ids, same encodings), round trips, files and bad inputs."""
import functools
import gzip
import json
import random
import time
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from scripts.common import UserError
from stage5_gpt.data.bpe import (BYTE_ORDER, BYTE_TO_ID, BYTE_TO_UNICODE, EOT, GPT2_SPLIT_PATTERN, ByteLevelBPE,
                                 CharTokenizer, bytes_to_unicode, load_tokenizer, merge_pair)


PROPERTY = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
# any Unicode text (no lone surrogates: they cannot be written as UTF-8), sprinkled with the special token
TEXT = st.lists(st.one_of(st.text(st.characters(codec="utf-8")), st.just(EOT)), max_size=5).map("".join)


# ----------------------------------------------------------------------------- helpers
@functools.lru_cache(maxsize=None)
def shakespeare(data_dir: Path) -> str:
    return (data_dir / "tiny_shakespeare" / "input.txt").read_text(encoding="utf-8")


@functools.lru_cache(maxsize=None)
def gutenberg_slice(data_dir: Path, size: int = 600_000) -> str:
    with gzip.open(data_dir / "gutenberg_en" / "train.txt.gz", "rt", encoding="utf-8") as f:
        return f.read(size)


@functools.lru_cache(maxsize=None)
def shakespeare_bpe(data_dir: Path, vocab_size: int = 1000) -> ByteLevelBPE:
    return ByteLevelBPE.train(shakespeare(data_dir)[:200_000], vocab_size)


def synthetic_text(seed: int = 0, words: int = 6000) -> str:
    """Made-up words from a few syllables (lots of equal pair counts, to test tie-breaking), some non-ASCII."""
    rng = random.Random(seed)
    syllables = ["ka", "lo", "mi", "ré", "tu", "ñe", "a", "zz", "ő", "日本", "🙂", "'s", "7", "42", "--", "!?"]
    lexicon = ["".join(rng.choice(syllables) for _ in range(rng.randint(1, 4))) for _ in range(300)]
    out = []
    for _ in range(words):
        out.append(rng.choice(lexicon))
        out.append(rng.choice([" ", " ", " ", "  ", "\n", ", ", ".\n\n", "\t"]))
    return "".join(out)


def hf_train(texts: list[str], vocab_size: int):
    """HF's byte-level BPE set up like ours: GPT-2 regex, all 256 bytes, min_frequency 2, <|endoftext|> last."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size - 1, min_frequency=2, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=[])
    tokenizer.train_from_iterator(texts, trainer)
    tokenizer.add_special_tokens([EOT])
    return tokenizer


@functools.lru_cache(maxsize=None)
def hf_shakespeare(data_dir: Path):
    return hf_train([shakespeare(data_dir)[:200_000]], 1000)


def hf_merges(tokenizer) -> list[tuple[str, str]]:
    merges = json.loads(tokenizer.to_str())["model"]["merges"]
    return [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in merges]


def our_merges(tokenizer: ByteLevelBPE) -> list[tuple[str, str]]:
    return [(tokenizer.token_str(left), tokenizer.token_str(right)) for left, right in tokenizer.merges]


def our_vocab(tokenizer: ByteLevelBPE) -> dict[str, int]:
    return {tokenizer.token_str(i): i for i in range(tokenizer.vocab_size)}


def naive_merges(text: str, num_merges: int, min_frequency: int = 2) -> list[tuple[int, int]]:
    """Textbook BPE: recount every pair of every word before each merge (slow, obviously right)."""
    words = Counter(tuple(piece.encode("utf-8").translate(BYTE_TO_ID)) for piece in GPT2_SPLIT_PATTERN.findall(text))
    merges: list[tuple[int, int]] = []
    for _ in range(num_merges):
        counts: Counter = Counter()
        for word, freq in words.items():
            for pair in zip(word, word[1:]):
                counts[pair] += freq
        if not counts:
            break
        best = max(counts, key=lambda pair: (counts[pair], -pair[0], -pair[1]))  # ties: smallest pair
        if counts[best] < min_frequency:
            break
        new_id = 256 + len(merges)
        words = Counter({tuple(merge_pair(word, best, new_id)): freq for word, freq in words.items()})
        merges.append(best)
    return merges


# ----------------------------------------------------------------------------- the byte alphabet
def test_byte_alphabet_is_gpt2s():
    mapping = bytes_to_unicode()
    assert len(set(mapping.values())) == 256 and mapping == BYTE_TO_UNICODE
    assert mapping[ord(" ")] == "Ġ" and mapping[ord("\n")] == "Ċ" and mapping[ord("a")] == "a"
    assert BYTE_ORDER[0] == ord("!") and BYTE_ORDER[220] == ord(" ") and BYTE_ORDER[198] == ord("\n")
    # HF's byte-level alphabet, sorted by character, gives the same base ids
    assert [mapping[b] for b in BYTE_ORDER] == sorted(pre_tokenizers.ByteLevel.alphabet())
    assert all(BYTE_TO_ID[b] == i for i, b in enumerate(BYTE_ORDER))


def test_split_pattern_keeps_one_leading_space():
    text = "Hello world's  end!!\n\n  42x"
    assert GPT2_SPLIT_PATTERN.findall(text) == ["Hello", " world", "'s", " ", " end", "!!", "\n\n ", " 42", "x"]
    assert "".join(GPT2_SPLIT_PATTERN.findall(text)) == text


# ----------------------------------------------------------------------------- training
def test_incremental_training_matches_naive_bpe():
    text = synthetic_text(seed=1, words=3000)
    tokenizer = ByteLevelBPE.train(text, 256 + 150 + 1)
    assert tokenizer.merges == naive_merges(text, 150)
    assert tokenizer.vocab_size == 256 + 150 + 1 and len(tokenizer) == tokenizer.vocab_size


def test_training_stops_at_min_frequency():
    tokenizer = ByteLevelBPE.train("the cat the hat", vocab_size=1000)
    # pieces "the", " cat", " the", " hat": "at", "he", "th" occur twice (equal counts: smallest ids first,
    # and the ids follow the characters: a < e < h < t), then "the" twice; every other pair only once
    assert our_merges(tokenizer) == [("a", "t"), ("h", "e"), ("t", "he")]
    assert tokenizer.vocab_size == 256 + 3 + 1 and tokenizer.eot_id == 259
    assert len(ByteLevelBPE.train("the cat the hat", 1000, min_frequency=1).merges) > 3


def test_training_takes_many_texts_and_skips_special_tokens():
    docs = [f"{EOT}hello there{EOT}{EOT}", "hello there", f"general{EOT}kenobi"]
    tokenizer = ByteLevelBPE.train(iter(docs), 300)
    assert not any(c in left + right for left, right in our_merges(tokenizer) for c in "<|>")
    assert ByteLevelBPE.train(docs, 300).merges == ByteLevelBPE.train("".join(docs), 300).merges


def test_vocab_size_too_small_is_a_user_error():
    with pytest.raises(UserError, match="at least 256 bytes"):
        ByteLevelBPE.train("some text", vocab_size=256)


def test_train_speed(real_data):
    text = shakespeare(real_data)[:1_000_000]
    tick = time.perf_counter()
    tokenizer = ByteLevelBPE.train(text, 4096)
    assert time.perf_counter() - tick < 30  # about 0.5 s on one core of a laptop
    assert tokenizer.vocab_size == 4096


# ----------------------------------------------------------------------------- parity with Hugging Face
def check_parity(text: str, vocab_size: int, held_out: str) -> ByteLevelBPE:
    ours = ByteLevelBPE.train(text, vocab_size)
    theirs = hf_train(text.split(EOT), vocab_size)
    assert our_merges(ours) == hf_merges(theirs)          # same merges, same order
    assert our_vocab(ours) == theirs.get_vocab()          # same token -> id map, <|endoftext|> included
    assert ours.encode(held_out) == theirs.encode(held_out).ids
    assert ours.decode(ours.encode(held_out)) == held_out == theirs.decode(theirs.encode(held_out).ids,
                                                                          skip_special_tokens=False)
    return ours


def test_hf_parity_synthetic_ties_and_unicode():
    ours = check_parity(synthetic_text(seed=2), 700, synthetic_text(seed=3, words=800) + EOT + "naïve 🙂 café")
    assert ours.vocab_size < 700  # both stopped early, at the same merge, when no pair was seen twice any more


def test_hf_parity_shakespeare(real_data):
    text = shakespeare(real_data)
    ours = check_parity(text[:200_000], 1500, text[-20_000:] + EOT + "\nROMEO:\n  Wherefore art thou 🙂?\n")
    assert ours.vocab_size == 1500


def test_hf_parity_gutenberg(real_data):
    text = gutenberg_slice(real_data)
    train, held_out = text[:300_000], text[400_000:450_000]
    assert sum(ord(c) > 127 for c in train) > 100  # curly quotes, accents: multi-byte characters get merged
    assert check_parity(train, 2000, held_out + EOT + "Über naïve café “quotes” — 日本語").vocab_size == 2000


@PROPERTY
@given(text=TEXT)
def test_hf_parity_on_any_text(real_data, text):
    ours, theirs = shakespeare_bpe(real_data), hf_shakespeare(real_data)
    assert ours.encode(text) == theirs.encode(text).ids


# ----------------------------------------------------------------------------- encode / decode
@PROPERTY
@given(text=TEXT)
def test_bpe_roundtrip(real_data, text):
    tokenizer = shakespeare_bpe(real_data)
    ids = tokenizer.encode(text)
    assert tokenizer.decode(ids) == text and tokenizer.decode_bytes(ids) == text.encode("utf-8")
    assert all(0 <= i < tokenizer.vocab_size for i in ids)
    assert tokenizer.decode(tokenizer.encode(text, allowed_special=False)) == text


@PROPERTY
@given(data=st.data())
def test_char_roundtrip(real_data, data):
    tokenizer = CharTokenizer.train(shakespeare(real_data))
    text = data.draw(st.text(st.sampled_from(tokenizer.chars)))
    assert tokenizer.decode(tokenizer.encode(text)) == text


def test_special_tokens_are_single_ids():
    tokenizer = ByteLevelBPE.train(synthetic_text(), 400, special_tokens=(EOT, "<|pad|>"))
    assert tokenizer.special_tokens == {EOT: 398, "<|pad|>": 399} and tokenizer.eot_id == 398
    ids = tokenizer.encode(f"kalo{EOT}{EOT} mi<|pad|>")
    assert ids.count(398) == 2 and ids.count(399) == 1 and ids[-1] == 399
    plain = tokenizer.encode(f"kalo{EOT}", allowed_special=False)
    assert 398 not in plain and tokenizer.decode(plain) == f"kalo{EOT}"
    assert tokenizer.token_str(398) == EOT and tokenizer.token_str(tokenizer.encode(" ")[0]) == "Ġ"


def test_decode_bytes_keeps_half_characters():
    tokenizer = ByteLevelBPE.train("plain ascii text " * 10, 300)
    ids = tokenizer.encode("é")
    assert len(ids) == 2 and tokenizer.decode_bytes(ids[:1]) == b"\xc3"
    assert tokenizer.decode(ids[:1]) == "\ufffd" and tokenizer.decode(ids) == "é"


def test_unknown_ids_are_user_errors():
    tokenizer = ByteLevelBPE.train(synthetic_text(), 300)
    for bad in (300, -1, 10**9):
        with pytest.raises(UserError, match=f"token id {bad} is not in this tokenizer"):
            tokenizer.decode([5, bad])
    with pytest.raises(UserError):
        tokenizer.token_str(300)
    with pytest.raises(UserError, match="token id 65"):
        CharTokenizer.train("abc").decode([0, 65])


def test_same_bytes_merged_twice_share_one_id():
    """Merges ("ab", "c") and ("a", "bc") both spell "abc": like HF, the second reuses the token's id."""
    a, b, c = (BYTE_TO_ID[ord(ch)] for ch in "abc")
    tokenizer = ByteLevelBPE([(a, b), (256, c), (b, c), (a, 258)], special_tokens=[EOT])
    assert tokenizer.vocab_size == 256 + 3 + 1 and tokenizer.token_str(257) == "abc"
    assert tokenizer.encode("abc") == [257] and tokenizer.encode("xbc") == [BYTE_TO_ID[ord("x")], 258]
    again = ByteLevelBPE.from_dict(json.loads(json.dumps(tokenizer.to_dict())))
    assert again.merges == tokenizer.merges and again.fingerprint() == tokenizer.fingerprint()


# ----------------------------------------------------------------------------- files
def test_save_load_roundtrip(tmp_path, real_data):
    tokenizer = shakespeare_bpe(real_data)
    path = tmp_path / "tok.json"
    tokenizer.save(path)
    saved = json.loads(path.read_text(encoding="utf-8"))
    assert saved["format"] == "stage5-bpe-v1" and saved["type"] == "byte_bpe"
    assert saved["merges"][0] == ["Ġ", "t"] and saved["special_tokens"] == {EOT: 999}
    text = shakespeare(real_data)[-5000:] + EOT + "élan 🙂"
    for loaded in (ByteLevelBPE.load(path), load_tokenizer(path), load_tokenizer(tokenizer.to_dict())):
        assert isinstance(loaded, ByteLevelBPE)
        assert loaded.encode(text) == tokenizer.encode(text)
        assert loaded.fingerprint() == tokenizer.fingerprint() and len(tokenizer.fingerprint()) == 16
    assert ByteLevelBPE.train(synthetic_text(), 300).fingerprint() != tokenizer.fingerprint()


def test_char_tokenizer(tmp_path):
    tokenizer = CharTokenizer.train("hello world\n")
    assert tokenizer.chars == ["\n", " ", "d", "e", "h", "l", "o", "r", "w"] and tokenizer.vocab_size == 9
    assert tokenizer.encode("hold") == [4, 6, 5, 2] and tokenizer.eot_id is None
    with pytest.raises(UserError, match=r"2 character\(s\) .* never saw: 'Z', 'é'"):
        tokenizer.encode("Zoé")
    tokenizer.save(tmp_path / "char.json")
    loaded = load_tokenizer(tmp_path / "char.json")
    assert isinstance(loaded, CharTokenizer) and loaded.chars == tokenizer.chars
    assert loaded.fingerprint() == tokenizer.fingerprint()
    assert json.loads((tmp_path / "char.json").read_text())["type"] == "char"


@pytest.mark.parametrize("content, message", [
    ("not json {", "not valid JSON"),
    ('{"format": "something-else", "type": "byte_bpe"}', "expected format 'stage5-bpe-v1'"),
    ('{"format": "stage5-bpe-v1", "type": "byte_bpe", "pattern": "x", "merges": [["Ġ", "the"]], '
     '"special_tokens": {}}', "uses a token no earlier merge made"),
    ('{"format": "stage5-bpe-v1", "type": "byte_bpe", "pattern": "x", "merges": [["a"]], "special_tokens": {}}',
     "not a pair of token strings"),
    ('{"format": "stage5-bpe-v1", "type": "byte_bpe", "pattern": "(", "merges": [], "special_tokens": {}}',
     "not a valid byte-level BPE"),
    ('{"format": "stage5-bpe-v1", "type": "byte_bpe", "pattern": "x", "merges": [], '
     '"special_tokens": {"<|endoftext|>": 7}}', "do not follow"),
    ('{"format": "stage5-char-v1", "type": "char", "chars": ["a", "bb"]}', "distinct single characters"),
    ('[1, 2]', "not a tokenizer of this course"),
])
def test_malformed_files_are_user_errors(tmp_path, content, message):
    path = tmp_path / "tok.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(UserError, match=message) as info:
        load_tokenizer(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)
    if '"byte_bpe"' in content:
        with pytest.raises(UserError, match=message):
            ByteLevelBPE.load(path)


def test_missing_file_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        ByteLevelBPE.load(tmp_path / "nope.json")


def write_gpt2_files(tokenizer: ByteLevelBPE, folder: Path, vocab: dict[str, int] | None = None) -> tuple[Path, Path]:
    """vocab.json and merges.txt as in a Hugging Face `gpt2` folder."""
    vocab_path, merges_path = folder / "vocab.json", folder / "merges.txt"
    vocab_path.write_text(json.dumps(vocab or our_vocab(tokenizer), ensure_ascii=False), encoding="utf-8")
    merges_path.write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in our_merges(tokenizer)),
                           encoding="utf-8")
    return vocab_path, merges_path


def test_from_gpt2_files(tmp_path, real_data):
    tokenizer = shakespeare_bpe(real_data)
    loaded = ByteLevelBPE.from_gpt2_files(*write_gpt2_files(tokenizer, tmp_path))
    text = shakespeare(real_data)[-3000:] + EOT + "ça 🙂"
    assert loaded.merges == tokenizer.merges and loaded.special_tokens == {EOT: 999} and loaded.eot_id == 999
    assert loaded.encode(text) == tokenizer.encode(text) and loaded.fingerprint() == tokenizer.fingerprint()


def test_gpt2_ids(tmp_path):
    """The head of GPT-2's real merges.txt, with vocab.json written GPT-2's way: our ids are GPT-2's."""
    gpt2_merges = ["Ġ t", "Ġ a", "h e", "i n", "r e", "o n", "Ġt he", "e r", "Ġ s", "a t", "Ġ w", "Ġ o"]
    vocab = {char: i for i, char in enumerate(sorted(bytes_to_unicode().values()))}
    for merge in gpt2_merges:
        vocab[merge.replace(" ", "")] = len(vocab)
    vocab[EOT] = len(vocab)
    (tmp_path / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (tmp_path / "merges.txt").write_text("#version: 0.2\n" + "\n".join(gpt2_merges) + "\n", encoding="utf-8")
    tokenizer = ByteLevelBPE.from_gpt2_files(tmp_path / "vocab.json", tmp_path / "merges.txt")
    assert tokenizer.encode(" the") == [262] and tokenizer.encode("\n") == [198] and tokenizer.encode(".!") == [13, 0]
    assert tokenizer.encode(" at" + EOT) == [257, 83, 268] and tokenizer.eot_id == 268 and tokenizer.vocab_size == 269


def test_from_gpt2_files_refuses_other_ids(tmp_path):
    tokenizer = ByteLevelBPE.train(synthetic_text(), 300)
    vocab = our_vocab(tokenizer)
    first, second = tokenizer.token_str(256), tokenizer.token_str(257)
    vocab[first], vocab[second] = 257, 256  # two merged tokens swapped
    with pytest.raises(UserError, match="has id 257"):
        ByteLevelBPE.from_gpt2_files(*write_gpt2_files(tokenizer, tmp_path, vocab))
    vocab_path, merges_path = write_gpt2_files(tokenizer, tmp_path)
    merges_path.write_text("#version: 0.2\nĠ t\nĠt he extra\n", encoding="utf-8")
    with pytest.raises(UserError, match="line 3"):
        ByteLevelBPE.from_gpt2_files(vocab_path, merges_path)
    merges_path.write_text("#version: 0.2\n{} {}\n".format(*our_merges(tokenizer)[0]), encoding="utf-8")
    with pytest.raises(UserError, match="makes 257 .* do not belong together"):  # merges.txt cut short
        ByteLevelBPE.from_gpt2_files(vocab_path, merges_path)
