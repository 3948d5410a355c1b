"""finetune.py end to end on tiny data: every method, multi-task prompts, LoRA merging, resume, bad input."""
import gzip
import io
import json
from pathlib import Path

import pytest
import torch

from scripts.common import checkpoint_header, load_checkpoint, save_checkpoint
from stage5_gpt import evaluate, finetune, generate, train
from stage5_gpt.data import tasks as T
from stage5_gpt.models.gpt import GPT, GPTConfig
from stage5_gpt.models.lora import add_lora
from scripts.testing import ctrl_c_after_steps
from stage5_gpt.tests.conftest import tiny_args


@pytest.fixture(scope="module")
def ft_data(lm_data, tiny_data, mt_data, tmp_path_factory) -> Path:
    """One data folder with tiny IMDb, AG News, Multi30k and Gutenberg, laid out like ../shared/data."""
    root = tmp_path_factory.mktemp("ft_data")
    for name, source in (("imdb", tiny_data), ("ag_news", tiny_data), ("multi30k", mt_data), ("gutenberg_en", lm_data)):
        (root / name).symlink_to(source / name)
    return root


@pytest.fixture(scope="module")
def base(ft_data, tmp_path_factory) -> Path:
    """A tiny pretrained BPE GPT (2 layers, 32 wide, context 64) to fine-tune."""
    out = tmp_path_factory.mktemp("base")
    from scripts.common import run_main

    args = tiny_args(ft_data, out, "--preset", "gutenberg", "--vocab_size", "300", "--n_layer", "2", "--n_embd", "32",
                     "--block_size", "64", "--max_steps", "20", "--eval_interval", "10")
    with pytest.raises(SystemExit) as info:
        run_main(train.main, [str(a) for a in args])
    assert info.value.code == 0
    return out / "best.pt"


def ft_args(base: Path, data: Path, out: Path, *extra) -> list:
    return ["--base", base, "--data_dir", data, "--out_dir", out / "run", "--checkpoint", out / "ft.pt",
            "--cache_dir", out / "cache", "--epochs", "2", "--batch_size", "8", "--eval_batch_size", "16",
            "--log_interval", "5", "--num_threads", "1", "--device", "cpu", *extra]


def read(path: Path) -> dict:
    return json.loads(Path(path).read_text())


@pytest.mark.parametrize("method", ["full", "head", "last_blocks", "lora", "scratch"])
def test_each_method_trains_only_its_parameters_and_scores_the_test_split(base, ft_data, tmp_path, cli, method):
    extra = ["--scratch", "--lr", "3e-3"] if method == "scratch" else ["--method", method, "--lr", "3e-3"]
    extra += {"last_blocks": ["--train_blocks", "1"], "lora": ["--lora_rank", "2"]}.get(method, [])
    code, _, err = cli(finetune.main, ft_args(base, ft_data, tmp_path, "--task", "imdb", *extra))
    assert code == 0, err
    result = read(tmp_path / "run" / "test_imdb.json")
    assert result["model"] == f"gpt_{method}" and result["test_size"] == 100 and result["train_size"] == 360
    assert 0 <= result["metrics"]["accuracy"] <= 1 and result["metrics"]["latency_ms_bs1"] > 0
    n_embd, layers, total = 32, 2, result["params"]
    head = n_embd * 2 + 2
    state = load_checkpoint(base, "stage5_gpt")["model_state"]
    block = sum(v.numel() for k, v in state.items() if k.startswith(("h.1.", "ln_f.")))   # last block, final norm
    expected = {"full": total, "scratch": total, "head": head, "last_blocks": block + head,
                # rank 2 on c_attn (32 -> 96) and both c_proj (32 -> 32, 128 -> 32) of each block
                "lora": layers * 2 * ((32 + 96) + (32 + 32) + (128 + 32)) + head}[method]
    assert result["trainable_params"] == expected
    saved = load_checkpoint(tmp_path / "ft.pt", "stage5_gpt", ["gpt_classifier"])
    assert not any("lora_" in k for k in saved["model_state"])          # LoRA is merged into the saved weights
    assert saved["finetune"]["scratch"] == (method == "scratch")


def test_full_fine_tuning_learns_the_tiny_task(base, ft_data, tmp_path, cli):
    code, _, err = cli(finetune.main, ft_args(base, ft_data, tmp_path, "--task", "imdb", "--lr", "2e-3",
                                              "--epochs", "8", "--dropout", "0", "--no-amp"))
    assert code == 0, err
    assert read(tmp_path / "run" / "test_imdb.json")["metrics"]["accuracy"] >= 0.7   # chance is 0.5; 0.8 here


def test_merged_lora_gives_the_outputs_of_the_adapted_model():
    torch.manual_seed(0)
    gpt = GPT(GPTConfig(vocab_size=50, block_size=16, n_layer=2, n_head=2, n_embd=16, dropout=0.0))
    model = T.GPTClassifier(gpt, 3, dropout=0.0)
    add_lora(gpt, rank=2, alpha=4.0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_()
    model.eval()
    idx, lengths = torch.randint(0, 50, (3, 16)), torch.tensor([16, 9, 4])
    state = finetune.finetuned_state(model)
    assert not any("lora_" in k for k in state)
    plain = T.GPTClassifier(GPT(GPTConfig(vocab_size=50, block_size=16, n_layer=2, n_head=2, n_embd=16)), 3).eval()
    plain.load_state_dict(state)
    torch.testing.assert_close(plain(idx, lengths), model(idx, lengths), rtol=1e-5, atol=1e-5)


def test_multitask_model_scores_each_task_and_answers_through_its_prompts(base, ft_data, tmp_path, cli, monkeypatch):
    code, _, err = cli(finetune.main, ft_args(base, ft_data, tmp_path, "--task", "multi", "--lr", "3e-3",
                                              "--ag_news_source", "test_carveout"))
    assert code == 0, err
    for task, split in (("imdb", "test"), ("ag_news", "test"), ("translate", "test_2016_flickr")):
        result = read(tmp_path / "run" / f"test_{task}.json")
        assert result["model"] == "gpt_multitask" and result["split"] == split
    translation = read(tmp_path / "run" / "test_translate.json")["metrics"]
    assert "BLEU" not in translation["bleu_signature"] and translation["bleu_signature"].startswith("nrefs:1")
    assert translation["examples"][0]["hypothesis"] is not None
    assert read(tmp_path / "run" / "test_ag_news.json")["data_source"] == "ag_news test split, carve-out"

    code, out, err = cli(evaluate.main, ["--checkpoint", tmp_path / "ft.pt", "--data_dir", ft_data, "--task",
                                         "translate", "--out_dir", tmp_path / "eval", "--device", "cpu"])
    assert code == 0 and "BLEU" in out, err
    assert read(tmp_path / "eval" / "test_translate.json")["dataset"] == "multi30k"
    code, out, err = cli(evaluate.main, ["--checkpoint", tmp_path / "ft.pt", "--data_dir", ft_data,
                                         "--dataset", "gutenberg", "--device", "cpu", "--metrics_out",
                                         tmp_path / "lm.json"])
    assert code == 0 and "bits/byte" in out, err                          # what fine-tuning did to the LM

    code, out, err = cli(generate.main, ["--checkpoint", tmp_path / "ft.pt", "--task", "translate", "--prompt",
                                         "A dog is running.", "--max_new_tokens", "12", "--device", "cpu"])
    assert code == 0 and out.startswith("A dog is running.\ntranslate:"), err
    monkeypatch.setattr("sys.stdin", io.StringIO(":settings\n:task imdb\n:settings\nGreat fun!\n:task poetry\n"
                                                 ":task none\nHello\n"))
    code, out, err = cli(generate.main, ["--checkpoint", tmp_path / "ft.pt", "--interactive", "--device", "cpu",
                                         "--max_new_tokens", "4"])
    assert code == 0, err
    assert "fine-tuned on imdb, ag_news, translate" in out and "task: imdb" in out and "imdb:" in out
    assert "unknown task 'poetry'" in out and "task: none" in out
    assert "temperature 0.8" in out and "temperature 0.0" in out          # free text samples; a task's answer is greedy
    # a temperature the user set stays when the task changes
    monkeypatch.setattr("sys.stdin", io.StringIO(":t 0.5\n:task imdb\n:settings\n"))
    code, out, err = cli(generate.main, ["--checkpoint", tmp_path / "ft.pt", "--interactive", "--device", "cpu"])
    assert code == 0 and "> task: imdb\n> temperature 0.5, top_k 0" in out, out


def test_a_classifier_in_generate_prints_the_class(base, ft_data, tmp_path, cli, monkeypatch):
    code, _, err = cli(finetune.main, ft_args(base, ft_data, tmp_path, "--task", "ag_news", "--epochs", "1"))
    assert code == 0, err
    code, out, err = cli(generate.main, ["--checkpoint", tmp_path / "ft.pt", "--prompt", "Team wins the match",
                                         "--device", "cpu"])
    assert code == 0 and out.split()[0] in ("World", "Sports", "Business", "Sci/Tech") and "%" in out, err
    code, _, err = cli(generate.main, ["--checkpoint", tmp_path / "ft.pt", "--device", "cpu"])
    assert code == 2 and "is a classifier" in err
    code, _, err = cli(evaluate.main, ["--checkpoint", tmp_path / "ft.pt", "--dataset", "gutenberg", "--device", "cpu"])
    assert code == 2 and "is a classifier, not a language model" in err
    monkeypatch.setattr("sys.stdin", io.StringIO("\nShares fall\n"))
    code, out, err = cli(generate.main, ["--checkpoint", tmp_path / "ft.pt", "--interactive", "--device", "cpu"])
    assert code == 0 and "empty line" in out and "%" in out, err


def test_ctrl_c_then_resume_gives_the_uninterrupted_run(base, ft_data, tmp_path, cli, monkeypatch):
    common = ["--task", "imdb", "--method", "lora", "--lora_rank", "2", "--lora_dropout", "0.1", "--lr", "3e-3"]
    code, _, err = cli(finetune.main, ft_args(base, ft_data, tmp_path / "a", *common))
    assert code == 0, err
    uninterrupted = load_checkpoint(tmp_path / "a" / "run" / "last.pt", "stage5_gpt")

    real_step = torch.optim.AdamW.step
    ctrl_c_after_steps(monkeypatch, 30)   # in the middle of the first epoch (45 steps each)
    code, _, err = cli(finetune.main, ft_args(base, ft_data, tmp_path / "b", *common))
    assert code == 130 and "--resume" in err
    monkeypatch.setattr(torch.optim.AdamW, "step", real_step)
    assert load_checkpoint(tmp_path / "b" / "run" / "last.pt", "stage5_gpt")["step"] == 30

    code, _, err = cli(finetune.main, ft_args(base, ft_data, tmp_path / "b", *common, "--resume"))
    assert code == 0, err
    resumed = load_checkpoint(tmp_path / "b" / "run" / "last.pt", "stage5_gpt")
    assert resumed["curve"] == uninterrupted["curve"]
    for name, value in uninterrupted["model_state"].items():
        assert torch.equal(resumed["model_state"][name], value), name
    assert read(tmp_path / "b" / "run" / "test_imdb.json")["metrics"]["accuracy"] == \
        read(tmp_path / "a" / "run" / "test_imdb.json")["metrics"]["accuracy"]

    code, _, err = cli(finetune.main, ft_args(base, ft_data, tmp_path / "b", *common, "--lora_rank", "4",
                                              "--resume"))
    assert code == 2 and "--lora_rank 2 (now 4)" in err


def test_bad_input_is_one_line_and_writes_nothing(base, ft_data, tmp_path, cli, lm_data):
    def run(*argv, out=tmp_path / "x"):
        code, _, err = cli(finetune.main, ft_args(base, ft_data, out, *argv))
        assert code == 2 and len(err.strip().splitlines()) == 1, err
        return err

    assert "does not exist" in run("--base", tmp_path / "nope.pt")
    other = tmp_path / "other.pt"
    save_checkpoint(other, {**checkpoint_header("stage4_transformer", "transformer"), "model_state": {}})
    assert "stage4_transformer" in run("--base", other)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(base.read_bytes()[:1000])
    assert "truncated or corrupt" in run("--base", truncated)
    assert "unknown task 'poetry'" in run("--task", "multi", "--tasks", "imdb,poetry")
    assert "--method head needs a classification head" in run("--task", "multi", "--method", "head")
    assert "exceeds the model's context" in run("--max_len", "100")
    assert "no resumable checkpoint" in run("--resume")
    assert "invalid choice" in run("--method", "prefix")
    assert "--train_blocks 5 exceeds" in run("--method", "last_blocks", "--train_blocks", "5")
    assert "no nn.Linear named ['q_proj']" in run("--method", "lora", "--lora_targets", "q_proj")

    # a character-level base model has no <|endoftext|> to mark the end of a text
    code, _, err = cli(train.main, tiny_args(lm_data, tmp_path / "char"))
    assert code == 0, err
    assert "needs a BPE tokenizer" in run("--base", tmp_path / "char" / "best.pt")

    # malformed task data: a broken line in IMDb's file
    bad = tmp_path / "bad_data"
    (bad / "imdb").mkdir(parents=True)
    with gzip.open(bad / "imdb" / "train.jsonl.gz", "wt") as f:
        f.write('{"text": "fine", "label": 1}\n{"text": broken\n')
    (bad / "imdb" / "test.jsonl.gz").write_bytes((ft_data / "imdb" / "test.jsonl.gz").read_bytes())
    code, _, err = cli(finetune.main, ft_args(base, bad, tmp_path / "y"))
    assert code == 2 and "train.jsonl.gz" in err, err
    assert not (tmp_path / "x" / "ft.pt").exists() and not (tmp_path / "y" / "ft.pt").exists()

    code, _, err = cli(evaluate.main, ["--checkpoint", base, "--task", "imdb", "--device", "cpu"])
    assert code == 2 and "needs a fine-tuned checkpoint" in err
    code, _, err = cli(generate.main, ["--checkpoint", base, "--task", "imdb", "--prompt", "Fine", "--device", "cpu"])
    assert code == 2 and "needs a multi-task model" in err


def test_continued_pretraining_on_imdb_text_keeps_the_base_and_reads_no_test_review(base, ft_data, tmp_path, cli):
    """train.py --init_from <checkpoint> --dataset imdb: the base's shape, tokenizer and weights as the start, the
    training reviews' text as the corpus (split as fine-tuning splits them), then fine-tuning starts from it."""
    from stage5_gpt.data.corpus import EOT, load_text

    splits = load_text("imdb", str(ft_data))
    train_reviews = T.load_task("imdb", "train", str(ft_data)).texts
    val_reviews = T.load_task("imdb", "val", str(ft_data)).texts
    assert splits["train"] == "".join(t + EOT for t in train_reviews)
    assert splits["val"] == "".join(t + EOT for t in val_reviews)
    assert not any(t in splits["train"] + splits["val"] for t in T.load_task("imdb", "test", str(ft_data)).texts)

    out = tmp_path / "adapted"
    args = tiny_args(ft_data, out, "--init_from", base, "--dataset", "imdb", "--block_size", "64", "--max_steps", "4",
                     "--eval_interval", "4", "--lr", "1e-3", "--min_lr", "1e-4")
    code, _, err = cli(train.main, args)
    assert code == 0, err
    start, adapted = load_checkpoint(base, "stage5_gpt"), load_checkpoint(out / "best.pt", "stage5_gpt")
    assert adapted["dataset"] == "imdb" and adapted["args"]["tokenizer"] == "base"
    assert adapted["tokenizer_fingerprint"] == start["tokenizer_fingerprint"]
    assert {k: v for k, v in adapted["config"].items() if k != "dropout"} == \
        {k: v for k, v in start["config"].items() if k != "dropout"}
    moved = [k for k, v in adapted["model_state"].items() if not torch.equal(v, start["model_state"][k])]
    assert moved and len(moved) < 2 * len(start["model_state"])   # trained from the base's weights, not new ones
    code, _, err = cli(finetune.main, ft_args(out / "best.pt", ft_data, tmp_path / "ft", "--epochs", "1"))
    assert code == 0, err

    def refused(init_from, fragment):
        code, _, err = cli(train.main, tiny_args(ft_data, tmp_path / "bad", "--init_from", init_from,
                                                 "--dataset", "imdb", "--block_size", "64"))
        assert code == 2 and len(err.strip().splitlines()) == 1 and fragment in err, err

    refused(tmp_path / "ft" / "ft.pt", "holds a 'gpt_classifier' model")
    refused(tmp_path / "nope.pt", "no such checkpoint or folder")
    code, _, err = cli(train.main, tiny_args(ft_data, tmp_path / "long", "--init_from", base, "--dataset", "imdb",
                                             "--block_size", "128"))
    assert code == 2 and "context of 64" in err
    assert not (tmp_path / "bad" / "best.pt").exists()


# ----------------------------------------------------------------------------- data/tasks.py
def test_fit_keeps_the_head_and_the_tail():
    assert T.fit(list(range(10)), 20) == list(range(10))
    assert T.fit(list(range(100)), 8) == [0, 1, 94, 95, 96, 97, 98, 99]


def test_lm_batch_scores_only_the_answer():
    ids, targets = T.lm_batch([([5, 6, 7], [8, 9]), ([5], [4])], pad=0)
    assert ids.tolist() == [[5, 6, 7, 8], [5, 4, 0, 0]]
    assert targets.tolist() == [[-1, -1, 8, 9], [4, -1, -1, -1]]


def test_bucket_batches_use_every_example_once_and_group_similar_lengths():
    lengths = [int(x) for x in torch.randint(1, 500, (1000,))]
    batches = T.bucket_batches(lengths, 16, torch.Generator().manual_seed(0))
    assert sorted(i for b in batches for i in b) == list(range(1000))
    spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches) / len(batches)
    assert spread < 60                                           # random batches would spread ~450
    assert T.bucket_batches(lengths, 16, torch.Generator().manual_seed(0)) == batches   # a function of the seed


def test_the_head_reads_the_last_real_token_whatever_the_padding():
    torch.manual_seed(0)
    model = T.GPTClassifier(GPT(GPTConfig(vocab_size=30, block_size=12, n_layer=1, n_head=2, n_embd=8)), 2).eval()
    seqs = [[1, 2, 3, 4, 5], [6, 7]]
    ids, lengths = T.pad_batch(seqs, pad=0)
    together = model(ids, lengths)
    for row, seq in enumerate(seqs):
        alone = model(torch.tensor([seq]), torch.tensor([len(seq)]))
        torch.testing.assert_close(together[row], alone[0], rtol=1e-5, atol=1e-5)


def test_batched_greedy_decoding_equals_one_at_a_time():
    torch.manual_seed(0)
    gpt = GPT(GPTConfig(vocab_size=30, block_size=24, n_layer=1, n_head=2, n_embd=8)).eval()
    prompts = [[1, 2, 3], [4, 5, 6], [7, 8], [9, 10, 11, 12]]
    together = T.greedy_decode(gpt, prompts, stop=0, max_new_tokens=lambda n: 6, batch_size=8,
                               device=torch.device("cpu"), amp=False)
    alone = [T.greedy_decode(gpt, [p], 0, lambda n: 6, 1, torch.device("cpu"), False)[0] for p in prompts]
    assert together == alone and all(0 not in out for out in together)


def test_ag_news_carveout_splits_are_disjoint_and_fixed(tiny_data):
    splits = {s: T.load_task("ag_news", s, str(tiny_data), "test_carveout") for s in ("train", "val", "test")}
    assert [len(splits[s]) for s in ("train", "val", "test")] == [57, 6, 17]     # 80 rows: 21% test, 90/10
    texts = [set(splits[s].texts) for s in splits]
    assert not (texts[0] & texts[2]) and not (texts[1] & texts[2])
    assert T.load_task("ag_news", "test", str(tiny_data), "test_carveout").texts == splits["test"].texts


def test_finetune_flags_in_both_forms():
    parser = finetune.build_parser()
    assert parser.parse_args(["--scratch"]).scratch is True and parser.parse_args(["--no-scratch"]).scratch is False
    assert parser.parse_args([]).amp is True and parser.parse_args(["--no-amp"]).amp is False
    assert parser.parse_args(["--model_path", "ft.pt"]).checkpoint == "ft.pt"


def test_a_fine_tuning_run_can_be_watched_and_compared_while_it_trains(base, ft_data, tmp_path, cli):
    """One bar for the run, TensorBoard events, history.json/curves.png and progress.json after each epoch."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from scripts import reference
    from scripts.monitor import read_progress

    code, _, err = cli(finetune.main, ft_args(base, ft_data, tmp_path, "--task", "imdb", "--method", "head"))
    assert code == 0, err
    run = tmp_path / "run"
    history = read(run / "history.json")
    assert [row["epoch"] for row in history["evals"]] == [1, 2] and (run / "curves.png").stat().st_size > 1000
    progress = read_progress(run)
    assert progress["state"] == "finished" and progress["step"] == progress["total_steps"] == history["curve"][-1][0]
    assert progress["model"] == read(run / "test_imdb.json")["model"] == "gpt_head"
    events = EventAccumulator(str(run))
    events.Reload()
    assert len(events.Scalars("train/loss")) == progress["step"] and len(events.Scalars("eval/val_acc_imdb")) == 2
    assert reference.read_run(run).curves["train_loss"]        # the course's reference tool reads the run
