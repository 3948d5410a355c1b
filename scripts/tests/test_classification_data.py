"""Reading IMDb and AG News: every row checked, bad rows named by file and line, clear missing-data errors."""
import gzip
import itertools
import shutil

import pytest

from scripts.classification_data import load_split, read_ag_news_csv, read_imdb_jsonl, train_val_split
from scripts.common import UserError


def test_ag_news_csv_reading_and_cleaning(tiny_data):
    texts, labels = read_ag_news_csv(tiny_data / "ag_news" / "train.csv")
    assert len(texts) == 200 and set(labels) == {0, 1, 2, 3}
    assert "It's news." in texts[0] and "\\n" not in texts[0]


@pytest.mark.parametrize("row, message", [
    ('"5","Title","Body"', r"bad\.csv:2: class '5' is not in 1\.\.4"),
    ('"2","Only a title"', r"bad\.csv:2: expected 3 fields"),
    ('"x","Title","Body"', r"bad\.csv:2: class 'x'"),
    ('"1","",""', r"bad\.csv:2: empty text"),
])
def test_ag_news_bad_rows_name_file_and_line(tmp_path, row, message):
    path = tmp_path / "bad.csv"
    path.write_text('"3","Fine","A good row"\n' + row + "\n")
    with pytest.raises(UserError, match=message):
        read_ag_news_csv(path)


@pytest.mark.parametrize("line, message", [
    ('{"text": "ok", "label": 2}', r"bad\.jsonl\.gz:2: label 2 is not 0 or 1"),
    ('{"label": 1}', r"bad\.jsonl\.gz:2: missing field"),
    ('{"text": "  ", "label": 1}', r"bad\.jsonl\.gz:2: empty text"),
    ("not json", r"bad\.jsonl\.gz:2: not a JSON object"),
])
def test_imdb_bad_rows_name_file_and_line(tmp_path, line, message):
    path = tmp_path / "bad.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write('{"text": "fine", "label": 0}\n' + line + "\n")
    with pytest.raises(UserError, match=message):
        read_imdb_jsonl(path)


def test_truncated_gzip_is_a_user_error(tmp_path, tiny_data):
    data = (tiny_data / "imdb" / "train.jsonl.gz").read_bytes()
    (tmp_path / "cut.jsonl.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="not a complete gzip file"):
        read_imdb_jsonl(tmp_path / "cut.jsonl.gz")


def test_missing_data_and_no_network_says_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.delenv("MY_LLM_DATA", raising=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError) as info:
        load_split("imdb", "train", str(tmp_path / "empty"))
    message = str(info.value)
    assert "train.jsonl.gz" in message and str(tmp_path / "empty") in message and "MY_LLM_DATA" in message
    with pytest.raises(UserError, match="unknown dataset 'mnist'"):
        load_split("mnist", "train")


def test_validation_split_is_fixed_by_seed_and_disjoint():
    train_a, val_a = train_val_split(100, 0.1, seed=0)
    train_b, val_b = train_val_split(100, 0.1, seed=0)
    assert train_a.tolist() == train_b.tolist() and len(val_a) == 10
    assert not set(train_a.tolist()) & set(val_a.tolist())
    assert train_val_split(100, 0.1, seed=1)[1].tolist() != val_a.tolist()


def test_real_imdb_and_ag_news_slices(real_data, tmp_path):
    """The first rows of the real files parse, with the documented labels and cleaning."""
    with gzip.open(real_data / "imdb" / "test.jsonl.gz", "rt", encoding="utf-8") as src, \
            gzip.open(tmp_path / "imdb.jsonl.gz", "wt", encoding="utf-8") as dst:
        dst.writelines(itertools.islice(src, 200))
    texts, labels = read_imdb_jsonl(tmp_path / "imdb.jsonl.gz")
    assert len(texts) == 200 and set(labels) == {0}  # the file is sorted: negatives first
    assert texts[0].startswith("Once again Mr. Costner")
    with open(real_data / "ag_news" / "test.csv", encoding="utf-8") as src:
        (tmp_path / "ag.csv").write_text("".join(itertools.islice(src, 300)), encoding="utf-8")
    texts, labels = read_ag_news_csv(tmp_path / "ag.csv")
    assert len(texts) == 300 and set(labels) <= {0, 1, 2, 3} and len(set(labels)) == 4
    assert not any("#39;" in t or "\\n" in t for t in texts)


def test_ag_news_train_split_is_missing_here_and_the_error_says_so(real_data, tmp_path, monkeypatch):
    """The shared copy has only test.csv: asking for train must fail clearly, not with a traceback."""
    monkeypatch.delenv("MY_LLM_DATA", raising=False)
    shutil.copytree(real_data / "ag_news", tmp_path / "ag_news")
    with pytest.raises(UserError, match=r"lacks train\.csv of ag_news.*IMDb works offline"):
        load_split("ag_news", "train", str(tmp_path))
    assert len(load_split("ag_news", "test", str(tmp_path))) == 7600


def test_a_training_file_of_one_class_is_refused(tmp_path):
    (tmp_path / "imdb").mkdir()
    with gzip.open(tmp_path / "imdb" / "train.jsonl.gz", "wt", encoding="utf-8") as f:
        f.write("".join(f'{{"text": "bad film {i}", "label": 0}}\n' for i in range(20)))
    with pytest.raises(UserError, match="holds only texts of class 0; a classifier learns nothing from one class"):
        load_split("imdb", "train", str(tmp_path))
