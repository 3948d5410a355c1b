"""The README's results tables are exactly what bench.py makes from the committed metrics files."""
import json
from pathlib import Path

from scripts.report import replace_block
from stage1_mlp import bench

RESULTS = Path(__file__).resolve().parents[1] / "results"


def test_readme_tables_are_generated_from_results():
    blocks = bench.tables("imdb")
    assert set(blocks) == {"stage1_overview", "stage1_imdb", "stage1_imdb_gpu"}   # top README: course_report.py
    readme = bench.STAGE_DIR / "README.md"
    text = readme.read_text(encoding="utf-8")
    for name, body in blocks.items():
        assert replace_block(text, name, body) == text, f"{readme}: run `python stage1_mlp/bench.py --tables_only`"


def test_results_files_meet_the_targets():
    """The committed benchmark run: >= 90.5% on IMDb test, the two implementations within 0.3 points."""
    test = {impl: json.loads((RESULTS / f"imdb_{impl}_test.json").read_text()) for impl in ("torch", "scratch")}
    train = {impl: json.loads((RESULTS / f"imdb_{impl}_train.json").read_text()) for impl in ("torch", "scratch")}
    for impl in ("torch", "scratch"):
        assert test[impl]["metrics"]["accuracy"] >= 0.905
        assert test[impl]["test_size"] == 25000 and train[impl]["train_size"] == 22500
        assert train[impl]["train_seconds"] <= 300
    assert abs(test["torch"]["metrics"]["accuracy"] - test["scratch"]["metrics"]["accuracy"]) <= 0.003


def test_overview_is_made_from_the_results_files():
    """results/overview.json (quick / default / GPU, read by the course's roadmap) is what bench.py makes now."""
    committed = json.loads((RESULTS / "overview.json").read_text())
    assert committed == json.loads(json.dumps(bench.overview())), "run `python stage1_mlp/bench.py --tables_only`"
    quick = json.loads((RESULTS / "quick.json").read_text())
    assert quick["test_accuracy"] > 0.85 and quick["test_size"] == 25000 and quick["seconds"] <= 180
