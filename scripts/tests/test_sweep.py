"""scripts/sweep.py: a grid over a real train.py, several seeds, a table and a plot; resumable; bad input."""
import json
import random

import pytest

from scripts import sweep

WORDS = "the king queen lord my good sir what thou art not shall be love death night day".split()


@pytest.fixture
def shakespeare(tmp_path):
    rng = random.Random(0)
    lines = [f"ROMEO:\n{' '.join(rng.choice(WORDS) for _ in range(8)).capitalize()}.\n" for _ in range(600)]
    (tmp_path / "tiny_shakespeare").mkdir()
    (tmp_path / "tiny_shakespeare" / "input.txt").write_text("\n".join(lines), encoding="utf-8")
    return tmp_path


def fixed(data, tmp_path):
    return ["--", "--data_dir", str(data), "--cache_dir", str(tmp_path / "cache"), "--n_layer", "1", "--n_head", "2",
            "--n_embd", "16", "--block_size", "16", "--batch_size", "4", "--max_steps", "6", "--eval_interval", "6",
            "--eval_iters", "2", "--warmup_steps", "1", "--num_threads", "1", "--device", "cpu"]


def test_grid_times_seeds_runs_and_summarises(shakespeare, tmp_path, cli, capsys):
    out = tmp_path / "sweep"
    argv = ["stage5_gpt/train.py", "--grid", "lr=1e-3,1e-2", "--seeds", "0", "1", "--metric", "val_loss",
            "--out", str(out), *fixed(shakespeare, tmp_path)]
    code, stdout, err = cli(sweep.main, argv)
    assert code == 0, err
    results = json.loads((out / "results.json").read_text())
    assert len(results["rows"]) == 4 and {r["seed"] for r in results["rows"]} == {0, 1}
    assert all((out / f"lr{lr}_seed{s}" / "best.pt").is_file() for lr in ("1e-3", "1e-2") for s in (0, 1))
    table = (out / "results.md").read_text()
    assert "val_loss (mean)" in table and table.count("\n| ") == 3 and (out / "sweep.png").is_file()
    means = {lr: sum(r["score"] for r in results["rows"] if r["setting"]["lr"] == lr) / 2 for lr in ("1e-3", "1e-2")}
    assert f"best: {{'lr': '{min(means, key=means.get)}'}}" in stdout
    # a second start finds every run finished and only rebuilds the summary
    code, stdout, err = cli(sweep.main, argv)
    assert code == 0 and "$ " not in stdout


def test_random_picks_and_bad_input(shakespeare, tmp_path, cli):
    assert len(sweep.settings({"a": ["1", "2", "3"], "b": ["x", "y"]}, 4, seed=0)) == 4
    assert sweep.settings({"a": ["1", "2"]}, 0, 0) == [{"a": "1"}, {"a": "2"}]
    code, _, err = cli(sweep.main, ["stage5_gpt/train.py", "--grid", "lr", "--metric", "m", "--out", tmp_path])
    assert code == 2 and "FLAG=V1,V2" in err
    code, _, err = cli(sweep.main, ["nowhere/train.py", "--grid", "lr=1", "--metric", "m", "--out", tmp_path])
    assert code == 2 and "is not one of the course's training programs" in err
    code, _, err = cli(sweep.main, ["stage5_gpt/train.py", "--grid", "lr=1e-3", "--metric", "accuracy", "--out",
                                    tmp_path / "s", *fixed(shakespeare, tmp_path)])
    assert code == 2 and "no metric 'accuracy'" in err
