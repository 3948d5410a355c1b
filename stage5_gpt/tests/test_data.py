"""Text loading, the Gutenberg rebuild recipe, the token cache and the exact-evaluation windows."""
import gzip
import hashlib
import json

import numpy as np
import pytest

from scripts.common import UserError
from stage5_gpt.data import corpus

RAW_BOOK = ("\ufeffThe Project Gutenberg eBook of Something\r\nLicence words\r\n"
            "*** START OF THE PROJECT GUTENBERG EBOOK SOMETHING ***\r\n\r\n\r\nCHAPTER I\r\nCafe\u0301 story.\r\n\r\n"
            "*** END OF THE PROJECT GUTENBERG EBOOK SOMETHING ***\r\nMore licence\r\n")


def test_clean_gutenberg_keeps_only_the_book():
    assert corpus.clean_gutenberg(RAW_BOOK) == "CHAPTER I\nCafé story.\n"   # NFC: e + accent -> é


def test_gutenberg_is_rebuilt_from_the_book_list_when_no_copy_exists(tmp_path, monkeypatch):
    """Each book of the list from its pinned source file, cleaned and checked against its pinned checksum (here every
    book is the same fake one, and the list is pinned to its checksum)."""
    fetched = []
    raw = RAW_BOOK.replace("story.", "story. " * 40)

    def fake_download(url, dest, timeout=30.0):
        fetched.append(url)
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(raw, encoding="utf-8")
        return dest
    books = json.loads(corpus.GUTENBERG_BOOKS.read_text(encoding="utf-8"))
    digest = hashlib.sha256(corpus.clean_gutenberg(raw).encode("utf-8")).hexdigest()
    (tmp_path / "books.json").write_text(json.dumps([{**book, "sha256": digest} for book in books]))
    monkeypatch.setattr(corpus, "GUTENBERG_BOOKS", tmp_path / "books.json")
    monkeypatch.setattr(corpus, "download", fake_download)
    monkeypatch.setattr(corpus, "cache_dir", lambda name: tmp_path / name)
    monkeypatch.delenv("MY_LLM_DATA", raising=False)
    splits = corpus.load_text("gutenberg", None)
    pinned = "https://raw.githubusercontent.com/RU-ECE/ECE451-Parallel/c58dca3a6abedd8041057571c247e9a393cc3b4d/data/"
    assert len(fetched) == 111 and all(u.startswith(pinned) for u in fetched)
    assert splits["train"].count("\n<|endoftext|>\n") == 105 and splits["val"].count("\n<|endoftext|>\n") == 6
    with gzip.open(tmp_path / "gutenberg_en" / "valid.txt.gz", "rt", encoding="utf-8") as f:
        assert f.read() == splits["val"]


def test_prepare_tokenises_once_then_memory_maps(lm_data, tmp_path):
    logs = []
    make = lambda splits: corpus.train_tokenizer("char", splits)  # noqa: E731
    data = corpus.prepare("shakespeare", str(lm_data), make, "t", cache_root=tmp_path, log=logs.append)
    text = (lm_data / "tiny_shakespeare" / "input.txt").read_text()
    assert isinstance(data.train, np.memmap) and data.train.dtype == np.uint16
    assert data.tokenizer.decode(data.train[:50].tolist()) == text[:50]
    assert len(data.train) + len(data.val) == len(text) and len(logs) == 3
    again = corpus.prepare("shakespeare", str(lm_data), lambda _: pytest.fail("retrained"), "t", cache_root=tmp_path)
    assert np.array_equal(again.val, data.val)
    with pytest.raises(UserError, match="is not a folder"):   # a wrong --data_dir is refused even from the cache
        corpus.prepare("shakespeare", str(tmp_path / "nowhere"), make, "t", cache_root=tmp_path)
    limited = corpus.prepare("shakespeare", str(lm_data), make, "t", limit=500, cache_root=tmp_path)
    assert len(limited.train) == 500 and limited.tokenizer.fingerprint() == data.tokenizer.fingerprint()
    (tmp_path / "t" / "val.bin").write_bytes(b"\0\0")
    with pytest.raises(UserError, match="incomplete"):
        corpus.prepare("shakespeare", str(lm_data), make, "t", cache_root=tmp_path)


@pytest.mark.parametrize("n, block, batch", [(101, 10, 3), (100, 10, 4), (12, 16, 2)])
def test_sequential_windows_predict_every_token_once(n, block, batch):
    ids = np.arange(n)
    xs, ys = [], []
    for x, y in corpus.sequential_windows(ids, block, batch):
        assert x.shape == y.shape and x.size(0) <= batch and x.size(1) <= block
        assert bool((y == x + 1).all())
        xs += x.flatten().tolist()
        ys += y.flatten().tolist()
    assert ys == list(range(1, n)) and xs == list(range(0, n - 1))


def test_unknown_dataset_and_truncated_files(tmp_path):
    with pytest.raises(UserError, match="unknown dataset"):
        corpus.load_text("wikipedia", None)
    (tmp_path / "tiny_shakespeare").mkdir()
    (tmp_path / "tiny_shakespeare" / "input.txt").write_text("too short")
    with pytest.raises(UserError, match="truncated"):
        corpus.load_text("shakespeare", str(tmp_path))
