"""The playground's English -> French translators: stage 3's attention seq2seq, stage 4's Transformer and stage 5's
multi-task GPT behind one interface, with the attention weights the page draws.

    translator = load_translator(path, "stage4_transformer", "transformer_mt", torch.device("cpu"))
    translator.translate("A dog is running in the park.", beam=1, alpha=1.0)
    # {"translation": "Un chien court dans le parc.",
    #  "attention": {"source": [...], "target": [...], "layers": ["layer 1", "layer 2"], "heads": 4,
    #                "maps": [[len(target) x len(source) per head] per layer]}}

Each stage's own code translates: its checked loader, its tokenizer and its greedy / beam search (stage 3's
`translate_sentences`, stage 4's `translate_sentences` and `Transformer.cross_attention`, as translate.py's
heatmaps use them; stage 5's task prompt from generate.py and the model's own `generate`, greedy as finetune.py
scores it). A row of a map is one output token (the last is <eos>), its columns the source tokens it attended to.
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Callable

import torch

from scripts.common import UserError
from scripts.playground.classify import check_text

MAX_TEXT_CHARS = 1_000          # a sentence or two: the models learned from captions of at most a few dozen words
MAX_BEAM = 10
MAX_ALPHA = 10.0
TRANSLATORS = {"stage3_attention_seq2seq": "seq2seq_attention", "stage4_transformer": "transformer_mt",
               "stage5_gpt": "gpt"}
DIGITS = 4                      # attention weights are sent rounded (rows still sum to 1 within 1e-3)


def check_search(beam: Any, alpha: Any) -> tuple[int, float]:
    """beam: an integer 1 (greedy) .. MAX_BEAM; alpha: the length penalty's exponent, above 0 and at most 10."""
    if isinstance(beam, bool) or not isinstance(beam, int) or not 1 <= beam <= MAX_BEAM:
        raise UserError(f"beam must be an integer from 1 (greedy) to {MAX_BEAM}, not {str(beam)[:20]}")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 < alpha <= MAX_ALPHA:
        raise UserError(f"alpha (the length penalty) must be a number above 0 and at most {MAX_ALPHA:g}, "
                        f"not {str(alpha)[:20]}")
    return beam, float(alpha)


def attention_json(source: list[str], target: list[str], maps: torch.Tensor) -> dict[str, Any]:
    """maps (layers, heads, len(target), len(source)) -> the page's attention object."""
    layers, heads = maps.shape[:2]
    names = ["attention"] if layers == 1 and heads == 1 else [f"layer {i + 1}" for i in range(layers)]
    return {"source": source, "target": target, "layers": names, "heads": heads,
            "maps": maps.float().round(decimals=DIGITS).tolist()}


class Translator:
    """A loaded translator of any stage: `translate(text, beam, alpha)` -> the translation and, where the model has
    them, its attention weights. Calls are serialised (a lock): one model, one search at a time."""

    def __init__(self, path: Path, stage: str, model: str,
                 translate: Callable[[str, int, float], dict[str, Any]]) -> None:
        self.path, self.stage, self.model = Path(path), stage, model
        self._translate = translate
        self._lock = threading.Lock()

    def translate(self, text: str, beam: int = 1, alpha: float = 1.0) -> dict[str, Any]:
        text = check_text(text, MAX_TEXT_CHARS)
        beam, alpha = check_search(beam, alpha)
        with self._lock, torch.no_grad():
            return self._translate(text, beam, alpha)


def load_translator(path: Path, stage: str, model: str, device: torch.device) -> Translator:
    """The translator saved in `path` by `stage` for the model `model` (the checkpoint's "model" field; for stage 5
    a GPT fine-tuned with `finetune.py --task multi` on translate). Another stage's or model's checkpoint, or a
    damaged one, is a UserError."""
    if TRANSLATORS.get(stage) != model:
        raise UserError(f"{stage} {model} is not a translator the playground knows "
                        f"({', '.join(f'{s} {m}' for s, m in TRANSLATORS.items())})")
    load = {"stage3_attention_seq2seq": load_seq2seq, "stage4_transformer": load_transformer,
            "stage5_gpt": load_gpt}[stage]
    return Translator(path, stage, model, load(Path(path), device))


def load_seq2seq(path: Path, device: torch.device) -> Callable[[str, int, float], dict[str, Any]]:
    """Stage 3: translator.py's loader and `translate_sentences`, as translate.py calls them (unknown words copied
    from the source word attended to most, as its default --unk_replace does)."""
    from stage3_attention_seq2seq.data.translation import EOS
    from stage3_attention_seq2seq.translate import check_sentence
    from stage3_attention_seq2seq.translator import translate_sentences
    from stage3_attention_seq2seq.translator import load_model as load_stage3

    model, src_vocab, tgt_vocab, _ = load_stage3(path, device)

    def translate(text: str, beam: int, alpha: float) -> dict[str, Any]:
        check_sentence(text, "the sentence")     # words to translate, and not more than the model reads at once
        result = translate_sentences(model, src_vocab, tgt_vocab, [text], device, beam, alpha,
                                     return_attention=model.attention is not None, unk_replace=True)[0]
        attention = None
        if result.attention is not None:         # (len(tokens) + 1, len(source) + 1): <eos> row and column
            attention = attention_json(result.source_tokens + [EOS], result.tokens + [EOS],
                                       result.attention[None, None])
        return {"translation": result.text, "attention": attention}
    return translate


def load_transformer(path: Path, device: torch.device) -> Callable[[str, int, float], dict[str, Any]]:
    """Stage 4: translator.py's loader and `translate_sentences`; the attention is every decoder layer's
    cross-attention over the output, as translate.py's heatmap computes it (the scratch model only)."""
    from stage4_transformer.translate import cross_attention_maps
    from stage4_transformer.translator import load_model as load_stage4
    from stage4_transformer.translator import translate_sentences

    model, vocab, _ = load_stage4(path, device)
    longest = model.config.max_len - 1           # source pieces the model reads, before its <eos>

    def translate(text: str, beam: int, alpha: float) -> dict[str, Any]:
        pieces = vocab.encode(text)
        if not pieces:
            raise UserError("the text is empty: type a sentence")
        if len(pieces) > longest:
            raise UserError(f"the text is {len(pieces):,} subword pieces long; this model reads at most {longest:,} "
                            "at once: split it into sentences")
        translation = translate_sentences(model, vocab, [text], device, beam, alpha)[0]
        attention = None
        if model.config.impl == "scratch":        # nn.Transformer (--impl torch) does not hand out its weights
            maps, target, source = cross_attention_maps(model, vocab, text, translation, device)
            attention = attention_json(source, target, maps)
        return {"translation": translation, "attention": attention}
    return translate


def load_gpt(path: Path, device: torch.device) -> Callable[[str, int, float], dict[str, Any]]:
    """Stage 5: a multi-task GPT (finetune.py --task multi with translate among its tasks). The sentence goes into
    generate.py's translate prompt and the model continues it greedily up to <|endoftext|>, with the budget
    finetune.py's scoring gives (twice the prompt's tokens, at least 8, within the context)."""
    from stage5_gpt.finetune import load_finetuned
    from stage5_gpt.generate import task_prompt

    model, tokenizer, info = load_finetuned(path, device)
    if info["kind"] != "prompt" or "translate" not in info["tasks"]:
        raise UserError(f"{path} was fine-tuned on {', '.join(info['tasks'])} only, not to translate; use a model "
                        "of finetune.py --task multi with translate in --tasks")
    model.finetune = info                       # what task_prompt reads, as generate.py's loader sets it
    eot = tokenizer.eot_id

    def translate(text: str, beam: int, alpha: float) -> dict[str, Any]:
        if beam != 1:
            raise UserError("the GPT translates greedily only (stage 5 has no beam search): use beam 1")
        prompt = task_prompt(model, tokenizer, "translate", text)
        budget = min(max(8, 2 * len(prompt)), model.config.block_size - len(prompt))
        new = []
        for token in model.generate(torch.tensor([prompt], device=device), budget, temperature=0.0, stop_token=eot):
            if int(token[0]) == eot:
                break
            new.append(int(token[0]))
        return {"translation": tokenizer.decode(new).strip(), "attention": None}
    return translate
