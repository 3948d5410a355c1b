"""The playground's text classifiers: one interface over the classifiers of stages 1, 2, 4 and 5.

    classifier = load_classifier(path, "stage2_rnn_lstm", "rnn_classifier", torch.device("cpu"))
    classifier.classify("A moving, beautifully acted film.")
    # {"label": "positive", "probabilities": {"negative": 0.08, "positive": 0.92}}

Each stage's own code does the work: its checked loaders (`load_checkpoint`, `config_from_checkpoint`,
`model_from_checkpoint`, so an edited or foreign file is a one-line UserError), its tokenizer and its prediction
function. The probabilities are the model's softmax over its classes, as the stage's evaluate.py computes them.
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Callable

import torch

from scripts.common import UserError

MAX_TEXT_CHARS = 5_000          # a long review; a longer text is refused, not cut
CLASSIFIERS = {"stage1_mlp": "ngram_mlp", "stage2_rnn_lstm": "rnn_classifier",
               "stage4_transformer": "transformer_classifier", "stage5_gpt": "gpt_classifier"}


def check_text(text: Any, limit: int = MAX_TEXT_CHARS) -> str:
    """The text to classify or translate: a non-blank string of at most `limit` characters."""
    if not isinstance(text, str) or not text.strip():
        raise UserError("the text is empty: type a sentence")
    if len(text) > limit:
        raise UserError(f"the text has {len(text):,} characters; at most {limit:,} are read at once: shorten it")
    return text


def checked_classes(path: Path, classes: Any, count: int) -> list[str]:
    """A checkpoint's class names, one short non-empty string per output of the model."""
    if not (isinstance(classes, list) and len(classes) == count
            and all(isinstance(name, str) and 0 < len(name) <= 100 for name in classes)):
        raise UserError(f"{path}: its class names do not fit the model, which has {count} classes; retrain the model")
    return list(classes)


class Classifier:
    """A loaded classifier of any stage: `classes`, and `classify(text)` -> the label and every class's probability.
    Calls are serialised (a lock): the stages' prediction functions switch the model between eval and train mode."""

    def __init__(self, path: Path, stage: str, model: str, classes: list[str],
                 probabilities: Callable[[str], torch.Tensor]) -> None:
        self.path, self.stage, self.model, self.classes = Path(path), stage, model, classes
        self._probabilities = probabilities
        self._lock = threading.Lock()

    def classify(self, text: str) -> dict[str, Any]:
        text = check_text(text)
        with self._lock, torch.no_grad():
            probs = self._probabilities(text).float().cpu()        # (classes,): the model's softmax
        return {"label": self.classes[int(probs.argmax())],
                "probabilities": {name: float(p) for name, p in zip(self.classes, probs)}}


def load_classifier(path: Path, stage: str, model: str, device: torch.device) -> Classifier:
    """The classifier saved in `path` by `stage`'s training program for the model `model` (the checkpoint's
    "model" field). A checkpoint of another stage or model, or a damaged one, is a UserError."""
    if CLASSIFIERS.get(stage) != model:
        raise UserError(f"{stage} {model} is not a classifier the playground knows "
                        f"({', '.join(f'{s} {m}' for s, m in CLASSIFIERS.items())})")
    load = {"stage1_mlp": load_mlp, "stage2_rnn_lstm": load_rnn, "stage4_transformer": load_transformer,
            "stage5_gpt": load_gpt}[stage]
    classes, probabilities = load(Path(path), device)
    return Classifier(path, stage, model, classes, probabilities)


def load_mlp(path: Path, device: torch.device) -> tuple[list[str], Callable[[str], torch.Tensor]]:
    """Stage 1: evaluate.py's Classifier (featurizer and bag-of-n-grams MLP, every field of the file checked)."""
    from stage1_mlp.evaluate import Classifier as MLPClassifier

    clf = MLPClassifier(path, device)
    return clf.classes, lambda text: clf.classify(text)[0]


def load_rnn(path: Path, device: torch.device) -> tuple[list[str], Callable[[str], torch.Tensor]]:
    """Stage 2: the LSTM classifier as train_classifier.py saves it (config, vocabulary, classes) and reads text."""
    from scripts.common import check_vocab_fits, config_from_checkpoint, load_checkpoint, model_from_checkpoint
    from stage2_rnn_lstm import train_classifier as tc
    from stage2_rnn_lstm.models.classifier import ClassifierConfig, RNNClassifier

    ckpt = load_checkpoint(path, tc.STAGE, [tc.MODEL_NAME], map_location="cpu")
    config = config_from_checkpoint(path, ckpt.get("config"), ClassifierConfig)
    if config.model_type not in ("rnn", "lstm", "gru") or config.impl not in ("torch", "scratch"):
        raise UserError(f"{path} holds a model of unknown type {config.model_type[:20]!r} / {config.impl[:20]!r}; "
                        "retrain the model")
    itos = tc.checked_vocab(ckpt.get("vocab"), config.vocab_size, path)
    check_vocab_fits(path, len(itos), config.vocab_size)
    classes = checked_classes(path, ckpt.get("classes"), config.num_classes)
    max_len = ckpt["args"].get("max_len") if isinstance(ckpt.get("args"), dict) else None   # the tokens it read
    if not (isinstance(max_len, int) and not isinstance(max_len, bool) and 1 <= max_len <= 100_000):
        raise UserError(f"{path} does not say how many tokens of a text the model reads (max_len); retrain the model")
    net = model_from_checkpoint(path, lambda: RNNClassifier(config), ckpt.get("model_state")).to(device).eval()
    stoi = {word: i for i, word in enumerate(itos)}
    return classes, lambda text: tc.predict(net, tc.encode([tc.tokenize(text)], stoi, max_len), device)[0]


def load_transformer(path: Path, device: torch.device) -> tuple[list[str], Callable[[str], torch.Tensor]]:
    """Stage 4: the Transformer-encoder classifier and its BPE vocabulary, as train_classifier.py saves them."""
    from scripts.common import check_vocab_fits, config_from_checkpoint, load_checkpoint, model_from_checkpoint
    from stage4_transformer import train_classifier as tc
    from stage4_transformer.data.subword import SubwordVocab
    from stage4_transformer.models.classifier import ClassifierConfig, TransformerClassifier

    ckpt = load_checkpoint(path, tc.STAGE, [tc.MODEL_NAME], map_location="cpu")
    limits = {"vocab_size": tc.LIMITS["src_vocab_size"], "d_model": tc.LIMITS["d_model"],
              "n_heads": tc.LIMITS["n_heads"], "layers": tc.LIMITS["n_encoder_layers"], "d_ff": tc.LIMITS["d_ff"],
              "max_len": tc.MAX_POSITIONS}
    config = config_from_checkpoint(path, ckpt.get("config"), ClassifierConfig, limits=limits)
    if config.n_heads < 1 or config.d_model % config.n_heads or config.max_len < 1 or config.dropout >= 1:
        raise UserError(f"{path} holds a model config that this version cannot build (d_model {config.d_model}, "
                        f"n_heads {config.n_heads}, max_len {config.max_len}); retrain the model")
    if not isinstance(ckpt.get("vocab"), str):
        raise UserError(f"{path} holds no subword vocabulary; retrain the model")
    vocab = SubwordVocab.from_json(ckpt["vocab"], where=f"{path}: its subword vocabulary")
    check_vocab_fits(path, len(vocab), config.vocab_size)
    classes = checked_classes(path, ckpt.get("classes"), config.num_classes)
    net = model_from_checkpoint(path, lambda: TransformerClassifier(config), ckpt.get("model_state")).to(device)
    net.eval()
    return classes, lambda text: tc.predict(net, tc.encode([text], vocab, config.max_len), device)[0]


def load_gpt(path: Path, device: torch.device) -> tuple[list[str], Callable[[str], torch.Tensor]]:
    """Stage 5: a GPT fine-tuned with a classification head (finetune.py --task imdb / ag_news); the text is read
    as finetune.py reads it (cut to the model's length, then <|endoftext|>, whose hidden state the head reads)."""
    from stage5_gpt.data import tasks
    from stage5_gpt.finetune import load_finetuned

    net, tokenizer, info = load_finetuned(path, device)
    if info["kind"] != "head":
        raise UserError(f"{path} is a multi-task GPT, not a classifier with a head; use it to translate or generate")
    task = info["tasks"][0]
    classes = info["classes"][task]

    def probabilities(text: str) -> torch.Tensor:
        ids = tasks.encode_for_head(tokenizer, tasks.TaskData(task, [text]), info["max_len"])[0]
        logits = net(torch.tensor([ids], device=device), torch.tensor([len(ids)], device=device))   # (1, classes)
        return torch.softmax(logits.float(), dim=-1)[0]
    return classes, probabilities
