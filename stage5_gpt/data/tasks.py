"""The fine-tuning tasks of stage 5: their data, their prompts, batching, and scoring.

Three tasks, on the same test sets as the earlier stages:

    imdb       sentiment of a film review (2 classes)          scripts/classification_data.py
    ag_news    topic of a news item (4 classes)                 scripts/classification_data.py
    translate  English -> French, Multi30k, sacreBLEU           scripts/translation_data.py

Two ways to use a pretrained GPT on them:

* a classification head (one task): the text, then <|endoftext|> as an "extract" token; a Linear layer
  reads the hidden state of that last token, the only position that has seen the whole text through
  the causal mask (GPT-1 did the same);
* text to text (several tasks, one model): each task is a prompt, and the answer is text the model
  learns to continue it with (a label word, or the French sentence), ended by <|endoftext|>:

      Review: <text>\\nSentiment: positive<|endoftext|>
      News: <text>\\nTopic: Sports<|endoftext|>
      English: <text>\\nFrench: <translation><|endoftext|>

  The loss counts only the answer's tokens. A class is chosen as the label the model finds most likely
  right after the prompt; a translation is decoded greedily until <|endoftext|>.
"""
from __future__ import annotations

import functools
import hashlib
import os
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn as nn

from scripts.classification_data import classification_report, load_split, train_val_split
from scripts.common import UserError, autocast
from scripts.translation_data import corpus_scores, load_pairs
from stage5_gpt.data.corpus import SPLIT_SEED, VAL_FRACTION, ids_dtype

TASKS = ("imdb", "ag_news", "translate")
CLASSIFICATION_TASKS = ("imdb", "ag_news")
AG_NEWS_SOURCES = ("official", "test_carveout")
# the multi-task model's prompts: (prompt around the input, answer template)
PROMPTS = {
    "imdb": ("Review: {text}\nSentiment:", " {answer}"),
    "ag_news": ("News: {text}\nTopic:", " {answer}"),
    "translate": ("English: {text}\nFrench:", " {answer}"),
}
CARVEOUT_TEST = 1600 / 7600               # AG News test_carveout: the share of the official test split kept for testing


@dataclass
class TaskData:
    """The raw examples of one task's split: texts with labels, or source/target pairs."""
    task: str
    texts: list[str]
    labels: list[int] = field(default_factory=list)      # classification
    targets: list[str] = field(default_factory=list)     # translation
    classes: list[str] = field(default_factory=list)
    source: str = ""
    ids: list[list[int]] = field(default_factory=list)   # the texts' tokens, once tokenize() has run

    def __len__(self) -> int:
        return len(self.texts)


def check_task(task: str) -> None:
    if task not in TASKS:
        raise UserError(f"unknown task {task!r}; choose from {', '.join(TASKS)}")


def load_task(task: str, split: str, data_dir: str | None, ag_news_source: str = "official",
              limit: int = 0) -> TaskData:
    """Split 'train', 'val' or 'test' of a task. Classification: 'train'/'val' are the fixed 90/10 split of
    the official training set (as in stages 1, 2 and 4), 'test' the official test set. Translation: Multi30k
    train / valid / test_2016_flickr. AG News with ag_news_source='test_carveout' (for machines that hold only
    the official test split): 1,600 fixed rows of it are the test set, the other 6,000 are split 90/10."""
    check_task(task)
    if split not in ("train", "val", "test"):
        raise UserError(f"unknown split {split!r}; choose train, val or test")
    if ag_news_source not in AG_NEWS_SOURCES:
        raise UserError(f"unknown --ag_news_source {ag_news_source!r}; choose from {', '.join(AG_NEWS_SOURCES)}")
    if task == "translate":
        pairs = load_pairs("multi30k", {"val": "valid"}.get(split, split), data_dir)
        data = TaskData(task, [en for en, _ in pairs], targets=[fr for _, fr in pairs], source="multi30k")
    else:
        carveout = task == "ag_news" and ag_news_source == "test_carveout"
        try:
            raw = load_split(task, "test" if carveout or split == "test" else "train", data_dir)
        except UserError as err:
            if task == "ag_news" and not carveout:
                raise UserError(f"{err}; or train on part of the test split: --ag_news_source test_carveout") from None
            raise
        indices = list(range(len(raw.texts)))
        if carveout:
            perm = torch.randperm(len(indices), generator=torch.Generator().manual_seed(SPLIT_SEED)).tolist()
            n_test = round(len(perm) * CARVEOUT_TEST)            # 1,600 of the 7,600 rows
            indices = sorted(perm[:n_test]) if split == "test" else sorted(perm[n_test:])
        if split != "test":
            train_idx, val_idx = train_val_split(len(indices), VAL_FRACTION, SPLIT_SEED)
            indices = [indices[i] for i in (train_idx if split == "train" else val_idx).tolist()]
        source = "ag_news test split, carve-out" if carveout else task
        data = TaskData(task, [raw.texts[i] for i in indices], labels=[raw.labels[i] for i in indices],
                        classes=list(raw.classes), source=source)
    if not len(data):
        raise UserError(f"the {split} split of {task} is empty ({data.source}); check the data files")
    if limit:
        keep = balanced_subset(data.labels, limit) if data.labels else list(range(min(limit, len(data))))
        data.texts = [data.texts[i] for i in keep]
        data.labels = [data.labels[i] for i in keep] if data.labels else []
        data.targets = [data.targets[i] for i in keep] if data.targets else []
    return data


def balanced_subset(labels: Sequence[int], limit: int, seed: int = SPLIT_SEED) -> list[int]:
    """Indices of a fixed, class-balanced sample of `limit` examples, in their original order.

    Each class gives limit // classes examples (the first limit % classes classes one more), drawn at random
    with a fixed seed; a class too small for its share gives all it has and the others fill the gap. The files
    of IMDb are sorted by label, so their first N rows would all be negative: a small run would learn nothing."""
    if limit >= len(labels):
        return list(range(len(labels)))
    generator = torch.Generator().manual_seed(seed)
    by_class: dict[int, list[int]] = {}
    for i, label in enumerate(labels):
        by_class.setdefault(label, []).append(i)
    pools = [[members[j] for j in torch.randperm(len(members), generator=generator).tolist()]
             for _, members in sorted(by_class.items())]
    # deal one example from each class in turn: balanced until a class runs out, then the others go on
    dealt = [pool[depth] for depth in range(max(map(len, pools))) for pool in pools if depth < len(pool)]
    return sorted(dealt[:limit])


# ----------------------------------------------------------------------------- encoding
def fit(ids: list[int], length: int) -> list[int]:
    """Cut a token list to `length`, keeping its head and tail (a quarter and three quarters): the start of a
    review sets the scene and its end usually holds the verdict."""
    if len(ids) <= length:
        return ids
    head = length // 4
    return ids[:head] + ids[len(ids) - (length - head):]


def eot_of(tokenizer: Any) -> int:
    eot = getattr(tokenizer, "eot_id", None)
    if eot is None:
        raise UserError("fine-tuning needs a BPE tokenizer with <|endoftext|> (the gutenberg preset, or GPT-2); "
                        "a character-level base model has none")
    return eot


def tokenize(tokenizer: Any, data: TaskData, cache_dir: str | Path | None = None) -> TaskData:
    """Fill data.ids with the tokens of every text (special tokens in the text are plain text here).

    With cache_dir, the tokens are kept in <cache_dir>/<hash>.npz, named by the tokenizer's fingerprint and
    the texts, so the 25,000 reviews of IMDb are tokenised once, not at every run."""
    if data.ids:
        return data
    path = None
    if cache_dir:
        digest = hashlib.sha256(tokenizer.fingerprint().encode())
        for text in data.texts:
            digest.update(text.encode("utf-8") + b"\0")
        path = Path(cache_dir) / f"{data.task}-{digest.hexdigest()[:16]}.npz"
        if path.is_file():
            data.ids = read_token_cache(path, len(data.texts), tokenizer.vocab_size)
            return data
    data.ids = [tokenizer.encode(text, allowed_special=False) for text in data.texts]
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        offsets = np.cumsum([0] + [len(x) for x in data.ids])
        tmp = path.with_name(path.stem + f".tmp{os.getpid()}.npz")
        flat = np.array([t for x in data.ids for t in x], dtype=ids_dtype(tokenizer.vocab_size))
        np.savez(tmp, flat=flat, offsets=offsets)
        os.replace(tmp, path)
    return data


def read_token_cache(path: Path, texts: int, vocab_size: int) -> list[list[int]]:
    """The token lists saved by `tokenize`, checked: one list per text, every id in the tokenizer's range. A damaged
    or foreign file ends in one line naming it (delete it: the texts are tokenised again)."""
    def bad(reason: str) -> UserError:
        return UserError(f"token cache {path} is damaged ({reason}); delete it and rerun")

    try:
        with np.load(path, allow_pickle=False) as saved:
            flat, offsets = saved["flat"], saved["offsets"]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
        raise bad(" ".join(str(err).split())[:80] or type(err).__name__) from None
    if flat.ndim != 1 or offsets.ndim != 1 or flat.dtype.kind not in "iu" or offsets.dtype.kind not in "iu":
        raise bad("not two lists of integers")
    if len(offsets) != texts + 1 or offsets[0] != 0 or offsets[-1] != len(flat) or (np.diff(offsets) < 0).any():
        raise bad(f"its offsets do not cut {len(flat)} ids into {texts} texts")
    if len(flat) and (flat.min() < 0 or flat.max() >= vocab_size):
        raise bad(f"ids outside 0..{vocab_size - 1}")
    flat_list, cuts = flat.tolist(), offsets.tolist()
    return [flat_list[a:b] for a, b in zip(cuts[:-1], cuts[1:])]


def encode_for_head(tokenizer: Any, data: TaskData, max_len: int) -> list[list[int]]:
    """Inputs of the classification head: the text, cut to fit, then <|endoftext|> (the extract token)."""
    eot = eot_of(tokenizer)
    return [fit(ids, max_len - 1) + [eot] for ids in tokenize(tokenizer, data).ids]


@functools.lru_cache(maxsize=16)
def prompt_parts(tokenizer: Any, task: str) -> tuple[list[int], list[int]]:
    """The tokens of `task`'s prompt before and after the text (encoded once per tokenizer)."""
    before, after = PROMPTS[task][0].split("{text}")
    return tokenizer.encode(before, allowed_special=False), tokenizer.encode(after, allowed_special=False)


def encode_prompt(tokenizer: Any, task: str, text_ids: list[int], max_len: int, answer_room: int) -> list[int]:
    """The prompt of `task` around a text's tokens, the text cut so that the prompt leaves `answer_room` tokens."""
    pre, post = prompt_parts(tokenizer, task)
    room = max_len - answer_room - len(pre) - len(post)
    if room < 1:
        raise UserError(f"--max_len {max_len} leaves no room for the {task} prompt; raise it")
    return pre + fit(text_ids, room) + post


def answer_text(data: TaskData, i: int) -> str:
    answer = data.targets[i] if data.task == "translate" else data.classes[data.labels[i]]
    return PROMPTS[data.task][1].format(answer=answer)


def encode_text_to_text(tokenizer: Any, data: TaskData, max_len: int) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, answer ids ending in <|endoftext|>) per example; the whole fits max_len tokens."""
    eot = eot_of(tokenizer)
    examples = []
    for i, ids in enumerate(tokenize(tokenizer, data).ids):
        answer = tokenizer.encode(answer_text(data, i), allowed_special=False)[:max_len // 2] + [eot]
        examples.append((encode_prompt(tokenizer, data.task, ids, max_len, len(answer)), answer))
    return examples


def label_tokens(tokenizer: Any, task: str, classes: Sequence[str]) -> list[list[int]]:
    """The tokens of each label word as it follows the prompt."""
    return [tokenizer.encode(PROMPTS[task][1].format(answer=c), allowed_special=False) for c in classes]


# ----------------------------------------------------------------------------- batching
def bucket_batches(lengths: Sequence[int], batch_size: int, generator: torch.Generator | None,
                   pool: int = 50) -> list[list[int]]:
    """Indices grouped into batches of similar length, so little of each batch is padding.

    Training (a generator): shuffle, sort within pools of `pool` batches, cut into batches, shuffle the
    batches. Evaluation (no generator): simply sorted by length."""
    if generator is None:
        order = sorted(range(len(lengths)), key=lambda i: lengths[i])
        return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    perm = torch.randperm(len(lengths), generator=generator).tolist()
    batches = []
    for start in range(0, len(perm), batch_size * pool):
        chunk = sorted(perm[start:start + batch_size * pool], key=lambda i: lengths[i])
        batches += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    return [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]


def pad_batch(seqs: Sequence[Sequence[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T) ids padded on the right, and the (B,) lengths. Right padding is harmless in a causal
    model: no real position ever attends to the padding after it."""
    lengths = torch.tensor([len(s) for s in seqs])
    ids = torch.full((len(seqs), int(lengths.max())), pad, dtype=torch.long)
    for row, seq in enumerate(seqs):
        ids[row, :len(seq)] = torch.tensor(seq, dtype=torch.long)
    return ids, lengths


def lm_batch(pairs: Sequence[tuple[list[int], list[int]]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and next-token targets of text-to-text examples; targets are -1 (ignored) except on the answer."""
    seqs = [prompt + answer for prompt, answer in pairs]
    ids, _ = pad_batch(seqs, pad)
    targets = torch.full_like(ids, -1)
    for row, (prompt, answer) in enumerate(pairs):
        # position t predicts token t+1: the answer's tokens are predicted from positions len(prompt)-1 ...
        targets[row, len(prompt) - 1:len(prompt) - 1 + len(answer)] = torch.tensor(answer)
    return ids[:, :-1], targets[:, :-1]


# ----------------------------------------------------------------------------- models and scoring
class GPTClassifier(nn.Module):
    """A GPT body and a Linear head on the hidden state of each sequence's last real token."""

    def __init__(self, gpt: nn.Module, num_classes: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.gpt = gpt
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(gpt.config.n_embd, num_classes)
        nn.init.normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)

    def forward(self, idx: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """idx (B, T), lengths (B,) -> class logits (B, num_classes)."""
        hidden = self.gpt.hidden(idx)                                    # (B, T, C)
        last = hidden[torch.arange(idx.size(0), device=idx.device), lengths - 1]   # (B, C)
        return self.head(self.drop(last))


@torch.no_grad()
def predict_head(model: GPTClassifier, inputs: Sequence[list[int]], batch_size: int, device: torch.device,
                 amp: bool, pad: int) -> torch.Tensor:
    """Predicted classes (N,) of a classifier, batched by length."""
    model.eval()
    preds = torch.empty(len(inputs), dtype=torch.long)
    for batch in bucket_batches([len(x) for x in inputs], batch_size, None):
        ids, lengths = pad_batch([inputs[i] for i in batch], pad)
        with autocast(device, amp):
            logits = model(ids.to(device), lengths.to(device))
        preds[batch] = logits.argmax(-1).cpu()
    return preds


@torch.no_grad()
def predict_prompt(gpt: nn.Module, prompts: Sequence[list[int]], labels: Sequence[list[int]], batch_size: int,
                   device: torch.device, amp: bool, pad: int) -> torch.Tensor:
    """Predicted classes (N,) of the text-to-text model: the label the model finds most likely after the prompt.

    When the labels' first tokens differ (as " positive" / " negative" do in a real vocabulary), one forward
    pass per prompt compares the scores of those first tokens. Otherwise each label's whole token sequence is
    scored (the sum of its log-probabilities), one pass per label."""
    gpt.eval()
    firsts = [label[0] for label in labels]
    if len(set(firsts)) == len(firsts):
        preds = torch.empty(len(prompts), dtype=torch.long)
        choices = torch.tensor(firsts, device=device)
        for batch in bucket_batches([len(p) for p in prompts], batch_size, None):
            ids, lengths = pad_batch([prompts[i] for i in batch], pad)
            ids, lengths = ids.to(device), lengths.to(device)
            with autocast(device, amp):
                hidden = gpt.hidden(ids)[torch.arange(len(batch), device=device), lengths - 1]    # (B, C)
                logits = gpt.lm_head(hidden)[:, choices]                                          # (B, classes)
            preds[batch] = logits.argmax(-1).cpu()
        return preds
    scores = torch.empty(len(prompts), len(labels))
    for c, label in enumerate(labels):
        pairs = [(prompt, label) for prompt in prompts]
        for batch in bucket_batches([len(p) for p in prompts], batch_size, None):
            ids, targets = lm_batch([pairs[i] for i in batch], pad)
            ids, targets = ids.to(device), targets.to(device)
            with autocast(device, amp):
                logits, _ = gpt(ids)
            logp = torch.log_softmax(logits.float(), -1).gather(-1, targets.clamp(min=0)[..., None])[..., 0]
            scores[batch, c] = (logp * (targets >= 0)).sum(-1).cpu()
    return scores.argmax(-1)


@torch.no_grad()
def greedy_decode(gpt: nn.Module, prompts: Sequence[list[int]], stop: int, max_new_tokens: Callable[[int], int],
                  batch_size: int, device: torch.device, amp: bool) -> list[list[int]]:
    """Greedy continuations of many prompts, up to `stop` (not included). Prompts of the same length are
    decoded together, so no padding is needed, with the KV cache: one new position per step."""
    gpt.eval()
    out: list[list[int]] = [[] for _ in prompts]
    by_length: dict[int, list[int]] = {}
    for i, prompt in enumerate(prompts):
        by_length.setdefault(len(prompt), []).append(i)
    block = gpt.config.block_size
    for length, members in sorted(by_length.items()):
        for start in range(0, len(members), batch_size):
            batch = members[start:start + batch_size]
            steps = min(max(max_new_tokens(len(prompts[i])) for i in batch), block - length)
            ids = torch.tensor([prompts[i] for i in batch], device=device)
            caches = gpt.new_caches(len(batch), device)
            done = torch.zeros(len(batch), dtype=torch.bool, device=device)
            step_input = ids
            for _ in range(steps):
                with autocast(device, amp):
                    logits = gpt.lm_head(gpt.hidden(step_input, caches)[:, -1])
                token = logits.argmax(-1)                                     # (B,)
                done |= token == stop
                for row, (t, d) in enumerate(zip(token.tolist(), done.tolist())):
                    if not d:
                        out[batch[row]].append(t)
                if bool(done.all()):
                    break
                step_input = token[:, None]
    return out


def evaluate_task(kind: str, model: nn.Module, tokenizer: Any, data: TaskData, max_len: int, batch_size: int,
                  device: torch.device, amp: bool, latency_samples: int = 100) -> dict[str, Any]:
    """Test metrics of one task: accuracy, macro-F1 and the confusion matrix (classification) or sacreBLEU
    and chrF (translation, greedy), examples per second, and the latency at batch 1 on the first examples.
    kind: 'head' (a GPTClassifier) or 'prompt' (the text-to-text GPT)."""
    eot = eot_of(tokenizer)
    gpt = model.gpt if kind == "head" else model
    if data.task == "translate":
        if kind == "head":
            raise UserError("a classifier cannot translate; use a multi-task checkpoint")
        prompts = [encode_prompt(tokenizer, "translate", ids, max_len, max_len // 2)
                   for ids in tokenize(tokenizer, data).ids]
        budget = lambda n: max(8, 2 * n)   # noqa: E731 - French runs longer than English, in tokens
        started = time.perf_counter()
        outputs = greedy_decode(gpt, prompts, eot, budget, batch_size, device, amp)
        seconds = time.perf_counter() - started
        hypotheses = [tokenizer.decode(ids).strip() for ids in outputs]
        metrics = {**corpus_scores(hypotheses, data.targets), "decoding": "greedy", "sentences": len(data),
                   "sentences_per_s": len(data) / seconds}
        timed = prompts[:latency_samples]
        started = time.perf_counter()
        for prompt in timed:
            greedy_decode(gpt, [prompt], eot, budget, 1, device, amp)
        metrics["latency_ms_bs1"] = 1000 * (time.perf_counter() - started) / max(len(timed), 1)
        metrics["examples"] = [{"source": s, "reference": r, "hypothesis": h}
                               for s, r, h in list(zip(data.texts, data.targets, hypotheses))[:20]]
        return metrics
    if kind == "head":
        inputs = encode_for_head(tokenizer, data, max_len)
        predict = lambda xs, bs: predict_head(model, xs, bs, device, amp, eot)   # noqa: E731
    else:
        labels = label_tokens(tokenizer, data.task, data.classes)
        inputs = [encode_prompt(tokenizer, data.task, ids, max_len, max(map(len, labels)))
                  for ids in tokenize(tokenizer, data).ids]
        predict = lambda xs, bs: predict_prompt(model, xs, labels, bs, device, amp, eot)   # noqa: E731
    started = time.perf_counter()
    preds = predict(inputs, batch_size)
    seconds = time.perf_counter() - started
    metrics = classification_report(torch.tensor(data.labels), preds, data.classes)
    metrics["examples_per_s"] = len(data) / seconds
    timed = inputs[:latency_samples]
    started = time.perf_counter()
    for x in timed:
        predict([x], 1)
    metrics["latency_ms_bs1"] = 1000 * (time.perf_counter() - started) / max(len(timed), 1)
    return metrics
