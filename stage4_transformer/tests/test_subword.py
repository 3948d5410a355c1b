"""The joint subword vocabulary: exact round trip, fixed special ids, JSON save and load, BPE-dropout."""
import random

import pytest

from scripts.common import UserError
from stage4_transformer.data.batches import BpeDropout, encode_pairs
from stage4_transformer.data.subword import EOS_ID, PAD_ID, UNK_ID, SubwordVocab

TEXTS = ["A man is riding a skateboard.", "Un homme fait du skateboard.", "Two dogs play in the snow.",
         "Deux chiens jouent dans la neige.", "L'homme regarde l'eau bleue."] * 20


def test_round_trip_and_specials():
    vocab = SubwordVocab.train(TEXTS, vocab_size=200, min_frequency=1)
    for text in ["Un homme fait du skateboard.", "skateboarders  play\u00a0in the water.", "L'eau regarde dogs."]:
        assert vocab.decode(vocab.encode(text)) == " ".join(text.split())
    assert UNK_ID in vocab.encode("Zwölf")                     # characters never seen in training: <unk>
    ids = vocab.encode("Un homme.")
    assert vocab.decode([*ids, EOS_ID, 7, 8]) == "Un homme." and vocab.decode([PAD_ID, *ids]) == "Un homme."
    assert vocab.pieces("Un homme")[0].startswith("▁")


def test_json_round_trip_and_bad_files():
    vocab = SubwordVocab.train(TEXTS, vocab_size=150, min_frequency=1)
    again = SubwordVocab.from_json(vocab.to_json())
    assert len(again) == len(vocab) and again.encode("Deux chiens") == vocab.encode("Deux chiens")
    with pytest.raises(UserError, match="not a subword vocabulary"):
        SubwordVocab.from_json('{"nope": 1}')


def test_written_out_bpe_matches_the_library():
    vocab = SubwordVocab.train(TEXTS, vocab_size=150, min_frequency=1)
    for text in TEXTS[:5] + ["skateboarders play in the water.", "Zwölf chiens."]:
        pieces = [piece for word in vocab.words(text) for piece in vocab.segment(word)]
        assert vocab.piece_ids(pieces) == vocab.encode(text), text        # an unseen character: <unk> in both
        if "Z" not in text:
            assert pieces == vocab.pieces(text), text


def test_bpe_dropout_splits_words_into_known_pieces():
    vocab = SubwordVocab.train(TEXTS, vocab_size=200, min_frequency=1)
    rng, plain = random.Random(0), vocab.segment("▁skateboard")
    samples = [vocab.segment("▁skateboard", 0.3, rng) for _ in range(200)]
    assert all("".join(s) == "▁skateboard" and UNK_ID not in vocab.piece_ids(s) for s in samples)
    assert plain in samples and len({tuple(s) for s in samples}) > 3          # mostly plain, sometimes finer
    assert all(len(s) >= len(plain) for s in samples)
    assert vocab.segment("▁skateboard", 1.0, rng) == list("▁skateboard")     # every merge skipped: characters


def test_bpe_dropout_epochs_are_seeded_and_keep_the_pairs():
    pairs = list(zip(TEXTS[0::2], TEXTS[1::2]))
    vocab = SubwordVocab.train(TEXTS, vocab_size=200, min_frequency=1)
    sampler = BpeDropout(vocab, pairs, 0.3, seed=1)
    one, two = sampler.examples(1), sampler.examples(2)
    assert one == BpeDropout(vocab, pairs, 0.3, seed=1).examples(1) and one != two   # resumable, new each epoch
    plain = encode_pairs(pairs, vocab)
    for (src, tgt), (src_plain, tgt_plain), (src_text, tgt_text) in zip(one, plain, pairs):
        assert vocab.decode(src) == src_text and vocab.decode(tgt) == tgt_text and tgt[-1] == EOS_ID
        assert len(src) >= len(src_plain) and len(tgt) >= len(tgt_plain)
    assert sum(len(t) for _, t in one) > sum(len(t) for _, t in plain)
    reachable = sampler.target_piece_ids()                      # --output_vocab target's softmax covers every
    assert all(set(t) <= reachable for epoch in (1, 2, 3) for _, t in sampler.examples(epoch))   # epoch's labels
    assert reachable > {i for _, t in plain for i in t}         # including pieces plain BPE never cuts
    short = max(len(t) for _, t in plain) - 2                   # --max_len drops the same pairs as plain BPE
    kept = BpeDropout(vocab, pairs, 0.3, seed=1, max_len=short).examples(1)
    assert len(kept) == len(encode_pairs(pairs, vocab, short)) < len(pairs)


def test_split_punctuation_keeps_marks_out_of_the_words_and_decodes_exactly():
    glued = SubwordVocab.train(TEXTS, vocab_size=200, min_frequency=1)
    split = SubwordVocab.train(TEXTS, vocab_size=200, min_frequency=1, split_punctuation=True)
    assert "▁neige." in glued.pieces("dans la neige.")                        # a merge spent on a glued full stop
    assert split.pieces("dans la neige.")[-2:] == ["▁neige", "."]
    assert split.words("L'homme regarde, l'eau.") == ["▁L", "'", "homme", "▁regarde", ",", "▁l", "'", "eau", "."]
    assert not any(p != "." and p.endswith(".") for p in split.tokenizer.get_vocab())
    for text in ["L'homme regarde l'eau bleue.", "Un homme . Deux chiens.", "l'eau.L'homme"]:  # seen characters
        assert split.decode(split.encode(text)) == text                          # spaces come only from "▁"
        pieces = [piece for word in split.words(text) for piece in split.segment(word)]
        assert pieces == split.pieces(text)                                      # BPE-dropout sees the same words
    again = SubwordVocab.from_json(split.to_json())
    assert again.pieces("la neige.") == split.pieces("la neige.")               # the pre-tokenizer is saved too


def test_join_elisions_keeps_the_apostrophe_on_the_word_before_it():
    joined = SubwordVocab.train(TEXTS, vocab_size=200, min_frequency=1, split_punctuation=True, join_elisions=True)
    assert joined.words("L'homme regarde, l'eau.") == ["▁L'", "homme", "▁regarde", ",", "▁l'", "eau", "."]
    assert joined.words("A man's hat (red) costs 5$.") == ["▁A", "▁man'", "s", "▁hat", "▁", "(", "red", ")",
                                                           "▁costs", "▁5", "$", "."]  # as --split_punctuation does
    assert "▁l'" in joined.tokenizer.get_vocab()                                # a frequent elision is one piece
    for text in ["L'homme regarde l'eau bleue.", "l'eau.L'homme", "Deux chiens ' jouent'."]:
        assert joined.decode(joined.encode(text)) == text
        pieces = [piece for word in joined.words(text) for piece in joined.segment(word)]
        assert pieces == joined.pieces(text)                                     # BPE-dropout sees the same words
    again = SubwordVocab.from_json(joined.to_json())
    assert again.pieces("l'eau.") == joined.pieces("l'eau.")                    # the pre-tokenizer is saved too
    with pytest.raises(UserError, match="--join_elisions 1 needs --split_punctuation 1"):
        SubwordVocab.train(TEXTS, vocab_size=200, min_frequency=1, join_elisions=True)
