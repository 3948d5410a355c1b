"""Which models the learner has: every stage's best checkpoints and its runs' latest states, found on disk.

The page picks models by id (a checkpoint's path relative to the course root), and only ids of this catalog are
ever loaded: the browser never names a file. For each kind of model that is missing, the catalog says which
command trains it and how long that took when the course measured it (read from the stage's results files).
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from scripts.common import inside, short_message, training_progress, unreadable_kind

STAGES = ("stage1_mlp", "stage2_rnn_lstm", "stage3_attention_seq2seq", "stage4_transformer", "stage5_gpt")
# (stage, the "model" a checkpoint names) -> what the playground does with it
TASKS = {
    ("stage1_mlp", "ngram_mlp"): "classify",
    ("stage2_rnn_lstm", "rnn_lm"): "generate",
    ("stage2_rnn_lstm", "rnn_classifier"): "classify",
    ("stage3_attention_seq2seq", "seq2seq_attention"): "translate",
    ("stage4_transformer", "transformer_mt"): "translate",
    ("stage4_transformer", "transformer_classifier"): "classify",
    ("stage5_gpt", "gpt"): "generate",
    ("stage5_gpt", "gpt_classifier"): "classify",
}
TASK_NAMES = {"classify": "分类", "translate": "翻译", "generate": "生成文字"}
NAMES = {"ngram_mlp": "MLP", "rnn_lm": "RNN LM", "rnn_classifier": "RNN 分类器", "seq2seq_attention": "Seq2Seq+注意力",
         "transformer_mt": "Transformer", "transformer_classifier": "Transformer 编码器", "gpt": "GPT-mini",
         "gpt_classifier": "GPT-mini 分类器"}


@dataclass
class Entry:
    id: str            # the checkpoint's path relative to the root, with "/": what the page sends back
    stage: str
    model: str         # the checkpoint's own "model" field
    tasks: list[str]   # "classify", "translate", "generate" (a multi-task GPT: translate and generate)
    dataset: str
    kind: str          # "best" (checkpoints/*.pt) or "last" (a run's runs/<name>/last.pt)
    label: str
    progress: str
    path: Path

    def public(self) -> dict[str, Any]:
        """What the page sees: everything but the absolute path."""
        return {k: v for k, v in asdict(self).items() if k != "path"}


def read_header(path: Path) -> dict[str, Any] | str:
    """The plain fields of a checkpoint (stage, model, dataset, counters, settings), memory-mapped so a large file
    costs almost nothing to look at; for a file that is not a readable course checkpoint, the reason (a string)."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:  # a half-written, foreign or damaged file: listed as unreadable, with why
        return f"读不出来：{plain_reason(path, err)}"
    if not isinstance(ckpt, dict) or ckpt.get("format") != "my_llm-checkpoint-v1":
        return "不是本课程写的 checkpoint"
    return {k: v for k, v in ckpt.items() if isinstance(v, (str, int, float, bool, dict, list)) and k != "model_state"
            and not k.endswith("_state")}


UNREADABLE_ZH = {"empty": "空文件（0 字节）",
                 "truncated": "文件不完整（可能写到一半，或被截断了）：重新训练或换一个文件",
                 "foreign": "不是 torch.save 写的 checkpoint", "unsafe": "里面有不安全的内容（pickle 代码），不加载"}


def plain_reason(path: Path, err: Exception) -> str:
    """Why torch.load failed, in words a learner can act on (scripts.common.unreadable_kind, said in Chinese)."""
    return UNREADABLE_ZH.get(unreadable_kind(path, err)) or short_message(err)


def tasks_of(stage: str, header: dict[str, Any]) -> list[str]:
    task = TASKS.get((stage, header.get("model")))
    if task is None:
        return []
    info = header.get("finetune")
    if task == "generate" and isinstance(info, dict) and info.get("kind") == "prompt" \
            and "translate" in (info.get("tasks") or []):
        return ["translate", "generate"]          # a multi-task GPT: translation is one of its tasks
    return [task]


HEADERS: dict[Path, tuple[tuple[int, int], dict[str, Any] | str]] = {}   # path -> (its mtime and size, header)


def cached_header(path: Path) -> dict[str, Any] | str:
    """read_header, remembered while the file's modification time and size stay the same: the page asks for the
    list often, and reading forty checkpoints takes seconds."""
    try:
        stat = path.stat()
    except OSError as err:
        return f"读不了（{err.strerror}）"
    key = (stat.st_mtime_ns, stat.st_size)
    if path not in HEADERS or HEADERS[path][0] != key:
        HEADERS[path] = (key, read_header(path))
    return HEADERS[path][1]


def entry_for(root: Path, path: Path, stage: str, kind: str) -> Entry | str | None:
    """The catalog entry of a checkpoint; a string saying why a .pt file cannot be used; None for a checkpoint the
    playground has nothing to do with (a model kind without a tab)."""
    if not inside(root, path):
        return "链接到课程目录之外的文件，不读取"
    header = cached_header(path)
    if isinstance(header, str):
        return header
    if header.get("stage") != stage:
        return f"是 {str(header.get('stage'))[:40]} 的 checkpoint，却放在 {stage} 里"
    tasks = tasks_of(stage, header)
    if not tasks:
        return None
    rel = path.relative_to(root).as_posix()
    name = path.parent.name if kind == "last" else path.stem
    dataset = str(header.get("dataset") or "?")
    model = str(header.get("model"))
    label = f"{stage.split('_')[0]} {NAMES.get(model, model)} · {name}" + (" (最新状态)" if kind == "last" else "")
    return Entry(rel, stage, model, tasks, dataset, kind, label, training_progress(header), path)


def scan(root: Path, unreadable: list[dict[str, str]] | None = None) -> list[Entry]:
    """Every model of the five stages under `root`, best checkpoints first, each group newest first. Files that
    cannot be used go to `unreadable` ({"id", "why"}) when a list is given."""
    root = Path(root).resolve()
    entries = []
    for stage in STAGES:
        found = [(p, "best") for p in (root / stage / "checkpoints").glob("*.pt")]
        found += [(p, "last") for p in (root / stage / "runs").glob("*/last.pt")]
        found.sort(key=lambda item: (item[1] != "best", -mtime(item[0]), str(item[0])))
        for path, kind in found:
            entry = entry_for(root, path, stage, kind) if path.is_file() else "不是文件"
            if isinstance(entry, Entry):
                entries.append(entry)
            elif isinstance(entry, str) and unreadable is not None:
                unreadable.append({"id": path.relative_to(root).as_posix(), "why": entry})
    return entries


def mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


@dataclass
class Slot:
    """A kind of model the playground can show, and how to train one."""
    stage: str
    task: str
    what: str
    command: str
    timing: str        # results file (relative to the root) holding how long the command took
    key: str           # its seconds field


SLOTS = [
    Slot("stage1_mlp", "classify", "MLP 文本分类器（IMDb）", "python stage1_mlp/train.py --preset quick",
         "stage1_mlp/results/quick.json", "seconds"),
    Slot("stage2_rnn_lstm", "generate", "LSTM 字符级语言模型（莎士比亚）",
         "python stage2_rnn_lstm/train.py --preset quick", "stage2_rnn_lstm/results/quick.json", "wall_seconds"),
    Slot("stage2_rnn_lstm", "classify", "LSTM 文本分类器（IMDb）",
         "python stage2_rnn_lstm/train_classifier.py --dataset imdb",
         "stage2_rnn_lstm/results/classify_imdb_test.json", "train_seconds"),
    Slot("stage3_attention_seq2seq", "translate", "带注意力的 Seq2Seq 英译法",
         "python stage3_attention_seq2seq/train.py --preset quick", "stage3_attention_seq2seq/results/quick.json",
         "wall_seconds"),
    Slot("stage4_transformer", "translate", "Transformer 英译法", "python stage4_transformer/train.py --preset quick",
         "stage4_transformer/results/quick.json", "wall_seconds"),
    Slot("stage4_transformer", "classify", "Transformer 编码器文本分类器（IMDb）",
         "python stage4_transformer/train_classifier.py --dataset imdb",
         "stage4_transformer/results/classify_imdb_test.json", "train_seconds"),
    Slot("stage5_gpt", "generate", "GPT-mini 字符级语言模型（莎士比亚）", "python stage5_gpt/train.py --preset quick",
         "stage5_gpt/results/quick.json", "seconds"),
    Slot("stage5_gpt", "classify", "GPT-mini 微调的分类器（IMDb）",
         "python stage5_gpt/train.py --preset imdb && python stage5_gpt/finetune.py "
         "--base stage5_gpt/checkpoints/gpt_imdb_bpe.pt --task imdb --preset cpu",
         "stage5_gpt/results/cpu_finetune.json", "total_seconds"),
    Slot("stage5_gpt", "translate", "GPT-mini 多任务模型（这里用它的翻译任务；时间只含微调，先要一个 BPE 底座："
         "python stage5_gpt/train.py --preset gutenberg）",
         "python stage5_gpt/finetune.py --base stage5_gpt/checkpoints/gpt_gutenberg_bpe.pt --task multi "
         "--ag_news_source test_carveout",
         "stage5_gpt/results/finetune_translate_multitask_test.json", "train_seconds"),
]


def measured(root: Path, slot: Slot) -> tuple[float | None, str]:
    """Minutes the slot's command took when measured, and on what hardware ("" when not measured)."""
    try:
        record = json.loads((Path(root) / slot.timing).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None, ""
    seconds = record.get(slot.key) if isinstance(record, dict) else None
    if not isinstance(seconds, (int, float)) or not math.isfinite(seconds):
        return None, ""
    return round(seconds / 60, 1), str(record.get("hardware") or record.get("device") or "")


def missing(root: Path, entries: list[Entry]) -> list[dict[str, Any]]:
    """The kinds of model no entry provides, each with the command that trains one and its measured time."""
    have = {(e.stage, task) for e in entries for task in e.tasks}
    out = []
    for slot in SLOTS:
        if (slot.stage, slot.task) in have:
            continue
        minutes, hardware = measured(root, slot)
        out.append({"stage": slot.stage, "task": slot.task, "what": slot.what, "command": slot.command,
                    "minutes": minutes, "hardware": hardware})
    return out


class Catalog:
    """The models under a root, rescanned when the page asks (a model trained meanwhile shows up)."""

    def __init__(self, root: Path):
        self.root = Path(root).resolve()
        self.entries: dict[str, Entry] = {}
        self.unreadable: list[dict[str, str]] = []

    def refresh(self) -> list[Entry]:
        unreadable: list[dict[str, str]] = []
        found = scan(self.root, unreadable)
        self.entries, self.unreadable = {e.id: e for e in found}, unreadable
        return found

    def get(self, model_id: Any, task: str) -> Entry:
        """The entry of `model_id` for `task`; KeyError with a message the page can show otherwise."""
        if not isinstance(model_id, str) or model_id not in self.entries:
            self.refresh()                       # trained since the page loaded?
        entry = self.entries.get(model_id) if isinstance(model_id, str) else None
        if entry is None:
            raise KeyError(f"没有找到模型 {str(model_id)[:80]!r}：请从列表中选择（刷新页面可看到新训练的模型）")
        if task not in entry.tasks:
            raise KeyError(f"模型 {entry.id} 不能用来{TASK_NAMES.get(task, task)}")
        return entry
