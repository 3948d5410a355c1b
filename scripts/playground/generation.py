"""Text generation for the playground: stage 2's recurrent language model and stage 5's GPT, one token at a time.

Each generator wraps the stage's own loading and sampling code (the model's `generate` iterator, the stage's
tokenizer, its `next_token_probs`), and adds what serving needs: a stop flag checked between tokens, timing, and
the next-token distribution at any point of a text.
"""
from __future__ import annotations

import codecs
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch

from scripts.common import UserError, load_checkpoint

MAX_PROMPT_CHARS = 5_000      # the page's text box; a recurrent model reads any length, a GPT keeps its last block
MAX_NEW_TOKENS = 2_000        # per request: about 2 s of the stage 5 char model on 2 CPU cores
TOP = 10                      # tokens shown in a next-token distribution


@dataclass
class Settings:
    max_new_tokens: int = 200
    temperature: float = 0.8
    top_k: int = 0
    top_p: float = 1.0
    seed: int = 0
    kv_cache: bool = True


class Generator:
    """What the server needs of a language model: encode a prompt, stream tokens, show a distribution."""
    name = ""
    vocab_size = 0
    has_cache = False          # whether kv_cache changes anything (a GPT's KV cache; an RNN always carries a state)

    def encode(self, prompt: str) -> tuple[list[int], str | None]:
        """The prompt's token ids and a note for the learner (unknown characters, a prompt cut to the context)."""
        raise NotImplementedError

    def tokens(self, ids: list[int], settings: Settings, stop: threading.Event) -> Iterator[tuple[int, str]]:
        """Yield (token id, its text) one at a time until max_new_tokens, the end of text, or `stop` is set."""
        raise NotImplementedError

    def logits(self, ids: list[int]) -> torch.Tensor:
        """The model's next-token logits (vocab,) after `ids`."""
        raise NotImplementedError

    def piece(self, token: int) -> str:
        raise NotImplementedError

    @torch.no_grad()
    def next_token(self, ids: list[int], settings: Settings) -> dict[str, Any]:
        """The TOP likeliest next tokens after `ids` under the sampling settings, and the entropy (nats) of that
        distribution: what the sampler drew from at that step."""
        self.check_ids(ids)
        probs = self.probs(self.logits(ids), settings)
        top = torch.topk(probs, min(TOP, probs.numel()))
        entropy = max(0.0, -float((probs * probs.clamp_min(1e-30).log()).sum()))   # never "-0"
        return {"top": [{"id": int(i), "text": self.piece(int(i)), "p": float(p)}
                        for p, i in zip(top.values, top.indices) if p > 0],
                "entropy": round(entropy, 4)}

    def probs(self, logits: torch.Tensor, settings: Settings) -> torch.Tensor:
        raise NotImplementedError

    def check_ids(self, ids: list[int]) -> None:
        if not ids:
            raise UserError("no tokens given: a distribution needs at least one token of context")
        if len(ids) > MAX_PROMPT_CHARS + MAX_NEW_TOKENS:
            raise UserError(f"{len(ids)} tokens: at most {MAX_PROMPT_CHARS + MAX_NEW_TOKENS} are read")
        bad = next((i for i in ids if not isinstance(i, int) or not 0 <= i < self.vocab_size), None)
        if bad is not None:
            raise UserError(f"token id {bad} is not in this model's vocabulary (0..{self.vocab_size - 1})")


def check_prompt(prompt: str) -> None:
    if not prompt.strip():
        raise UserError("the prompt is empty: type some text for the model to continue")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise UserError(f"the prompt has {len(prompt):,} characters; at most {MAX_PROMPT_CHARS:,} are read here")


class RNNGenerator(Generator):
    """Stage 2: an RNN / LSTM / GRU language model over characters or words."""
    has_cache = False

    def __init__(self, path: Path, device: torch.device):
        from stage2_rnn_lstm.evaluate import load_language_model
        self.model, self.vocab, _ = load_language_model(path, None, device)
        self.device = device
        self.vocab_size = len(self.vocab)
        self.name = f"{self.model.config.model_type.upper()} ({self.vocab.kind})"

    def encode(self, prompt: str) -> tuple[list[int], str | None]:
        from stage2_rnn_lstm.generate import encode_prompt
        check_prompt(prompt)
        ids, unknown = encode_prompt(self.vocab, prompt)
        note = None
        if unknown:
            note = (f"不在词表里的 {self.vocab.kind}（按 {self.vocab.itos[self.vocab.unk_id]} 读入）："
                    + "、".join(repr(t[:20]) for t in unknown[:10]))
        return ids.tolist(), note

    def tokens(self, ids: list[int], settings: Settings, stop: threading.Event) -> Iterator[tuple[int, str]]:
        generator = torch.Generator().manual_seed(settings.seed)
        prompt = torch.tensor(ids, dtype=torch.long, device=self.device)
        with torch.no_grad():
            for token in self.model.generate(prompt, settings.max_new_tokens, settings.temperature, settings.top_k,
                                             settings.top_p, generator):
                if stop.is_set():
                    return
                yield token, self.piece(token)

    def piece(self, token: int) -> str:
        return self.vocab.piece(self.vocab.itos[token])

    def logits(self, ids: list[int]) -> torch.Tensor:
        from stage2_rnn_lstm.models.rnn_lm import PROMPT_CHUNK
        prompt = torch.tensor(ids, dtype=torch.long, device=self.device)
        state = None
        for start in range(0, len(ids), PROMPT_CHUNK):      # as generate reads a prompt: a chunk at a time
            logits, state = self.model(prompt[None, start:start + PROMPT_CHUNK], state)
        return logits[0, -1]

    def probs(self, logits: torch.Tensor, settings: Settings) -> torch.Tensor:
        from stage2_rnn_lstm.models.rnn_lm import next_token_probs
        return next_token_probs(logits, settings.temperature, settings.top_k, settings.top_p)


class GPTGenerator(Generator):
    """Stage 5: GPT-mini over characters or byte-level BPE tokens (a multi-task model also answers its tasks)."""
    has_cache = True

    def __init__(self, path: Path, device: torch.device):
        from stage5_gpt.finetune import model_from_checkpoint
        ckpt = load_checkpoint(path, "stage5_gpt", ["gpt"], map_location="cpu")
        self.model, self.tokenizer = model_from_checkpoint(ckpt, path)
        self.model.finetune = ckpt.get("finetune")
        self.model.to(device).eval()
        self.device = device
        self.vocab_size = self.model.config.vocab_size
        self.eot = getattr(self.tokenizer, "eot_id", None)
        self.name = f"GPT-mini ({type(self.tokenizer).__name__})"

    def encode(self, prompt: str) -> tuple[list[int], str | None]:
        from stage5_gpt.generate import encode_prompt
        check_prompt(prompt)
        ids, note = encode_prompt(prompt, self.tokenizer, self.model.config.block_size)
        if not ids:
            raise UserError("the prompt gave no tokens this model knows; type other text")
        return ids, note

    def task_ids(self, task: str, text: str) -> list[int]:
        """A multi-task model's prompt for `task` around `text` (stage 5's own task format)."""
        from stage5_gpt.generate import task_prompt
        check_prompt(text)
        return task_prompt(self.model, self.tokenizer, task, text)

    def tokens(self, ids: list[int], settings: Settings, stop: threading.Event) -> Iterator[tuple[int, str]]:
        generator = torch.Generator(device=self.device).manual_seed(settings.seed)
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")   # a BPE token can end mid-character
        idx = torch.tensor([ids], dtype=torch.long, device=self.device)
        with torch.no_grad():
            for token in self.model.generate(idx, settings.max_new_tokens, settings.temperature, settings.top_k,
                                             settings.top_p, use_cache=settings.kv_cache, generator=generator,
                                             stop_token=self.eot):
                if stop.is_set():
                    return
                token = int(token[0])
                if token == self.eot:
                    return
                yield token, decoder.decode(self.token_bytes(token))

    def token_bytes(self, token: int) -> bytes:
        from stage5_gpt.generate import token_bytes
        try:
            return token_bytes(self.tokenizer, [token])
        except (KeyError, IndexError, ValueError):     # an embedding row beyond the tokenizer's own ids
            return b""

    def piece(self, token: int) -> str:
        return self.token_bytes(token).decode("utf-8", errors="replace")

    def logits(self, ids: list[int]) -> torch.Tensor:
        block = self.model.config.block_size
        logits, _ = self.model(torch.tensor([ids[-block:]], dtype=torch.long, device=self.device))
        return logits[0, -1]

    def probs(self, logits: torch.Tensor, settings: Settings) -> torch.Tensor:
        from stage5_gpt.models.gpt import next_token_probs
        return next_token_probs(logits[None], settings.temperature, settings.top_k, settings.top_p)[0]


def load_generator(path: Path, stage: str, device: torch.device) -> Generator:
    if stage == "stage2_rnn_lstm":
        return RNNGenerator(path, device)
    if stage == "stage5_gpt":
        return GPTGenerator(path, device)
    raise UserError(f"{stage} has no language model to generate with")


def run(generator: Generator, ids: list[int], settings: Settings, stop: threading.Event) -> Iterator[dict[str, Any]]:
    """The events of one generation: a `token` per new token, then `done` with the speed (tokens/s over the
    sampling time, as generate.py reports it) and the time to the first token."""
    start = time.perf_counter()
    first = None
    count = 0
    for token, text in generator.tokens(ids, settings, stop):
        if first is None:
            first = time.perf_counter() - start
        yield {"event": "token", "i": count, "id": token, "text": text}
        count += 1
    seconds = time.perf_counter() - start
    reason = "stopped" if stop.is_set() else "length" if count >= settings.max_new_tokens else "end_of_text"
    yield {"event": "done", "tokens": count, "seconds": round(seconds, 4), "reason": reason,
           "tokens_per_second": round(count / seconds, 1) if seconds > 0 else 0.0,
           "first_token_ms": round(first * 1000, 1) if first is not None else None,
           "stopped": stop.is_set()}
