"""The shared English-French corpus readers and BLEU scoring (scripts/translation_data.py)."""
import gzip

import pytest

from scripts.common import UserError
from scripts.translation_data import corpus_scores, load_pairs, read_parallel, split_by_source


def write(path, lines):
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write("".join(line + "\n" for line in lines))


def test_misaligned_files_and_empty_lines_are_named(tmp_path):
    write(tmp_path / "a.en.gz", ["A dog.", "A cat."])
    write(tmp_path / "a.fr.gz", ["Un chien."])
    with pytest.raises(UserError, match=r"has 2 lines but .*a.fr.gz has 1: the files must be line-aligned"):
        read_parallel(tmp_path / "a.en.gz", tmp_path / "a.fr.gz")
    write(tmp_path / "a.fr.gz", ["Un chien.", "  "])
    with pytest.raises(UserError, match=r"a.fr.gz, line 2: empty sentence"):
        read_parallel(tmp_path / "a.en.gz", tmp_path / "a.fr.gz")
    write(tmp_path / "a.fr.gz", ["Un chien.", "Un\x0cchat."])                 # only \n ends a line
    assert read_parallel(tmp_path / "a.en.gz", tmp_path / "a.fr.gz")[1] == ("A cat.", "Un\x0cchat.")
    write(tmp_path / "a.en.gz", [])
    with pytest.raises(UserError, match=r"a.en.gz is empty"):
        read_parallel(tmp_path / "a.en.gz", tmp_path / "a.fr.gz")


def test_loaders_read_the_real_formats(mt_data):
    train = load_pairs("multi30k", "train", str(mt_data))
    assert len(train) == 600 and all(e.endswith(".") and f.endswith(".") for e, f in train)
    splits = {s: load_pairs("tatoeba", s, str(mt_data)) for s in ("train", "valid", "test")}
    assert sum(len(p) for p in splits.values()) == 900
    sources = {s: {e for e, _ in p} for s, p in splits.items()}
    assert not (sources["train"] & sources["test"]) and not (sources["valid"] & sources["test"])
    assert splits["test"] == load_pairs("tatoeba", "test", str(mt_data))      # a fixed split


def test_tatoeba_malformed_line_and_missing_data(tmp_path, monkeypatch):
    monkeypatch.delenv("MY_LLM_DATA", raising=False)
    (tmp_path / "fra_eng_tatoeba").mkdir()
    write(tmp_path / "fra_eng_tatoeba" / "fra.txt.gz", ["Go.\tVa !", "no tab here"])
    with pytest.raises(UserError, match=r"fra.txt.gz, line 2: expected 'english<TAB>french'"):
        load_pairs("tatoeba", "train", str(tmp_path))
    with pytest.raises(UserError, match=r"--data_dir: .*multi30k lacks train.en.gz, train.fr.gz of multi30k"):
        load_pairs("multi30k", "train", str(tmp_path))
    with pytest.raises(UserError, match=r"no local copy of multi30k .* pass --data_dir"):   # no --data_dir
        load_pairs("multi30k", "train", None)


def test_a_tiny_tatoeba_file_is_refused_naming_it(tmp_path):
    (tmp_path / "fra_eng_tatoeba").mkdir()
    write(tmp_path / "fra_eng_tatoeba" / "fra.txt.gz", ["Go.\tVa !", "Hi.\tSalut !", "Run!\tCours !"])
    with pytest.raises(UserError, match=r"fra.txt.gz holds 3 distinct English sentences; .* need at least 40"):
        load_pairs("tatoeba", "test", str(tmp_path))


def test_split_by_source_groups_translations_of_one_sentence():
    pairs = [(f"s{i % 50}", f"t{i}") for i in range(200)]
    split = split_by_source(pairs, held_out=5, seed=1)
    assert sum(len(v) for v in split.values()) == 200
    for name in ("valid", "test"):
        assert len({e for e, _ in split[name]}) == 5 and len(split[name]) == 20


def test_corpus_scores_use_sacrebleu_on_detokenised_text():
    scores = corpus_scores(["Un homme court dans le parc."], ["Un homme court dans le parc."])
    assert scores["bleu"] == 100.0 and scores["chrf"] == 100.0
    assert scores["bleu_signature"].startswith("nrefs:1|case:mixed|eff:no|tok:13a")
    assert corpus_scores(["Un chien."], ["Un homme court dans le parc."])["bleu"] < 20
