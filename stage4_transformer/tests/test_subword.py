"""The joint subword vocabulary: exact round trip, fixed special ids, JSON save and load."""
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
