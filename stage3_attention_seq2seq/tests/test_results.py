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
                                                          "stage3_lengths"}
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
