"""The joint subword vocabulary: exact round trip, fixed special ids, JSON save and load, split punctuation."""
import itertools

import pytest

from scripts.common import UserError
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


def ends(parts: list[str]) -> set[int]:
    """Where each part ends, counted in characters of the parts joined."""
    return set(itertools.accumulate(len(part) for part in parts))


def test_split_punctuation_keeps_marks_out_of_the_words_and_decodes_exactly():
    glued = SubwordVocab.train(TEXTS, vocab_size=200, min_frequency=1)
    split = SubwordVocab.train(TEXTS, vocab_size=200, min_frequency=1, split_punctuation=True)
    assert "▁neige." in glued.pieces("dans la neige.")                        # a merge spent on a glued full stop
    assert split.pieces("dans la neige.")[-2:] == ["▁neige", "."]
    assert split.words("L'homme regarde, l'eau.") == ["▁L", "'", "homme", "▁regarde", ",", "▁l", "'", "eau", "."]
    assert not any(p != "." and p.endswith(".") for p in split.tokenizer.get_vocab())
    for text in ["L'homme regarde l'eau bleue.", "Un homme . Deux chiens.", "l'eau.L'homme"]:  # seen characters
        assert split.decode(split.encode(text)) == text                          # spaces come only from "▁"
        words, pieces = split.words(text), split.pieces(text)
        assert "".join(pieces) == "".join(words) and ends(words) <= ends(pieces)  # no piece spans two words
    again = SubwordVocab.from_json(split.to_json())
    assert again.pieces("la neige.") == split.pieces("la neige.")               # the pre-tokenizer is saved too
