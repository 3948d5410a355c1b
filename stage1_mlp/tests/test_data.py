"""Turning text into n-gram features: tokenizer, vocabulary, hashing, batches."""
import json

import numpy as np
import pytest

from scripts.common import UserError
from stage1_mlp.data.features import FeatureSet, Featurizer, tokenize


def test_tokenizer_lowercases_drops_html_and_keeps_exclamations():
    assert tokenize("Great film!<br /><br />I DIDN'T like the end?") == \
        ["great", "film", "!", "i", "didn't", "like", "the", "end", "?"]
    assert tokenize("...") == []


def test_featurizer_words_and_hashed_ngrams():
    texts = [tokenize("not good at all"), tokenize("good good film"), tokenize("not a film")]
    fz = Featurizer.build(texts, min_freq=2, ngrams=3, buckets=1000)
    assert fz.itos[0] == "<unk>" and set(fz.itos[1:]) == {"good", "not", "film"}
    feats = fz.features(tokenize("not good at all"))
    words = {fz.stoi["not"], fz.stoi["good"], 0}  # "at" and "all" are rare: <unk>
    assert words <= set(feats.tolist())
    assert len(feats) == len(set(feats.tolist()))  # a set: every feature once
    ngram_ids = [f for f in feats.tolist() if f >= fz.num_words]
    assert len(ngram_ids) >= 4 and max(ngram_ids) < fz.num_features  # 3 bigrams + 2 trigrams, in range
    # hashing is a pure function of the word ids: the same text always maps to the same features
    assert np.array_equal(feats, fz.features(tokenize("NOT good at ALL")))
    # order matters inside an n-gram
    assert not np.array_equal(fz.features(["good", "not"]), fz.features(["not", "good"]))


def test_featurizer_json_round_trip(tmp_path):
    fz = Featurizer.build([tokenize("a b c a b a")], min_freq=1, ngrams=2, buckets=50)
    fz.save(tmp_path / "vocab.json")
    obj = json.loads((tmp_path / "vocab.json").read_text())
    assert obj["itos"][:2] == ["<unk>", "a"]  # readable by a person
    again = Featurizer.load(tmp_path / "vocab.json")
    assert again.itos == fz.itos and again.buckets == 50
    assert np.array_equal(again.features(["a", "b"]), fz.features(["a", "b"]))
    (tmp_path / "bad.json").write_text('{"itos": []}')
    with pytest.raises(UserError, match="not a stage 1 vocabulary"):
        Featurizer.load(tmp_path / "bad.json")


def test_feature_set_batches_are_embedding_bag_inputs():
    fz = Featurizer.build([tokenize("a b c d")], min_freq=1, ngrams=1)
    data = FeatureSet.from_texts(fz, ["a b", "c", "d a b"], [0, 1, 0])
    ids, offsets, labels = data.batch(np.array([2, 1]))
    assert offsets.tolist() == [0, 3] and labels.tolist() == [0, 1]
    assert sorted(ids[:3].tolist()) == sorted([fz.stoi["d"], fz.stoi["a"], fz.stoi["b"]])
    assert [len(b[2]) for b in data.batches(2)] == [2, 1]
    assert [len(b[2]) for b in data.batches(2, start=1)] == [1]  # resume skips done batches
