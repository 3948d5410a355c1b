"""The first hour: the quick preset's flags, a run you can watch, the newest model found without --checkpoint,
and the quick part of bench.py, all on tiny data."""
import json
import os
import time
from pathlib import Path

import pytest
import torch

from scripts.common import load_checkpoint
from stage5_gpt import bench, evaluate, generate, train
from scripts.testing import ctrl_c_after_steps
from stage5_gpt.tests.conftest import tiny_args


def test_the_quick_preset_fills_unset_flags_and_writes_its_own_files():
    args = train.resolve_args(train.build_parser().parse_args(["--preset", "quick"]))
    for key, value in train.PRESETS["quick"].items():
        assert getattr(args, key) == value, key
    assert args.dataset == "shakespeare" and args.tokenizer == "char"
    assert Path(args.checkpoint) == train.STAGE_DIR / "checkpoints" / "gpt_shakespeare_char_quick.pt"
    assert Path(args.out_dir) == train.STAGE_DIR / "runs" / "gpt_shakespeare_char_quick"
    default = train.resolve_args(train.build_parser().parse_args([]))
    assert default.checkpoint != args.checkpoint and default.out_dir != args.out_dir
    given = train.resolve_args(train.build_parser().parse_args(["--preset", "quick", "--max_steps", "7"]))
    assert given.max_steps == 7 and given.n_embd == train.PRESETS["quick"]["n_embd"]


def test_help_names_the_quick_preset_and_its_defaults(cli):
    code, out, _ = cli(train.main, ["--help"])
    assert code == 0 and "quick" in out and "quick " + str(train.PRESETS["quick"]["max_steps"]) in out


def test_a_stopped_run_can_be_watched(lm_data, tmp_path, cli, monkeypatch):
    """Ctrl-C after the first evaluation: history.json, curves.png, TensorBoard events, a sample in the log and
    progress.json saying 'interrupted' are already there."""
    ctrl_c_after_steps(monkeypatch, 8)
    code, _, err = cli(train.main, tiny_args(lm_data, tmp_path))
    assert code == 130, err
    run = tmp_path / "run"
    history = json.loads((run / "history.json").read_text())
    assert [row["step"] for row in history["evals"]] == [6] and len(history["curve"]) >= 6
    assert (run / "curves.png").is_file() and list(run.glob("events.out.tfevents.*"))
    progress = json.loads((run / "progress.json").read_text())
    assert progress["state"] == "interrupted" and progress["step"] == 8 and progress["total_steps"] == 12
    assert progress["model"] == "gpt_char" and progress["dataset"] == "shakespeare"
    log = (run / "train.log").read_text()
    assert "sample at step 6:\nROMEO:" in log and "tokens/s" in log


def test_the_sample_is_the_same_for_the_same_model_and_leaves_the_rng_alone(lm_data, tmp_path, cli):
    code, _, err = cli(train.main, tiny_args(lm_data, tmp_path))
    assert code == 0, err
    ckpt = load_checkpoint(tmp_path / "best.pt", "stage5_gpt")
    model, tokenizer = train.gpt_from_checkpoint(ckpt, "best.pt")
    state = torch.get_rng_state()
    first = train.sample_text(model, tokenizer, "shakespeare", torch.device("cpu"))
    assert torch.equal(torch.get_rng_state(), state)
    assert first == train.sample_text(model, tokenizer, "shakespeare", torch.device("cpu"))
    assert first.startswith("ROMEO:") and len(first) == len("ROMEO:") + train.SAMPLE_CHARS
    log = (tmp_path / "run" / "train.log").read_text()
    assert log.count("sample at step") == 2


def test_without_checkpoint_the_newest_model_is_loaded_and_named(lm_data, tmp_path, cli, monkeypatch):
    """A stage folder with only a run's last.pt: generate and evaluate load it and say so; a best checkpoint
    written later wins; with nothing trained the error says how to train one."""
    stage = tmp_path / "stage"
    monkeypatch.setattr(generate, "STAGE_DIR", stage)
    code, _, err = cli(generate.main, ["--max_new_tokens", "5"])
    assert code == 2 and "train one first" in err and "--preset quick" in err

    code, _, err = cli(train.main, tiny_args(lm_data, tmp_path / "t", "--out_dir", stage / "runs" / "gpt_x",
                                             "--checkpoint", tmp_path / "elsewhere.pt"))
    assert code == 0, err
    code, out, err = cli(generate.main, ["--prompt", "ROMEO:", "--max_new_tokens", "5", "--device", "cpu"])
    assert code == 0 and out.startswith("ROMEO:"), err
    assert "model: " in err and "runs/gpt_x/last.pt (the latest state of a run; preset char, step 12 of 12" in err
    code, out, err = cli(evaluate.main, ["--data_dir", lm_data, "--device", "cpu",
                                         "--metrics_out", tmp_path / "m.json"])
    assert code == 0 and "last.pt" in err and "loss" in out, err

    time.sleep(0.01)
    (stage / "checkpoints").mkdir()
    best = stage / "checkpoints" / "gpt_shakespeare_char_quick.pt"
    best.write_bytes((tmp_path / "elsewhere.pt").read_bytes())
    os.utime(best)
    code, _, err = cli(generate.main, ["--max_new_tokens", "5", "--device", "cpu"])
    assert code == 0 and "gpt_shakespeare_char_quick.pt (best checkpoint" in err, err
    code, _, err = cli(generate.main, ["--checkpoint", tmp_path / "missing.pt"])
    assert code == 2 and "gpt_shakespeare_char_quick.pt" in err


def test_gpt2_offline_is_one_line_without_retries(monkeypatch):
    from stage5_gpt.models import hf

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hf.hub_offline()
    huggingface_hub = pytest.importorskip("huggingface_hub")
    if isinstance(huggingface_hub.try_to_load_from_cache("gpt2", "config.json"), str):
        pytest.skip("gpt2 is in this machine's Hugging Face cache")
    tick = time.time()
    with pytest.raises(train.UserError, match="not in the local Hugging Face cache"):
        hf.load_gpt2("gpt2")
    assert time.time() - tick < 10


def test_bench_quick_part_and_overview_on_tiny_data(lm_data, tmp_path, monkeypatch):
    """The quick part end to end (train.py, evaluate.py, a sample) on a tiny model, and results/overview.json
    in the course's schema, with the rows not measured here marked so."""
    results = tmp_path / "results"
    results.mkdir()
    monkeypatch.setattr(bench, "RESULTS", results)
    monkeypatch.setattr(bench, "STAGE_DIR", tmp_path)
    tiny = [str(a) for a in tiny_args(lm_data, tmp_path)]
    model_flags = tiny[tiny.index("--cache_dir"):tiny.index("--num_threads")]   # not --out_dir/--checkpoint: bench's
    bench.quick(["--data_dir", str(lm_data), "--num_threads", "1"], train_flags=model_flags)
    quick = json.loads((results / "quick.json").read_text())
    assert quick["command"] == "python stage5_gpt/train.py --preset quick"
    assert quick["steps"] == 12 and quick["seconds"] > 0 and quick["sample"].startswith("ROMEO:")
    assert quick["val_loss"] > 0 and (results / "quick_history.json").is_file()
    summary = bench.overview()
    assert summary["stage"] == "stage5_gpt" and [r["run"] for r in summary["rows"]] == ["quick", "default", "gpu"]
    row = summary["rows"][0]
    assert set(row) == {"run", "command", "minutes", "score", "hardware", "source"}
    assert row["score"].startswith("val loss ") and row["source"] == "results/quick.json"
    assert summary["rows"][1] == {"run": "default", "command": "python stage5_gpt/train.py", "minutes": None,
                                  "score": "not measured", "hardware": None, "source": None}
