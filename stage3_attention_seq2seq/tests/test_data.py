"""Tokenizer, vocabularies and batches (the corpus readers are tested in scripts/tests)."""
import gzip

import pytest

from scripts.common import UserError
from stage3_attention_seq2seq.data.translation import (
    EOS_ID,
    PAD_ID,
    UNK_ID,
    Vocabulary,
    bucketed_batches,
    detokenize,
    encode_pairs,
    load_vocabularies,
    save_vocabularies,
    tokenize,
)


@pytest.mark.parametrize("text, tokens", [
    ("Un homme, l'air fatigué.", ["Un", "homme", "##,", "l'", "air", "fatigué", "##."]),
    ("Qu'est-ce que c'est ?", ["Qu'", "est", "##-", "##ce", "que", "c'", "est", "?"]),
    ("A man's 3.5-inch \"hat\"!", ["A", "man'", "s", "3", "##.", "##5", "##-", "##inch", '"', '##hat', '##"', "##!"]),
])
def test_tokenize_marks_glued_tokens_and_detokenize_inverts_it(text, tokens):
    assert tokenize(text) == tokens
    assert detokenize(tokens) == text


def test_detokenize_skips_specials_and_tokenize_normalises_spaces():
    assert detokenize(["<bos>", "Un", "chat", "##.", "<eos>"]) == "Un chat."
    assert detokenize(tokenize("  Deux   chiens\u202f! ")) == "Deux chiens !"


def test_tokenizer_is_reversible_on_real_multi30k(real_data):
    lines = []
    for name in ("train.fr.gz", "test_2016_flickr.fr.gz", "test_2016_flickr.en.gz"):
        with gzip.open(real_data / "multi30k" / name, "rt", encoding="utf-8") as f:
            lines += f.read().splitlines()[:3000]
    broken = [line for line in lines if detokenize(tokenize(line)) != " ".join(line.split())]
    assert len(broken) <= len(lines) // 1000, broken[:5]


def test_unknown_words_are_copied_from_the_most_attended_source_word():
    import torch

    from stage3_attention_seq2seq.translator import replace_unknowns
    source = ["A", "man", "on", "the", "Titanic", "##."]
    attention = torch.zeros(5, 7)
    for row, column in enumerate([0, 1, 4, 5, 6]):    # "<unk>" at rows 2 (-> Titanic) and 3 (-> "##.")
        attention[row, column] = 1.0
    tokens, kept = replace_unknowns(["Un", "homme", "<unk>", "<unk>", "sur"], source, attention)
    assert tokens == ["Un", "homme", "Titanic", "sur"] and kept == [0, 1, 2, 4]
    assert detokenize(tokens) == "Un homme Titanic sur"


def test_vocabulary_min_freq_unknowns_and_json(tmp_path):
    sentences = [["a", "b", "a"], ["a", "c"], ["b"]]
    vocab = Vocabulary.build(sentences, min_freq=2)
    assert vocab.itos == ["<pad>", "<unk>", "<bos>", "<eos>", "a", "b"]
    assert vocab.encode(["a", "c", "zzz"]) == [4, UNK_ID, UNK_ID]
    assert vocab.decode([4, 5, EOS_ID, 4]) == ["a", "b"]
    save_vocabularies(tmp_path / "v.json", vocab, vocab)
    src, tgt = load_vocabularies(tmp_path / "v.json")
    assert src.itos == tgt.itos == vocab.itos
    (tmp_path / "bad.json").write_text('{"source": {"itos": ["x", "y", "z", "w", "v"]}, "target": {"itos": ["x"]}}')
    with pytest.raises(UserError, match="must start with"):
        load_vocabularies(tmp_path / "bad.json")


def test_bucketed_batches_cover_everything_once_and_resume_exactly():
    examples = encode_pairs([(f"w{i % 7} " * (1 + i % 9), "x " * (1 + i % 5)) for i in range(103)],
                            Vocabulary.build([["w1"]], 1), Vocabulary.build([["x"]], 1))
    batches = list(bucketed_batches(examples, 10, shuffle=True, seed=3, epoch=2))
    seen = sorted(i for b in batches for i in b.indices)
    assert seen == list(range(103))
    again = list(bucketed_batches(examples, 10, shuffle=True, seed=3, epoch=2, start=4))
    assert [b.indices for b in again] == [b.indices for b in batches[4:]]
    assert [b.indices for b in bucketed_batches(examples, 10, True, 3, 3)] != [b.indices for b in batches]
    for batch in batches:
        lengths = (batch.src != PAD_ID).sum(1)
        assert lengths.tolist() == batch.src_lengths.tolist() and lengths.max() - lengths.min() <= 2
        assert all(batch.src[i, n - 1] == EOS_ID for i, n in enumerate(batch.src_lengths.tolist()))
