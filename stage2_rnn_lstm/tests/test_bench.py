"""bench.py --parts quick: the quick preset's pipeline (train.py, then evaluate.py, timed as a whole) on tiny data,
and results/overview.json in the course's schema."""
import json

from stage2_rnn_lstm import bench

TINY = ["--embed_dim", "16", "--hidden_dim", "16", "--batch_size", "4", "--seq_len", "16", "--limit", "2000",
        "--epochs", "1", "--warmup_steps", "2"]


def test_quick_part_runs_train_then_evaluate_and_writes_quick_json(lm_data, tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    result = bench.quick(["--data_dir", str(lm_data), "--num_threads", "1"], train_extra=TINY,
                         stage_dir=tmp_path / "stage", results=results)
    saved = json.loads((results / "quick.json").read_text())
    assert saved == result and saved["command"] == "python stage2_rnn_lstm/train.py --preset quick"
    assert saved["wall_seconds"] >= saved["fit_seconds"] > 0 and saved["cpu_seconds"] > 0 and saved["epochs"] == 1
    assert saved["val_loss"] > 0 and abs(saved["val_bpc"] - saved["val_loss"] / 0.6931) < 0.01
    assert saved["train_command"].startswith("python stage2_rnn_lstm/train.py --preset quick --out_dir ")
    assert saved["sample"].startswith("ROMEO:") and len(saved["sample"]) >= len("ROMEO:") + 200
    overview = bench.overview(results)
    assert [row["run"] for row in overview["rows"]] == ["quick", "gpu"]
    quick = overview["rows"][0]
    assert quick["minutes"] == round(saved["wall_seconds"] / 60, 1) and quick["source"] == "results/quick.json"
    assert quick["score"].startswith("val loss ") and quick["score"].endswith(" bits/char")


def test_committed_overview_is_made_from_the_results_files():
    committed = json.loads((bench.RESULTS / "overview.json").read_text())
    assert committed == bench.overview()
    assert [row["run"] for row in committed["rows"]] == ["quick", "default", "gpu"]
    for row in committed["rows"]:
        assert set(row) == {"run", "command", "minutes", "score", "hardware", "source"}
    gpu = committed["rows"][2]
    assert gpu["minutes"] is None and gpu["score"] == "not measured"
