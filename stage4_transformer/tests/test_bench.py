"""bench.py's speed part runs (on the tiny corpus) and its tables are made from what results/ holds."""
import json

from stage4_transformer import bench


def test_speed_part_measures_all_four_models(mt_data, tmp_path, monkeypatch):
    monkeypatch.setattr(bench, "RESULTS", tmp_path)
    bench.speed(str(mt_data), steps=2)
    data = json.loads((tmp_path / "speed.json").read_text())
    assert [r["model"] for r in data["rows"]] == ["scratch", "scratch + F.sdpa", "scratch + fast dropout",
                                                 "nn.Transformer"]
    assert all(r["tokens_per_s"] > 0 for r in data["rows"]) and data["rows"][-1]["ratio"] == 1.0
    assert 4 < data["softmax_columns"] < data["vocab"]          # the default softmax: target-side pieces only
    blocks = bench.readme_blocks()[bench.STAGE_DIR / "README.md"]
    assert set(blocks) == {"stage4_speed", "stage4_overview"} and "nn.Transformer" in blocks["stage4_speed"]


def test_quick_part_times_train_and_evaluate_and_writes_the_overview(mt_data, tmp_path, monkeypatch):
    """The quick part's pipeline on the tiny corpus (train.py's flags shrunk: the real preset is minutes of work)."""
    from stage4_transformer import evaluate, train
    from stage4_transformer.tests.test_train import TINY
    stage, results = tmp_path / "stage", tmp_path / "results"
    results.mkdir()
    calls = []

    def fake_run(script, *argv):
        calls.append((script, argv))
        argv = [*argv, "--data_dir", str(mt_data), "--num_threads", "1"]
        if script == "train.py":
            assert argv[:2] == ["--preset", "quick"]
            argv += [*TINY, "--epochs", "1", "--limit", "200", "--val_limit", "10",
                     "--out_dir", str(stage / "runs" / "transformer_scratch_multi30k_quick"),
                     "--checkpoint", str(stage / "checkpoints" / "best_transformer_quick.pt")]
            assert train.main(argv) == 0
        else:
            assert script == "evaluate.py" and evaluate.main([*argv, "--limit", "5"]) == 0
    monkeypatch.setattr(bench, "run", fake_run)
    monkeypatch.setattr(bench, "STAGE_DIR", stage)
    monkeypatch.setattr(bench, "RESULTS", results)
    bench.quick_run([])
    assert [script for script, _ in calls] == ["train.py", "evaluate.py"]
    quick = json.loads((results / "quick.json").read_text())
    assert quick["command"] == "python stage4_transformer/train.py --preset quick"
    assert quick["wall_seconds"] >= quick["train_wall_seconds"] > 0 and quick["beam_size"] == 5
    assert [t["en"] for t in quick["translations"]] == list(bench.QUICK_SENTENCES)
    assert set(quick["load_average_1min"]) == {"before", "after", "cores"}
    summary = bench.overview()
    assert summary["stage"] == "stage4_transformer" and [r["run"] for r in summary["rows"]] == ["quick", "gpu"]
    for row in summary["rows"]:
        assert set(row) == {"run", "command", "minutes", "score", "hardware", "source"}
    assert summary["rows"][0]["score"].startswith("test BLEU ") and "beam 5" in summary["rows"][0]["score"]
    assert summary["rows"][1] == {"run": "gpu", "command": "python stage4_transformer/train.py --device cuda",
                                  "minutes": None, "score": "not measured", "hardware": None, "source": None}
    blocks = bench.readme_blocks()[stage / "README.md"]
    assert "Two dogs are playing in the snow." in blocks["stage4_quick"] and "| quick |" in blocks["stage4_overview"]
