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
    assert set(blocks) == {"stage4_speed"} and "nn.Transformer" in blocks["stage4_speed"]
