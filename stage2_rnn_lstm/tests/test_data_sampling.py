"""Vocabularies, the two corpora, BPTT batching, and the sampling rules."""
import gzip

import pytest
import torch

from scripts.common import UserError
from stage2_rnn_lstm.data.corpus import EOS, UNK, Vocabulary, batchify, bptt_batches, load_corpus, num_batches
from stage2_rnn_lstm.models.rnn_lm import sample_next


def test_vocabulary_json_round_trip_and_unknowns(tmp_path):
    vocab = Vocabulary.build(list("hello world"), "char")
    assert vocab.itos[0] == UNK and vocab.itos[1] == "l"  # most frequent first
    vocab.save(tmp_path / "v.json")
    again = Vocabulary.load(tmp_path / "v.json")
    assert again.itos == vocab.itos and again.kind == "char"
    assert vocab.decode(vocab.encode(list("hello"))) == "hello"
    assert vocab.encode(list("hé"))[1].item() == vocab.unk_id and vocab.unknown(list("hé")) == ["é"]
    words = Vocabulary.build("the cat the dog".split(), "word")
    assert words.itos[:3] == [UNK, EOS, "the"] and words.split("The CAT") == ["the", "cat"]
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(UserError, match="not a stage 2 vocabulary"):
        Vocabulary.load(tmp_path / "bad.json")
    (tmp_path / "cut.json").write_text('{"itos": ["<unk>", "a"')
    with pytest.raises(UserError, match="not valid JSON"):
        Vocabulary.load(tmp_path / "cut.json")


def test_batchify_and_bptt_walk_contiguous_streams():
    data = batchify(torch.arange(103), 4)            # 4 streams of 25 tokens
    assert data.shape == (4, 25) and data[1, 0].item() == 25
    batches = list(bptt_batches(data, 10))
    assert len(batches) == num_batches(data, 10) == 3
    inputs, targets = batches[0]
    assert torch.equal(targets, inputs + 1)          # targets are the next tokens
    assert batches[1][0][0, 0].item() == 10          # batch 2 continues where batch 1 stopped
    assert batches[-1][0].shape == (4, 4)            # the last one is shorter: 24 predictions per stream
    assert len(list(bptt_batches(data, 10, start=2))) == 1
    with pytest.raises(UserError, match="too few for --batch_size 4"):
        batchify(torch.arange(5), 4)


def test_corpora_from_local_copies(lm_data):
    chars, kind = load_corpus("shakespeare", str(lm_data))
    assert kind == "char" and chars["train"][:6] == list("First ")
    total = len(chars["train"]) + len(chars["valid"])
    assert len(chars["train"]) == int(0.9 * total)
    words, kind = load_corpus("ptb", str(lm_data))
    assert kind == "word" and set(words) == {"train", "valid", "test"} and words["train"].count(EOS) == 400


def test_ptb_empty_line_and_missing_data(tmp_path, monkeypatch):
    monkeypatch.delenv("MY_LLM_DATA", raising=False)
    (tmp_path / "ptb").mkdir()
    for split in ("train", "valid", "test"):
        with gzip.open(tmp_path / "ptb" / f"ptb.{split}.txt.gz", "wt") as f:
            f.write(" a b \n\n c d \n")
    with pytest.raises(UserError, match=r"ptb\.train\.txt\.gz:2: empty line"):
        load_corpus("ptb", str(tmp_path))
    (tmp_path / "nothing").mkdir()
    with pytest.raises(UserError, match="lacks input.txt of tiny_shakespeare"):
        load_corpus("shakespeare", str(tmp_path / "nothing"))


def test_real_ptb_and_shakespeare_slices(real_data):
    with gzip.open(real_data / "ptb" / "ptb.valid.txt.gz", "rt") as f:
        first = f.readline().split()
    assert first[:3] == ["consumers", "may", "want"]
    text = (real_data / "tiny_shakespeare" / "input.txt").read_text()[:2000]
    vocab = Vocabulary.build(list(text), "char")
    assert vocab.decode(vocab.encode(list(text))) == text


def test_sampling_rules():
    logits = torch.tensor([1.0, 3.0, 2.0, 0.5])
    assert sample_next(logits, temperature=0) == 1                       # greedy
    g = torch.Generator().manual_seed(0)
    assert {sample_next(logits, 1.0, top_k=1, generator=g) for _ in range(20)} == {1}
    assert {sample_next(logits, 1.0, top_p=0.01, generator=g) for _ in range(20)} == {1}
    # top-p keeps the token that crosses p: p(1)=0.63 < 0.7, so {1, 2} stay and 0, 3 never appear
    drawn = {sample_next(logits, 1.0, top_p=0.7, generator=g) for _ in range(200)}
    assert drawn == {1, 2}
    # a low temperature concentrates the mass, a high one spreads it
    cold = [sample_next(logits, 0.1, generator=g) for _ in range(200)]
    hot = [sample_next(logits, 5.0, generator=g) for _ in range(400)]
    assert cold.count(1) > 190 and len(set(hot)) == 4


def test_next_token_probs_is_what_sample_next_draws_from():
    from stage2_rnn_lstm.models.rnn_lm import next_token_probs
    logits = torch.tensor([2.0, 1.0, 0.5, -1.0])
    assert next_token_probs(logits, 0.0).tolist() == [1.0, 0.0, 0.0, 0.0]
    probs = next_token_probs(logits, 1.0, top_k=2)
    assert abs(float(probs.sum()) - 1) < 1e-6 and (probs[2:] == 0).all()
    g = torch.Generator().manual_seed(0)
    draws = {sample_next(logits, 0.7, top_p=0.9, generator=g) for _ in range(300)}
    assert draws <= set(next_token_probs(logits, 0.7, top_p=0.9).nonzero().flatten().tolist()) and len(draws) > 1
