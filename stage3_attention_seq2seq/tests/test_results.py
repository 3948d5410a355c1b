"""The README's results tables are exactly what bench.py makes from the committed result files."""
import json
from pathlib import Path

from scripts.report import replace_block
from stage3_attention_seq2seq import bench
from stage3_attention_seq2seq.models.attention import ATTENTION_TYPES

RESULTS = Path(__file__).resolve().parents[1] / "results"


def test_readme_tables_are_generated_from_results():
    blocks = bench.readme_blocks()
    assert set(blocks[bench.STAGE_DIR / "README.md"]) == {"stage3_main", "stage3_examples", "stage3_attention",
                                                          "stage3_lengths", "stage3_runs", "stage3_quick_examples"}
    assert set(blocks) == {bench.STAGE_DIR / "README.md"}   # the top README's tables: scripts/course_report.py
    for readme, named in blocks.items():
        text = readme.read_text(encoding="utf-8")
        for name, body in named.items():
            assert replace_block(text, name, body) == text, \
                f"{readme} [{name}]: run `python stage3_attention_seq2seq/bench.py --tables_only`"


def test_results_meet_the_stage_targets():
    """Bahdanau + beam search: sacreBLEU >= 45 on test_2016_flickr within 30 minutes of training, default flags."""
    train = json.loads((RESULTS / "main_train.json").read_text())
    test = json.loads((RESULTS / "main_test.json").read_text())
    assert test["split"] == "test_2016_flickr" and test["attention_type"] == "bahdanau"
    assert test["metrics"]["bleu_beam"] >= 45 and "tok:13a" in test["metrics"]["bleu_signature"]
    assert train["train_seconds"] <= 30 * 60 and train["metrics"]["train_tgt_tokens_per_s"] > 0
    flags = {word for word in train["command"].split() if word.startswith("--")}
    assert flags <= {"--out_dir", "--checkpoint", "--data_dir"}, "the target is for the default settings"
    kinds = {json.loads((RESULTS / f"compare_{k}_test.json").read_text())["attention_type"] for k in ATTENTION_TYPES}
    assert kinds == set(ATTENTION_TYPES)
    lines = (RESULTS / "main_translations.txt").read_text(encoding="utf-8").splitlines()
    assert len(lines) == test["metrics"]["sentences"] == 1000


def test_overview_is_made_from_the_result_files():
    """results/overview.json (the course's quick / default / GPU table) holds what bench.py reads from results/."""
    overview = json.loads((RESULTS / "overview.json").read_text())
    assert overview == bench.overview(), "run `python stage3_attention_seq2seq/bench.py --tables_only`"
    assert [row["run"] for row in overview["rows"]] == ["quick", "default", "gpu"]
    assert overview["rows"][2]["minutes"] is None and overview["rows"][2]["score"] == "not measured"


def test_quick_preset_translates_understandably():
    """The quick preset, run as a learner runs it: test BLEU (beam 5) of at least 30, and its own reference band."""
    quick = json.loads((RESULTS / "quick.json").read_text())
    assert quick["command"] == bench.QUICK_COMMAND and quick["test"]["bleu_beam"] >= 30
    flags = {word for word in quick["train_command"].split() if word.startswith("--")}
    assert flags <= {"--preset", "--out_dir", "--checkpoint", "--data_dir", "--num_threads"}
    assert len(quick["examples"]) == bench.EXAMPLES and all(row["output"] for row in quick["examples"])
    reference = json.loads((RESULTS.parent / "reference" / "quick.json").read_text())
    assert reference["command"] == bench.QUICK_COMMAND and reference["seeds"] == [0, 1, 2]


def test_a_timing_on_a_busy_machine_says_so():
    assert bench.busy_note([0.3, 1.2]) == ""
    assert bench.busy_note([0.3, 99.0]) == ", shared with other jobs (load average up to 99.0)"
