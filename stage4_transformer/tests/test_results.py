"""The README tables are exactly what bench.py makes from the committed result files, and they meet the floors."""
import json
from pathlib import Path

from scripts.report import replace_block
from stage4_transformer import bench

RESULTS = Path(__file__).resolve().parents[1] / "results"


def load(name: str) -> dict:
    return json.loads((RESULTS / name).read_text())


def test_readme_tables_are_generated_from_results():
    blocks = bench.readme_blocks()
    assert set(blocks[bench.STAGE_DIR / "README.md"]) == {"stage4_translation", "stage4_cache", "stage4_speed",
                                                          "stage4_classify"}
    assert set(blocks) == {bench.STAGE_DIR / "README.md"}   # the top README's tables: scripts/course_report.py
    for readme, named in blocks.items():
        text = readme.read_text(encoding="utf-8")
        for name, body in named.items():
            assert replace_block(text, name, body) == text, \
                f"{readme} [{name}]: run `python stage4_transformer/bench.py --tables_only`"


def test_translation_meets_the_bleu_floor_within_stage_3s_budget():
    """Default flags, beam search: sacreBLEU >= 50, trained in no more time than stage 3 on the same machine.

    The issue's second translation floor (above stage 3's BLEU) is NOT met; the README says so and asserts nothing."""
    train, test = load("main_train.json"), load("main_test.json")
    stage3 = json.loads((bench.STAGE3_RESULTS / "main_test.json").read_text())
    stage3_train = json.loads((bench.STAGE3_RESULTS / "main_train.json").read_text())
    assert test["split"] == stage3["split"] == "test_2016_flickr"
    assert test["metrics"]["bleu_signature"] == stage3["metrics"]["bleu_signature"]
    assert test["metrics"]["bleu_beam"] >= 50
    assert train["train_seconds"] <= stage3_train["train_seconds"] <= 30 * 60
    alpha = json.loads((RESULTS / "main_alpha.json").read_text())
    assert alpha["split"] == "valid" and float(alpha["chosen"]) == test["metrics"]["alpha"]
    assert alpha["val_bleu_beam"][alpha["chosen"]] == max(alpha["val_bleu_beam"].values())
    assert train["hardware"] == stage3_train["hardware"]
    flags = {word for word in train["command"].split() if word.startswith("--")}
    assert flags <= {"--out_dir", "--checkpoint", "--data_dir"}, "the floor is for the default settings"
    lines = (RESULTS / "main_translations.txt").read_text(encoding="utf-8").splitlines()
    assert len(lines) == test["metrics"]["sentences"] == 1000


def test_cache_changes_speed_not_output():
    cached, uncached = load("main_test.json")["metrics"], load("main_test_no_cache.json")["metrics"]
    assert cached["kv_cache"] and not uncached["kv_cache"]
    assert cached["bleu_beam"] == uncached["bleu_beam"] and cached["bleu_greedy"] == uncached["bleu_greedy"]


def test_scratch_trains_at_least_0_8_times_as_fast_as_nn_transformer():
    rows = {row["model"]: row for row in load("speed.json")["rows"]}
    assert rows["scratch"]["tokens_per_s"] >= 0.8 * rows["nn.Transformer"]["tokens_per_s"]


def test_classifier_measured_on_imdb():
    imdb = load("classify_imdb_test.json")
    assert imdb["dataset"] == "imdb" and imdb["split"] == "test" and imdb["test_size"] == 25000
    assert 0.5 < imdb["metrics"]["accuracy"] <= 1 and imdb["metrics"]["latency_ms_bs1"] > 0
