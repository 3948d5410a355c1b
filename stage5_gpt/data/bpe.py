"""Tokenizers for stage 5, written from scratch: byte-level BPE (as GPT-2 does it) and plain characters.

Byte-pair encoding in one paragraph
-----------------------------------
Start from the 256 possible bytes as the vocabulary, so every text can be written down (UTF-8 turns any
string into bytes; nothing is ever "unknown"). Then, again and again, find the two adjacent tokens that
occur together most often in the training text and make them one new token. After a few thousand such
*merges*, common words (" the", " and") are single tokens and rare ones are spelled from pieces. Encoding
a new text replays the merges in the order they were learned; decoding just glues the bytes back together.

How GPT-2 does it, and so do we
-------------------------------
1. **Pre-split** the text with a regular expression (`GPT2_SPLIT_PATTERN`) into words, numbers,
   punctuation runs and whitespace, each with at most one leading space (" world"). Merges never cross
   these pieces, so " dog." cannot become one token and "dog" means the same thing wherever it occurs.
2. **Bytes**, not characters: each piece is encoded to UTF-8 and BPE works on the bytes. An emoji is 4
   bytes and may end up as 1 to 4 tokens, but no character is ever out of vocabulary.
3. **Special tokens** such as `<|endoftext|>` (which separates documents) are cut out of the text before
   anything else: they are never merged with their neighbours and never counted while training.

The ids
-------
- 0..255: the 256 single bytes, in GPT-2's order (see `BYTE_ORDER`), not in byte-value order;
- 256, 257, ...: one per merge, in the order the merges were learned (should a merge ever rebuild bytes
  that already are a token, "ab"+"c" after "a"+"bc", it reuses that token's id, as Hugging Face does);
- after all of these: the special tokens (GPT-2's `<|endoftext|>` is 50256 = 256 + 50000 merges).

Training (`ByteLevelBPE.train`) keeps the pair counts up to date after each merge instead of recounting
the whole corpus, which is what makes pure Python fast enough for 10 MB of text. Everything here is
saved as human-readable JSON, never pickle.
"""
from __future__ import annotations

import hashlib
import heapq
import json
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Iterable, Sequence

import regex

from scripts.common import UserError, read_json, write_json

EOT = "<|endoftext|>"
BPE_FORMAT = "stage5-bpe-v1"
CHAR_FORMAT = "stage5-char-v1"

# GPT-2's pre-split: English contractions ('s 't 're 've 'm 'll 'd), then a run of letters, of digits, or
# of other symbols, each with an optional leading space; then whitespace. `\s+(?!\S)` takes a run of
# spaces but leaves its last space to the word that follows, so "a   b" -> "a", "  ", " b".
GPT2_SPLIT_PATTERN = regex.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""")

# `_encode_piece` is quadratic in a piece's length: a pasted line of 100,000 letters (one piece) would take hours.
# Longer pieces are encoded in chunks of this many characters; no word of any language comes near it, so this never
# changes the tokens of real text, and decoding still gives back every byte.
MAX_PIECE = 256


# ----------------------------------------------------------------------------- the 256 base tokens
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from each byte value to one printable character.

    Why: a token is a string of bytes, and many bytes (space, newline, control bytes, half of a UTF-8
    character) print as nothing or as garbage. The 188 bytes that are visible Latin-1 characters
    ('!'..'~', '¡'..'¬', '®'..'ÿ') stand for themselves; the other 68 are given the characters 256, 257, ...
    in byte order. So a space (byte 32) shows as 'Ġ' (chr(256 + 32)) and a newline as 'Ċ', and the token
    " the" is written "Ġthe". GPT-2's vocab.json and merges.txt spell every token this way.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    mapping = {byte: chr(byte) for byte in printable}
    shift = 0
    for byte in range(256):
        if byte not in mapping:
            mapping[byte] = chr(256 + shift)
            shift += 1
    return mapping


BYTE_TO_UNICODE = bytes_to_unicode()
UNICODE_TO_BYTE = {char: byte for byte, char in BYTE_TO_UNICODE.items()}

# Base id i is the byte whose printable character is the i-th smallest: '!' (byte 33) is id 0, the space
# ('Ġ', byte 32) is id 220. Why this order rather than id = byte value? It is the order of GPT-2's own
# vocab.json and of Hugging Face `tokenizers` (whose BPE trainer numbers its alphabet by character), so
# (1) GPT-2's files load with the same ids, and (2) when two pairs are equally frequent the trainer picks
# the pair with the smaller ids, exactly as HF's trainer does, and both learn the very same merges.
BYTE_ORDER = sorted(range(256), key=lambda byte: BYTE_TO_UNICODE[byte])
BYTE_TO_ID = bytes(BYTE_ORDER.index(byte) for byte in range(256))  # a `bytes.translate` table: byte -> base id

Pair = tuple[int, int]


def merge_pair(ids: Sequence[int], pair: Pair, new_id: int) -> list[int]:
    """Replace each occurrence of `pair` in `ids` by `new_id`, left to right ("a a a" + (a, a) -> "aa a")."""
    left, right = pair
    out: list[int] = []
    i, n = 0, len(ids)
    while i < n:
        if ids[i] == left and i + 1 < n and ids[i + 1] == right:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def _special_splitter(special_tokens: Iterable[str]) -> regex.Pattern | None:
    """A pattern matching any special token (longest first, so one that contains another wins)."""
    specials = sorted(special_tokens, key=len, reverse=True)
    return regex.compile("(" + "|".join(regex.escape(s) for s in specials) + ")") if specials else None


# ----------------------------------------------------------------------------- training
def count_words(texts: Iterable[str], pattern: regex.Pattern, special_tokens: Sequence[str]) -> Counter:
    """How often each pre-split piece ("word") occurs. Special tokens are cut out first and not counted.

    BPE only needs these counts: 10 MB of English holds ~2.4 million pieces but only ~55,000 distinct
    ones, so the merge loop works on 55,000 words with a frequency each, not on 10 million bytes.
    """
    splitter = _special_splitter(special_tokens)
    counts: Counter = Counter()
    for text in texts:
        if not isinstance(text, str):
            raise UserError(f"BPE training needs text (str), got {type(text).__name__}")
        segments = splitter.split(text)[::2] if splitter else [text]  # odd items are the special tokens
        for segment in segments:
            counts.update(pattern.findall(segment))
    return counts


def learn_merges(word_counts: dict[str, int], num_tokens: int, min_frequency: int = 2,
                 progress: bool = False) -> list[Pair]:
    """The merges that grow the 256 byte tokens to `num_tokens` tokens, most frequent pair first.

    The naive algorithm recounts every pair of every word after each merge: thousands of passes over the
    corpus. Instead we keep, for each pair, its count and the set of words that hold it; a merge then
    visits only those words and fixes the counts of the pairs it destroyed and created. The most frequent
    pair comes from a max-heap with lazy deletion: counts change after the entries were pushed, so a
    popped entry whose count is out of date is pushed back with the right count and we pop again. A pair's
    count only falls after its entry was pushed (pairs that grow get a fresh entry), so no entry is below
    its pair's true count, and the first up-to-date entry popped is the true best.

    Ties: among pairs with the same count the smallest (left id, then right id) wins, which is what Hugging
    Face's BpeTrainer does; with the same base ids (see `BYTE_ORDER`) both learn the same merges.
    Stops when the vocabulary holds `num_tokens` tokens or no pair occurs `min_frequency` times.
    """
    words: list[list[int]] = []
    freqs: list[int] = []
    for word, freq in word_counts.items():
        ids = list(word.encode("utf-8").translate(BYTE_TO_ID))
        if len(ids) > 1:  # a single byte holds no pair
            words.append(ids)
            freqs.append(freq)

    pair_counts: dict[Pair, int] = defaultdict(int)
    where: dict[Pair, set[int]] = defaultdict(set)  # pair -> the words that hold it (or held it: never shrunk)
    for index, (ids, freq) in enumerate(zip(words, freqs)):
        for pair in zip(ids, ids[1:]):
            pair_counts[pair] += freq
            where[pair].add(index)
    heap = [(-count, pair) for pair, count in pair_counts.items()]  # heapq is a min-heap: negate the counts
    heapq.heapify(heap)

    token_bytes = [bytes([byte]) for byte in BYTE_ORDER]  # id -> bytes
    token_ids = {token: i for i, token in enumerate(token_bytes)}
    merges: list[Pair] = []
    bar = _progress_bar(num_tokens - len(token_bytes), progress)
    while len(token_bytes) < num_tokens and heap:
        negative_count, pair = heapq.heappop(heap)
        count = pair_counts.get(pair, 0)
        if count != -negative_count:  # out of date: push back with today's count (if it still occurs)
            if count > 0:
                heapq.heappush(heap, (-count, pair))
            continue
        if count < min_frequency:
            break
        merges.append(pair)
        merged = token_bytes[pair[0]] + token_bytes[pair[1]]
        new_id = token_ids.get(merged)
        if new_id is None:  # the usual case; the same bytes merged another way ("ab"+"c", "a"+"bc") reuse the id
            new_id = len(token_bytes)
            token_bytes.append(merged)
            token_ids[merged] = new_id
            bar.update(1)
        for new_pair in _apply_merge(pair, new_id, words, freqs, pair_counts, where):
            heapq.heappush(heap, (-pair_counts[new_pair], new_pair))
    bar.close()
    return merges


def _apply_merge(pair: Pair, new_id: int, words: list[list[int]], freqs: list[int],
                 pair_counts: dict[Pair, int], where: dict[Pair, set[int]]) -> set[Pair]:
    """Merge `pair` in every word that holds it, update the counts; return the new pairs (they hold new_id)."""
    created: set[Pair] = set()
    for index in where.pop(pair, ()):
        ids = words[index]
        merged = merge_pair(ids, pair, new_id)
        if len(merged) == len(ids):  # an earlier merge already took this word's occurrence of the pair
            continue
        freq = freqs[index]
        for old in zip(ids, ids[1:]):  # forget the word's old pairs, count its new ones
            pair_counts[old] -= freq
        for new in zip(merged, merged[1:]):
            pair_counts[new] += freq
            if new_id in new:
                where[new].add(index)
                created.add(new)
        words[index] = merged
    pair_counts.pop(pair, None)  # every occurrence is merged now
    return created


def _progress_bar(total: int, enabled: bool) -> Any:
    from tqdm import tqdm   # only needed here

    return tqdm(total=max(total, 0), desc="BPE merges", unit="merge", disable=not enabled)


# ----------------------------------------------------------------------------- the tokenizer
class ByteLevelBPE:
    """A byte-level BPE tokenizer: `merges` (pairs of ids, in the order learned) and special tokens.

    Token ids: 0..255 bytes (GPT-2 order), then one per merge, then the special tokens.
    encode: text -> special tokens + pieces (regex) -> bytes -> merges replayed by rank -> ids.
    decode: ids -> bytes -> UTF-8 text.
    """

    def __init__(self, merges: Sequence[Pair], special_tokens: Sequence[str] = (EOT,),
                 pattern: str = GPT2_SPLIT_PATTERN.pattern) -> None:
        self.pattern = regex.compile(pattern)
        self.merges: list[Pair] = []
        self._token_bytes = [bytes([byte]) for byte in BYTE_ORDER]  # id -> bytes (specials excluded)
        self._bytes_to_id = {token: i for i, token in enumerate(self._token_bytes)}
        self._merge_rank: dict[Pair, int] = {}    # (left, right) -> position in the merge list
        self._merge_result: dict[Pair, int] = {}  # (left, right) -> id of the merged token
        for left, right in merges:
            self._add_merge(int(left), int(right))
        self.special_tokens: dict[str, int] = {}
        for token in special_tokens:
            if not isinstance(token, str) or not token:
                raise UserError(f"a special token must be a non-empty string, got {token!r}")
            self.special_tokens.setdefault(token, len(self._token_bytes) + len(self.special_tokens))
        self._special_bytes = {i: token.encode("utf-8") for token, i in self.special_tokens.items()}
        self._special_splitter = _special_splitter(self.special_tokens)
        self._cache: dict[str, tuple[int, ...]] = {}  # piece -> ids: a text repeats its words endlessly

    def _add_merge(self, left: int, right: int) -> None:
        size = len(self._token_bytes)
        if not (0 <= left < size and 0 <= right < size):
            raise UserError(f"merge #{len(self.merges)} ({left}, {right}) uses a token that does not exist yet")
        if (left, right) in self._merge_rank:
            raise UserError(f"merge #{len(self.merges)} ({self.token_str(left)!r}, {self.token_str(right)!r}) "
                            "appears twice")
        merged = self._token_bytes[left] + self._token_bytes[right]
        new_id = self._bytes_to_id.get(merged)
        if new_id is None:  # the usual case; an existing id only when the same bytes were merged another way
            new_id = len(self._token_bytes)
            self._token_bytes.append(merged)
            self._bytes_to_id[merged] = new_id
        self._merge_rank[(left, right)] = len(self.merges)
        self._merge_result[(left, right)] = new_id
        self.merges.append((left, right))

    # ------------------------------------------------------------------ training
    @classmethod
    def train(cls, texts: str | Iterable[str], vocab_size: int, special_tokens: Sequence[str] = (EOT,),
              min_frequency: int = 2, progress: bool = False) -> "ByteLevelBPE":
        """Learn merges from `texts` (one string or many) until the vocabulary has `vocab_size` tokens.

        `vocab_size` counts everything: 256 bytes + merges + special tokens. Fewer tokens result when no
        pair occurs `min_frequency` times any more (the text is too small for the vocabulary asked for).
        """
        specials = list(dict.fromkeys(special_tokens))
        if not isinstance(vocab_size, int) or vocab_size < 256 + len(specials):
            raise UserError(f"vocab_size must be at least 256 bytes + {len(specials)} special tokens = "
                            f"{256 + len(specials)}, got {vocab_size}")
        word_counts = count_words([texts] if isinstance(texts, str) else texts, GPT2_SPLIT_PATTERN, specials)
        merges = learn_merges(word_counts, vocab_size - len(specials), min_frequency, progress)
        return cls(merges, specials)

    # ------------------------------------------------------------------ encoding
    def _encode_piece(self, piece: str) -> tuple[int, ...]:
        """GPT-2's algorithm on one pre-split piece: merge the pair learned earliest, until none applies.

        Each step rescans the piece, which is quadratic in its length: nothing for words, and `encode`
        caches the result, so each distinct piece of a corpus is worked out once.
        """
        ids = list(piece.encode("utf-8").translate(BYTE_TO_ID))
        rank = self._merge_rank
        never = len(rank)  # ranks run from 0 to len - 1
        while len(ids) > 1:
            best = min(zip(ids, ids[1:]), key=lambda pair: rank.get(pair, never))
            if best not in rank:
                break
            ids = merge_pair(ids, best, self._merge_result[best])
        return tuple(ids)

    def encode_ordinary(self, text: str) -> list[int]:
        """Token ids of `text`, reading special-token strings as plain text."""
        ids: list[int] = []
        cache = self._cache
        for piece in self.pattern.findall(text):
            piece_ids = cache.get(piece)
            if piece_ids is None and len(piece) > MAX_PIECE:   # see MAX_PIECE: never in prose
                piece_ids = tuple(i for start in range(0, len(piece), MAX_PIECE)
                                  for i in self._encode_piece(piece[start:start + MAX_PIECE]))
            elif piece_ids is None:
                piece_ids = self._encode_piece(piece)
                if len(cache) < 1_000_000:  # bound the memory an endless stream of new pieces could take
                    cache[piece] = piece_ids
            ids.extend(piece_ids)
        return ids

    def encode(self, text: str, allowed_special: bool = True) -> list[int]:
        """Token ids of `text`; each special token in it becomes its one id (unless `allowed_special` is False)."""
        if not allowed_special or self._special_splitter is None:
            return self.encode_ordinary(text)
        ids: list[int] = []
        for i, part in enumerate(self._special_splitter.split(text)):
            if i % 2:  # split() with a group puts the matched special tokens at the odd positions
                ids.append(self.special_tokens[part])
            elif part:
                ids.extend(self.encode_ordinary(part))
        return ids

    # ------------------------------------------------------------------ decoding
    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        """The bytes of the tokens. One token may hold part of a character, so streaming output decodes these
        bytes incrementally instead of calling `decode` token by token."""
        table, specials, size = self._token_bytes, self._special_bytes, len(self._token_bytes)
        out = []
        for token in ids:
            token = int(token)
            if 0 <= token < size:
                out.append(table[token])
            elif token in specials:
                out.append(specials[token])
            else:
                raise UserError(f"token id {token} is not in this tokenizer (ids are 0..{self.vocab_size - 1}); "
                                "were the ids made by another tokenizer?")
        return b"".join(out)

    def decode(self, ids: Iterable[int]) -> str:
        """The text of the tokens; bytes that are not valid UTF-8 (a character cut in half) become '�'."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def token_str(self, token: int) -> str:
        """One token written GPT-2's way ("Ġthe" for " the", "Ċ" for a newline), or a special token's text."""
        if 0 <= token < len(self._token_bytes):
            return "".join(BYTE_TO_UNICODE[byte] for byte in self._token_bytes[token])
        for text, special_id in self.special_tokens.items():
            if special_id == token:
                return text
        raise UserError(f"token id {token} is not in this tokenizer (ids are 0..{self.vocab_size - 1})")

    @property
    def vocab_size(self) -> int:
        return len(self._token_bytes) + len(self.special_tokens)

    def __len__(self) -> int:
        return self.vocab_size

    @property
    def eot_id(self) -> int | None:
        """The id of `<|endoftext|>`, which separates documents (None if this tokenizer has none)."""
        return self.special_tokens.get(EOT)

    def __repr__(self) -> str:
        return (f"ByteLevelBPE(vocab_size={self.vocab_size}, merges={len(self.merges)}, "
                f"special_tokens={list(self.special_tokens)})")

    # ------------------------------------------------------------------ files
    def to_dict(self) -> dict[str, Any]:
        """The tokenizer as plain JSON values. Merges are written as token strings (["Ġ", "t"]) so a person
        can read them; the ids follow from their order (see the module docstring)."""
        return {
            "format": BPE_FORMAT,
            "type": "byte_bpe",
            "pattern": self.pattern.pattern,
            "vocab_size": self.vocab_size,
            "merges": [[self.token_str(left), self.token_str(right)] for left, right in self.merges],
            "special_tokens": dict(self.special_tokens),
        }

    @classmethod
    def from_dict(cls, obj: Any, where: str = "tokenizer") -> "ByteLevelBPE":
        """Rebuild a tokenizer from `to_dict`'s output; anything malformed is a UserError naming `where`."""
        def fail(problem: str) -> UserError:
            return UserError(f"{where} is not a valid byte-level BPE tokenizer ({problem}); retrain or re-save it")

        if not isinstance(obj, dict) or obj.get("format") != BPE_FORMAT or obj.get("type") != "byte_bpe":
            found = (obj.get("format"), obj.get("type")) if isinstance(obj, dict) else type(obj).__name__
            raise fail(f"expected format {BPE_FORMAT!r} and type 'byte_bpe', found {found}")
        pattern, merges, specials = obj.get("pattern"), obj.get("merges"), obj.get("special_tokens")
        if not isinstance(pattern, str):
            raise fail("'pattern' must be a string")
        if not isinstance(merges, list) or not isinstance(specials, dict):
            raise fail("'merges' must be a list and 'special_tokens' an object")
        try:
            regex.compile(pattern)
            tokenizer = cls(_merges_from_strings(merges), _specials_in_order(specials), pattern)
        except (UserError, regex.error) as err:
            raise fail(str(err)) from None
        if tokenizer.special_tokens != specials:
            raise fail(f"special token ids {specials} do not follow the {len(tokenizer._token_bytes)} other tokens")
        if obj.get("vocab_size", tokenizer.vocab_size) != tokenizer.vocab_size:
            raise fail(f"it says vocab_size {obj.get('vocab_size')} but its merges give {tokenizer.vocab_size}")
        return tokenizer

    def save(self, path: str | Path) -> None:
        write_json(Path(path), self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> "ByteLevelBPE":
        return cls.from_dict(read_json(path, "tokenizer file"), where=f"tokenizer file {path}")

    def fingerprint(self) -> str:
        """A short hash of the tokenizer: a checkpoint stores it to refuse a tokenizer with other ids."""
        return _fingerprint(self.to_dict())

    @classmethod
    def from_gpt2_files(cls, vocab_json_path: str | Path, merges_txt_path: str | Path) -> "ByteLevelBPE":
        """GPT-2's own tokenizer, from the `vocab.json` and `merges.txt` of a Hugging Face `gpt2` folder.

        merges.txt lists one merge per line ("Ġ t"); vocab.json maps each token string to its id. GPT-2's
        ids follow our scheme (bytes in GPT-2 order, then one id per merge, then `<|endoftext|>`), which
        is checked here: a mismatch would silently feed the model the wrong ids.
        """
        vocab = read_json(vocab_json_path, "GPT-2 vocab file")
        if not isinstance(vocab, dict) or not all(isinstance(i, int) for i in vocab.values()):
            raise UserError(f"GPT-2 vocab file {vocab_json_path} must map token strings to integer ids")
        merges = _read_merges_txt(Path(merges_txt_path))
        try:
            tokenizer = cls(_merges_from_strings(merges), special_tokens=())
        except UserError as err:
            raise UserError(f"GPT-2 merges file {merges_txt_path}: {err}") from None
        size = len(tokenizer._token_bytes)
        if sorted(vocab.values()) != list(range(len(vocab))):
            raise UserError(f"GPT-2 vocab file {vocab_json_path}: the ids must be 0..{len(vocab) - 1}, each used once")
        for token, i in vocab.items():
            if i < size and tokenizer.token_str(i) != token:
                raise UserError(f"GPT-2 vocab file {vocab_json_path}: token {token!r} has id {i}, but with "
                                f"{merges_txt_path} id {i} is {tokenizer.token_str(i)!r}; the ids must be the "
                                "256 bytes in GPT-2's order, then one per merge, then the special tokens")
        # what comes after the merged tokens must be special tokens, written like <|endoftext|>; anything
        # else means merges.txt is missing merges (or belongs to another vocab.json)
        specials = [token for token, i in sorted(vocab.items(), key=lambda item: item[1]) if i >= size]
        ordinary = [token for token in specials if not (token.startswith("<") and token.endswith(">"))]
        if len(vocab) < size or ordinary:
            found = f", not {ordinary[0]!r}" if ordinary else ""
            raise UserError(f"GPT-2 vocab file {vocab_json_path} has {len(vocab)} tokens, but {merges_txt_path} "
                            f"makes {size} (then special tokens such as <|endoftext|>{found}); "
                            "the two files do not belong together")
        return cls(tokenizer.merges, specials)


def _merges_from_strings(merges: list[Any]) -> list[Pair]:
    """[["Ġ", "t"], ...] -> [(220, 83), ...]: each token string spelled in GPT-2's printable characters."""
    known = {BYTE_TO_UNICODE[byte]: i for i, byte in enumerate(BYTE_ORDER)}  # token string -> id
    pairs: list[Pair] = []
    for number, merge in enumerate(merges):
        if not (isinstance(merge, (list, tuple)) and len(merge) == 2 and all(isinstance(s, str) for s in merge)):
            raise UserError(f"merge #{number} is {merge!r}, not a pair of token strings")
        left, right = (known.get(s) for s in merge)
        if left is None or right is None:
            raise UserError(f"merge #{number} {merge!r} uses a token no earlier merge made")
        pairs.append((left, right))
        known.setdefault(merge[0] + merge[1], len(known))  # a new token takes the next id
    return pairs


def _specials_in_order(specials: dict[str, Any]) -> list[str]:
    """Special tokens sorted by their saved ids (their ids are then re-derived and compared)."""
    if not all(isinstance(i, int) for i in specials.values()):
        raise UserError("special token ids must be integers")
    return [token for token, _ in sorted(specials.items(), key=lambda item: item[1])]


def _read_merges_txt(path: Path) -> list[list[str]]:
    """The merges of a GPT-2 `merges.txt`: an optional "#version" line, then "left right" per line."""
    if not path.is_file():
        raise UserError(f"GPT-2 merges file {path} does not exist")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as err:
        raise UserError(f"GPT-2 merges file {path} is not UTF-8 text ({err})") from None
    merges = []
    for number, line in enumerate(lines, start=1):
        if (number == 1 and line.startswith("#version")) or not line.strip():
            continue
        parts = line.split(" ")
        if len(parts) != 2 or not all(parts):
            raise UserError(f"GPT-2 merges file {path} line {number}: expected two tokens separated by one space, "
                            f"got {line[:60]!r}")
        merges.append(parts)
    return merges


def _fingerprint(obj: dict[str, Any]) -> str:
    canonical = json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]


# ----------------------------------------------------------------------------- characters
class CharTokenizer:
    """One token per character of the training text (65 for tiny Shakespeare): the simplest tokenizer.

    Ids are the characters in sorted order. A text with a character the training text never had cannot be
    encoded (unlike byte-level BPE), which is fine for a closed corpus such as tiny Shakespeare.
    """

    def __init__(self, chars: Sequence[str]) -> None:
        if not chars or not all(isinstance(c, str) and len(c) == 1 for c in chars) or len(set(chars)) != len(chars):
            raise UserError("a character vocabulary must be a non-empty list of distinct single characters")
        self.chars = list(chars)
        self._index = {char: i for i, char in enumerate(self.chars)}
        self.special_tokens: dict[str, int] = {}

    @classmethod
    def train(cls, text: str) -> "CharTokenizer":
        if not text:
            raise UserError("cannot build a character vocabulary from an empty text")
        return cls(sorted(set(text)))

    def encode(self, text: str, allowed_special: bool = True) -> list[int]:
        """One id per character (`allowed_special` is accepted for the same call as ByteLevelBPE; there are none)."""
        try:
            return [self._index[char] for char in text]
        except KeyError:
            unknown = sorted(set(text) - set(self._index))
            shown = ", ".join(repr(c) for c in unknown[:10]) + (" ..." if len(unknown) > 10 else "")
            raise UserError(f"the text has {len(unknown)} character(s) this character tokenizer never saw: {shown}; "
                            f"it knows only the {len(self.chars)} characters of its training text") from None

    encode_ordinary = encode

    def decode(self, ids: Iterable[int]) -> str:
        out = []
        for token in ids:
            token = int(token)
            if not 0 <= token < len(self.chars):
                raise UserError(f"token id {token} is not in this character tokenizer "
                                f"(ids are 0..{len(self.chars) - 1})")
            out.append(self.chars[token])
        return "".join(out)

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        return self.decode(ids).encode("utf-8")

    def token_str(self, token: int) -> str:
        return self.decode([token])

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def __len__(self) -> int:
        return self.vocab_size

    @property
    def eot_id(self) -> None:
        return None

    def __repr__(self) -> str:
        return f"CharTokenizer(vocab_size={self.vocab_size})"

    def to_dict(self) -> dict[str, Any]:
        return {"format": CHAR_FORMAT, "type": "char", "chars": list(self.chars)}

    @classmethod
    def from_dict(cls, obj: Any, where: str = "tokenizer") -> "CharTokenizer":
        if not isinstance(obj, dict) or obj.get("format") != CHAR_FORMAT or obj.get("type") != "char":
            found = (obj.get("format"), obj.get("type")) if isinstance(obj, dict) else type(obj).__name__
            raise UserError(f"{where} is not a character tokenizer (expected format {CHAR_FORMAT!r} and "
                            f"type 'char', found {found}); retrain or re-save it")
        chars = obj.get("chars")
        try:
            return cls(chars if isinstance(chars, list) else [])
        except UserError as err:
            raise UserError(f"{where}: {err}") from None

    def save(self, path: str | Path) -> None:
        write_json(Path(path), self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> "CharTokenizer":
        return cls.from_dict(read_json(path, "tokenizer file"), where=f"tokenizer file {path}")

    def fingerprint(self) -> str:
        return _fingerprint(self.to_dict())


def load_tokenizer(path_or_dict: str | Path | dict[str, Any]) -> ByteLevelBPE | CharTokenizer:
    """A saved tokenizer of either kind: a JSON file, or the dict a checkpoint holds."""
    if isinstance(path_or_dict, dict):
        obj, where = path_or_dict, "tokenizer"
    else:
        obj, where = read_json(path_or_dict, "tokenizer file"), f"tokenizer file {path_or_dict}"
    kind = obj.get("type") if isinstance(obj, dict) else None
    if kind == "byte_bpe":
        return ByteLevelBPE.from_dict(obj, where)
    if kind == "char":
        return CharTokenizer.from_dict(obj, where)
    raise UserError(f"{where} is not a tokenizer of this course (type {kind!r}, expected 'byte_bpe' or 'char')")
