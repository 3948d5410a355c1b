"""Reading the course's two classification data sets: AG News (4 topics) and IMDb (2 sentiments).

Shared by every stage that classifies text (the MLP of stage 1, the LSTM of stage 2, ...), so they
all read the same files the same way and are measured on the same test sets.

Each loader looks for a local copy first (`--data_dir`, then `$MY_LLM_DATA`; the formats are those of
`../shared/data/ag_news` and `../shared/data/imdb`), then downloads through Hugging Face `datasets`.
Every row is checked: a bad label, a missing field or an empty text names its file and line.
"""
from __future__ import annotations

import csv
import html
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from scripts.common import UserError, find_local_data, missing_data_error, read_text

DATASETS = ("imdb", "ag_news")
AG_NEWS_CLASSES = ["World", "Sports", "Business", "Sci/Tech"]
IMDB_CLASSES = ["negative", "positive"]
_BARE_ENTITY = re.compile(r"&?#(\d+);")  # "#39;" or "&#39;"
# the sha256 of the shared copies (imdb/ and ag_news/ MANIFEST.md): what the benches publish results of
IMDB_SHA256 = {"train.jsonl.gz": "f18a43e9b40d29993a738d4db28a78acc72ef9b8cef1498902ca16102a6720eb",
               "test.jsonl.gz": "e92bb9153e119326672687acb81fda0f4c46f1614d9541702735fb0a4000ce7f"}
AG_NEWS_SHA256 = {"train.csv": None,      # the shared copy holds the test split only: no reference training split
                  "test.csv": "521465c2428ed7f02f8d6db6ffdd4b5447c1c701962353eb2c40d548c3c85699"}
MAX_FIELD = 1_000_000   # characters in one text: the longest IMDb review has ~14k, an AG News story ~1k


@dataclass
class TextDataset:
    """Texts with integer labels in 0..len(classes)-1."""

    texts: list[str]
    labels: list[int]
    classes: list[str]
    source: str  # where it was read from, for the log

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, indices: list[int] | torch.Tensor) -> "TextDataset":
        idx = [int(i) for i in indices]
        return TextDataset([self.texts[i] for i in idx], [self.labels[i] for i in idx], self.classes, self.source)


def clean_ag_news(text: str) -> str:
    """AG News escapes newlines as a literal backslash-n and HTML entities as `#39;` (no ampersand)."""
    text = text.replace("\\n", " ").replace("\\", " ").replace(" #39;", "#39;")  # "Bush #39;s" -> "Bush's"
    return html.unescape(_BARE_ENTITY.sub(r"&#\1;", text))


def read_ag_news_csv(path: Path, num_classes: int = 4) -> tuple[list[str], list[int]]:
    """Official AG News CSV: `"class 1-4","title","description"`, no header. The class may be written with any
    digits ('３' is 3); a field longer than MAX_FIELD characters, a NUL byte or bytes that are not UTF-8 are
    errors naming the line."""
    text = read_text(path, "AG News file")
    texts, labels = [], []
    reader = csv.reader(io.StringIO(text, newline=""))
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as err:
            raise UserError(f"{path}:{reader.line_num}: not a valid CSV row ({err})") from None
        line_no = reader.line_num
        if len(row) != 3:
            raise UserError(f"{path}:{line_no}: expected 3 fields (class, title, description), got {len(row)}")
        label, title, description = row
        if not (label.strip().isdecimal() and 1 <= int(label) <= num_classes):
            raise UserError(f"{path}:{line_no}: class {label[:20]!r} is not in 1..{num_classes}")
        if not (title.strip() or description.strip()):
            raise UserError(f"{path}:{line_no}: empty text (title and description are both blank)")
        if len(title) + len(description) > MAX_FIELD:
            raise UserError(f"{path}:{line_no}: a text of {len(title) + len(description):,} characters "
                            f"(at most {MAX_FIELD:,}); is the file damaged (an unclosed quote)?")
        texts.append(clean_ag_news(f"{title}. {description}".strip()))
        labels.append(int(label) - 1)
    if not texts:
        raise UserError(f"{path} holds no rows")
    return texts, labels


def read_imdb_jsonl(path: Path) -> tuple[list[str], list[int]]:
    """IMDb as gzip JSON Lines: `{"text": ..., "label": 0|1, ...}` per line."""
    texts, labels = [], []
    for line_no, line in enumerate(read_text(path, "IMDb file").split("\n"), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except (json.JSONDecodeError, RecursionError):
            raise UserError(f"{path}:{line_no}: not a JSON object") from None
        if not isinstance(row, dict) or "text" not in row or "label" not in row:
            raise UserError(f"{path}:{line_no}: missing field 'text' or 'label'")
        if type(row["label"]) is not int or row["label"] not in (0, 1):
            raise UserError(f"{path}:{line_no}: label {repr(row['label'])[:20]} is not 0 or 1")
        if not isinstance(row["text"], str) or not row["text"].strip():
            raise UserError(f"{path}:{line_no}: empty text")
        if len(row["text"]) > MAX_FIELD:
            raise UserError(f"{path}:{line_no}: a text of {len(row['text']):,} characters (at most {MAX_FIELD:,})")
        texts.append(row["text"])
        labels.append(row["label"])
    if not texts:
        raise UserError(f"{path} holds no rows")
    return texts, labels


def _download(name: str, split: str) -> TextDataset:
    """Download through Hugging Face `datasets` (imported here: it is slow to import and needs the network)."""
    import datasets as hf_datasets  # noqa: PLC0415
    import huggingface_hub  # noqa: PLC0415

    # offline, the hub client logs a warning per retry; the one-line error below says it all
    huggingface_hub.utils.logging.set_verbosity_error()
    hf_datasets.logging.set_verbosity_error()
    ds = hf_datasets.load_dataset("ag_news" if name == "ag_news" else "imdb", split=split)
    classes = AG_NEWS_CLASSES if name == "ag_news" else IMDB_CLASSES
    return TextDataset(list(ds["text"]), [int(x) for x in ds["label"]], classes, f"huggingface:{name}/{split}")


def load_split(name: str, split: str, data_dir: str | None = None) -> TextDataset:
    """Load `split` ('train' or 'test') of `name` ('imdb' or 'ag_news')."""
    if name not in DATASETS:
        raise UserError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    if split not in ("train", "test"):
        raise UserError(f"unknown split {split!r}; choose train or test")
    filename = f"{split}.csv" if name == "ag_news" else f"{split}.jsonl.gz"
    try:
        folder = find_local_data(name, [filename], data_dir)
    except UserError as err:
        if name == "ag_news" and split == "train":
            raise UserError(f"{err} (offline copies of AG News often hold only test.csv; IMDb works offline)") from None
        raise
    if folder is not None:
        path = folder / filename
        texts, labels = read_ag_news_csv(path) if name == "ag_news" else read_imdb_jsonl(path)
        if split == "train" and len(set(labels)) < 2:
            raise UserError(f"{path} holds only texts of class {labels[0] + 1 if name == 'ag_news' else labels[0]}; "
                            "a classifier learns nothing from one class: is it the right file?")
        return TextDataset(texts, labels, AG_NEWS_CLASSES if name == "ag_news" else IMDB_CLASSES, str(path))
    try:
        return _download(name, split)
    except Exception as err:  # no network, hub down, not cached: all end the same way for a user
        error = missing_data_error(name, [filename], data_dir, f"{type(err).__name__}")
        if name == "ag_news" and split == "train":  # the course machines' copy has the test split only
            error = UserError(f"{error} (offline copies of AG News often hold only test.csv; IMDb works offline)")
        raise error from None


def train_val_split(n: int, val_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed-seed random split of range(n) into (train indices, validation indices)."""
    if not 0.0 < val_fraction < 1.0:
        raise UserError(f"--val_fraction must be between 0 and 1, got {val_fraction}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_val = max(1, int(round(n * val_fraction)))
    return perm[n_val:].sort().values, perm[:n_val].sort().values


def classification_report(labels: torch.Tensor, preds: torch.Tensor, classes: list[str]) -> dict[str, Any]:
    """Accuracy, macro-F1, per-class precision/recall/F1 and the confusion matrix (rows: true)."""
    n = len(classes)
    confusion = torch.bincount(labels * n + preds, minlength=n * n).reshape(n, n)
    true_pos = confusion.diag().double()
    precision = true_pos / confusion.sum(0).clamp(min=1)
    recall = true_pos / confusion.sum(1).clamp(min=1)
    f1 = 2 * precision * recall / (precision + recall).clamp(min=1e-12)
    return {
        "accuracy": (preds == labels).double().mean().item(),
        "macro_f1": f1.mean().item(),
        "per_class": {name: {"precision": precision[i].item(), "recall": recall[i].item(), "f1": f1[i].item(),
                             "support": int(confusion[i].sum())} for i, name in enumerate(classes)},
        "confusion_matrix": confusion.tolist(),
    }
