"""scripts/course_report.py: tables from result files (with and without stage 5), README blocks, --check, bad input."""
import json
from pathlib import Path

import pytest

from scripts import course_report
from scripts.common import REPO_ROOT, UserError
from scripts.report import replace_block

CPU = "Test CPU, 2 cores, 2 torch threads"
BLOCKS = ("course_classification", "course_translation", "course_language_models", "course_runs", "course_quick")


def metrics_file(root: Path, path: str, **fields) -> None:
    """A results file in the course-wide format (scripts.common.write_metrics), with defaults for the rest."""
    payload = {"split": "test", "params": 1000, "device": "cpu", "hardware": CPU, "torch": "2.13.0",
               "command": "python train.py", **fields}
    (root / path).parent.mkdir(parents=True, exist_ok=True)
    (root / path).write_text(json.dumps(payload), encoding="utf-8")


def readme(names=BLOCKS) -> str:
    return "# course\n\n" + "".join(f"<!-- results:{n} -->\nold\n<!-- /results:{n} -->\n\n" for n in names)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A checkout with stages 1-4's kinds of result files (no stage 5 fine-tuning yet) and a README."""
    s1, s2, s3, s4, s5 = ("stage1_mlp", "stage2_rnn_lstm", "stage3_attention_seq2seq", "stage4_transformer",
                          "stage5_gpt")
    classify = {"accuracy": 0.9, "macro_f1": 0.89, "latency_ms_bs1": 0.5}
    metrics_file(tmp_path, f"{s1}/results/imdb_torch_test.json", stage=s1, model="ngram_mlp_torch", dataset="imdb",
                 metrics={**classify, "accuracy": 0.9084}, eval_seconds=5.0)
    metrics_file(tmp_path, f"{s1}/results/imdb_torch_train.json", stage=s1, model="ngram_mlp_torch", dataset="imdb",
                 split="val", metrics={"val_accuracy": 0.91}, train_seconds=86.8)
    metrics_file(tmp_path, f"{s1}/results/imdb_torch_cuda_test.json", stage=s1, model="ngram_mlp_torch",
                 dataset="imdb", metrics={**classify, "accuracy": 0.9099}, device="cuda", hardware="Test GPU")
    metrics_file(tmp_path, f"{s2}/results/classify_imdb_test.json", stage=s2, model="lstm_classifier_torch",
                 dataset="imdb", metrics={**classify, "accuracy": 0.8846}, train_seconds=147.6, params=3972610)
    metrics_file(tmp_path, f"{s4}/results/classify_imdb_test.json", stage=s4, model="transformer_classifier",
                 dataset="imdb", metrics={**classify, "accuracy": 0.8566}, train_seconds=613.8)
    mt = {"beam_size": 5, "bleu_greedy": 58.07, "chrf_greedy": 73.6, "bleu_beam": 59.57, "chrf_beam": 74.83,
          "bleu_signature": "nrefs:1|tok:13a"}
    for stage, model, bleu in ((s3, "bahdanau_scratch", 59.57), (s4, "transformer_scratch", 55.29)):
        metrics_file(tmp_path, f"{stage}/results/main_test.json", stage=stage, model=model, dataset="multi30k",
                     split="test_2016_flickr", metrics={**mt, "bleu_beam": bleu}, eval_seconds=7.0)
        metrics_file(tmp_path, f"{stage}/results/main_train.json", stage=stage, model=model, dataset="multi30k",
                     split="valid", metrics={}, train_seconds=1540.0)
    metrics_file(tmp_path, f"{s3}/results/compare_none_test.json", stage=s3, model="none_scratch",
                 dataset="multi30k", split="test_2016_flickr", metrics={**mt, "bleu_beam": 12.0})
    metrics_file(tmp_path, f"{s2}/results/lstm_char_train.json", stage=s2, model="lstm_char_torch",
                 dataset="shakespeare", split="valid", train_seconds=771.0,
                 metrics={"fit_seconds": 745.1, "epochs_run": 7, "train_tokens_per_s": 9436.0})
    metrics_file(tmp_path, f"{s2}/results/lstm_char_eval.json", stage=s2, model="lstm_char_torch",
                 dataset="shakespeare", split="valid", metrics={"loss": 1.4883, "bits_per_token": 2.1472})
    metrics_file(tmp_path, f"{s5}/results/char_train.json", stage=s5, model="gpt_char", dataset="shakespeare",
                 split="val", metrics={"fit_seconds": 998.3, "steps": 4000, "train_tokens_per_s": 16412.0})
    metrics_file(tmp_path, f"{s5}/results/char_eval.json", stage=s5, model="gpt", dataset="shakespeare",
                 split="val", metrics={"loss": 1.4767, "bits_per_byte": 2.1304})
    # other shapes beside them: a history list, a speed table, a dict without "metrics"
    (tmp_path / s2 / "results" / "lstm_char_history.json").write_text("[{\"epoch\": 1}]")
    (tmp_path / s1 / "results" / "imdb_speed.json").write_text("{\"dataset\": \"imdb\", \"rows\": []}")
    (tmp_path / s3 / "results" / "main_translations.txt").write_text("not json, not .json")
    (tmp_path / "README.md").write_text(readme(), encoding="utf-8")
    return tmp_path


def add_stage5_finetuning(root: Path) -> None:
    s5 = "stage5_gpt"
    for i, model in enumerate(("gpt_full", "gpt_head", "gpt_last_blocks", "gpt_lora", "gpt_scratch")):
        for dataset in ("imdb", "ag_news"):
            metrics_file(root, f"{s5}/results/finetune_{model}_{dataset}_test.json", stage=s5, model=model,
                         dataset=dataset, train_seconds=100.0 + i, params=13964160,
                         trainable_params=3074 if model == "gpt_head" else 13964160,
                         metrics={"accuracy": 0.80 + i / 100, "macro_f1": 0.79, "latency_ms_bs1": 3.25})
    metrics_file(root, f"{s5}/results/finetune_multitask_imdb_test.json", stage=s5, model="gpt_multitask",
                 dataset="imdb", train_seconds=300.0, metrics={"accuracy": 0.8712, "macro_f1": 0.871})
    metrics_file(root, f"{s5}/results/finetune_translate_multitask_test.json", stage=s5, model="gpt_multitask",
                 dataset="multi30k", split="test_2016_flickr", train_seconds=600.0, params=13964160,
                 metrics={"bleu": 41.5, "chrf": 61.25, "bleu_signature": "nrefs:1|tok:13a", "decoding": "greedy"})


def test_runs_from_the_imdb_text_base_are_named_apart(repo):
    add_stage5_finetuning(repo)
    metrics_file(repo, "stage5_gpt/results/finetune_imdb_full_adapted_test.json", stage="stage5_gpt", model="gpt_full",
                 dataset="imdb", train_seconds=120.0, params=13964160,
                 metrics={"accuracy": 0.9083, "macro_f1": 0.9083, "latency_ms_bs1": 3.0})
    rows = rows_of(course_report.course_blocks(course_report.load_records(repo))["course_classification"])
    imdb = {row[0]: row[3] for row in rows if row[2] == "IMDb"}
    assert imdb["GPT-mini fine-tuned: all weights, base also pretrained on IMDb's training text"] == "90.83%"
    assert imdb["GPT-mini fine-tuned: all weights"] == "80.00%"


def rows_of(block: str) -> list[list[str]]:
    lines = [line for line in block.splitlines() if line.startswith("| ")][1:]
    return [[cell.strip() for cell in line.strip("|").split(" | ")] for line in lines]


def test_tables_without_stage_5_fine_tuning(repo):
    blocks = course_report.course_blocks(course_report.load_records(repo))
    classify = rows_of(blocks["course_classification"])
    assert [row[:5] for row in classify] == [
        ["MLP, n-gram bag (`torch`)", "1", "IMDb", "90.84%", "89.00"],
        ["LSTM classifier (`torch`)", "2", "IMDb", "88.46%", "89.00"],
        ["Transformer encoder (`scratch`)", "4", "IMDb", "85.66%", "89.00"]]
    assert classify[0][5:] == ["87 s", "0.50", "1,000", CPU]          # train time from imdb_torch_train.json
    assert classify[1][7] == "3,972,610"
    note = blocks["course_classification"]
    assert "stage1_mlp/results/imdb_torch_cuda_test.json" in note.split("Left out")[1]
    assert "fine-tuning only" not in note and "AG News" not in note
    translation = rows_of(blocks["course_translation"])
    assert [row[:7] for row in translation] == [
        ["GRU encoder-decoder + Bahdanau attention", "3", "59.57", "beam 5", "74.83", "58.07", "25.7"],
        ["Transformer encoder-decoder (`scratch`)", "4", "55.29", "beam 5", "74.83", "58.07", "25.7"]]
    assert "compare_none" not in blocks["course_translation"]          # short comparison runs stay in stage 3
    assert "test_2016_flickr" in blocks["course_translation"] and "`nrefs:1|tok:13a`" in blocks["course_translation"]
    lms = rows_of(blocks["course_language_models"])
    assert [row[:6] for row in lms] == [
        ["LSTM, char level (`torch`)", "2", "tiny Shakespeare", "valid", "loss 1.488 nats, 2.147 bits/char",
         "12.4 min (7 epochs)"],
        ["GPT-mini, char level", "5", "tiny Shakespeare", "valid", "loss 1.477 nats, 2.130 bits/char",
         "16.6 min (4,000 steps)"]]


def test_stage_5_fine_tuning_rows_join_the_tables(repo):
    add_stage5_finetuning(repo)
    blocks = course_report.course_blocks(course_report.load_records(repo))
    classify = rows_of(blocks["course_classification"])
    assert [(row[0], row[2]) for row in classify] == [
        ("MLP, n-gram bag (`torch`)", "IMDb"), ("LSTM classifier (`torch`)", "IMDb"),
        ("Transformer encoder (`scratch`)", "IMDb"),
        ("GPT-mini, same shape, random init (no pretraining)", "IMDb"),
        ("GPT-mini fine-tuned: classifier head only", "IMDb"), ("GPT-mini fine-tuned: last blocks + head", "IMDb"),
        ("GPT-mini fine-tuned: LoRA", "IMDb"), ("GPT-mini fine-tuned: all weights", "IMDb"),
        ("GPT-mini, multi-task fine-tuned", "IMDb"),
        ("GPT-mini, same shape, random init (no pretraining)", "AG News"),
        ("GPT-mini fine-tuned: classifier head only", "AG News"),
        ("GPT-mini fine-tuned: last blocks + head", "AG News"),
        ("GPT-mini fine-tuned: LoRA", "AG News"), ("GPT-mini fine-tuned: all weights", "AG News")]
    head = classify[4]
    assert head[1] == "5" and head[3] == "81.00%" and head[5:8] == ["101 s", "3.25", "13,964,160 (3,074 trained)"]
    assert classify[3][7] == "13,964,160"                                  # every weight trained: no note
    assert classify[8][6] == "—"                                            # no latency measured: a dash
    assert "fine-tuning only" in blocks["course_classification"]
    translation = rows_of(blocks["course_translation"])
    assert translation[2][:7] == ["GPT-mini, multi-task fine-tuned", "5", "41.50", "greedy", "61.25", "41.50", "10.0"]
    assert translation[2][7:] == ["13,964,160", CPU]
    assert "fine-tuning only" in blocks["course_translation"]


def test_the_cpu_path_rows_stand_beside_the_gpu_rows_of_the_same_method(repo):
    add_stage5_finetuning(repo)
    metrics_file(repo, "stage5_gpt/results/cpu_finetune_imdb_test.json", stage="stage5_gpt", model="gpt_full",
                 dataset="imdb", train_seconds=426.0, params=5311234,
                 metrics={"accuracy": 0.8707, "macro_f1": 0.8706, "latency_ms_bs1": 12.2})
    rows = rows_of(course_report.course_blocks(course_report.load_records(repo))["course_classification"])
    full = [row for row in rows if row[0].startswith("GPT-mini fine-tuned: all weights") and row[2] == "IMDb"]
    cpu_path = "GPT-mini fine-tuned: all weights, CPU path (`--preset imdb` shape, 2 CPU cores)"
    assert [row[0] for row in full] == ["GPT-mini fine-tuned: all weights", cpu_path]
    assert [row[3] for row in full] == ["80.00%", "87.07%"]


def test_missing_files_leave_rows_out(repo):
    for path in ("stage4_transformer/results/classify_imdb_test.json",
                 "stage3_attention_seq2seq/results/main_train.json", "stage5_gpt/results/char_eval.json"):
        (repo / path).unlink()
    blocks = course_report.course_blocks(course_report.load_records(repo))
    assert [row[1] for row in rows_of(blocks["course_classification"])] == ["1", "2"]
    stage3 = rows_of(blocks["course_translation"])[0]
    assert stage3[1] == "3" and stage3[6] == "—"                          # no training file: no training time
    assert [row[1] for row in rows_of(blocks["course_language_models"])] == ["2"]
    empty = course_report.course_blocks({})
    assert all(rows_of(body) == [] and "no results yet" in body for body in empty.values())


def test_writes_readme_roadmap_and_plots_then_check_passes(repo, cli):
    (repo / "docs").mkdir()
    (repo / "docs" / "roadmap.md").write_text(readme(["course_translation"]), encoding="utf-8")
    code, _, err = cli(course_report.main, ["--root", repo, "--check"])
    assert code == 2 and err.count("\n") == 1
    assert f"README.md [{', '.join(BLOCKS)}]" in err
    assert "docs/roadmap.md [course_translation]" in err and "python scripts/course_report.py" in err
    assert (repo / "README.md").read_text() == readme()                    # --check writes nothing
    code, out, err = cli(course_report.main, ["--root", repo])
    assert code == 0, err
    blocks = course_report.course_blocks(course_report.load_records(repo))
    text = (repo / "README.md").read_text(encoding="utf-8")
    assert all(f"<!-- results:{n} -->\n{blocks[n]}\n<!-- /results:{n} -->" in text for n in BLOCKS)
    roadmap = (repo / "docs" / "roadmap.md").read_text(encoding="utf-8")
    assert f"<!-- results:course_translation -->\n{blocks['course_translation']}\n" in roadmap
    assert "course_classification" not in roadmap                          # only the blocks it has markers for
    for name in ("course_classification.png", "course_translation.png"):
        image = repo / "docs" / "images" / name
        assert image.read_bytes()[:4] == b"\x89PNG" and image.stat().st_size < 150_000
    assert cli(course_report.main, ["--root", repo, "--check"])[0] == 0
    code, out, _ = cli(course_report.main, ["--root", repo])                # nothing changed: nothing rewritten
    assert code == 0 and "unchanged" in out and "written" not in out
    # a hand edit of a generated table is caught
    (repo / "README.md").write_text(text.replace("90.84%", "91.84%"), encoding="utf-8")
    code, _, err = cli(course_report.main, ["--root", repo, "--check"])
    assert code == 2 and "README.md [course_classification]" in err


def test_roadmap_without_markers_is_left_alone(repo, cli):
    (repo / "docs").mkdir()
    (repo / "docs" / "roadmap.md").write_text("# roadmap\n\nno tables here\n", encoding="utf-8")
    assert cli(course_report.main, ["--root", repo, "--images_dir", repo / "plots"])[0] == 0
    assert (repo / "docs" / "roadmap.md").read_text() == "# roadmap\n\nno tables here\n"
    assert (repo / "plots" / "course_translation.png").is_file()


def test_bad_input_is_one_line_naming_the_file(repo, cli):
    (repo / "stage2_rnn_lstm" / "results" / "broken.json").write_text("{\"stage\": ", encoding="utf-8")
    code, _, err = cli(course_report.main, ["--root", repo, "--check"])
    assert code == 2 and err.count("\n") == 1 and "broken.json" in err and "not valid JSON" in err
    with pytest.raises(UserError, match="broken.json"):
        course_report.load_records(repo)
    (repo / "stage2_rnn_lstm" / "results" / "broken.json").write_text("{\"stage\": \"s\", \"metrics\": [1]}")
    code, _, err = cli(course_report.main, ["--root", repo])
    assert code == 2 and "broken.json" in err and "not a JSON object" in err
    (repo / "stage2_rnn_lstm" / "results" / "broken.json").unlink()
    (repo / "README.md").write_text(readme(BLOCKS[:2]), encoding="utf-8")
    code, _, err = cli(course_report.main, ["--root", repo])
    assert code == 2 and "<!-- results:course_language_models -->" in err and err.count("\n") == 1
    (repo / "README.md").write_text(readme(), encoding="utf-8")
    (repo / "stage2_rnn_lstm" / "results" / "overview.json").write_text('{"stage": "stage2_rnn_lstm", "rows": [1]}')
    code, _, err = cli(course_report.main, ["--root", repo])
    assert code == 2 and "overview.json" in err and "not an overview" in err and err.count("\n") == 1
    code, _, err = cli(course_report.main, ["--root", repo / "nowhere"])
    assert code == 2 and "is not a folder" in err


def test_runs_table_gives_each_stage_quick_default_and_gpu(repo, cli):
    rows = [{"run": "quick", "command": "python stage2_rnn_lstm/train.py --preset quick", "minutes": 2.43,
             "score": "val loss 1.70 nats", "hardware": CPU, "source": "results/quick.json"},
            {"run": "default", "command": "python stage2_rnn_lstm/train.py", "minutes": 12.4,
             "score": "val loss 1.49 nats", "hardware": CPU, "source": "results/lstm_char_train.json"},
            {"run": "gpu", "command": "python stage2_rnn_lstm/train.py --device cuda", "minutes": None,
             "score": "not measured", "hardware": None, "source": None}]
    (repo / "stage2_rnn_lstm" / "results" / "overview.json").write_text(
        json.dumps({"stage": "stage2_rnn_lstm", "rows": rows}))
    assert cli(course_report.main, ["--root", repo])[0] == 0
    table = (repo / "README.md").read_text(encoding="utf-8").split("<!-- results:course_runs -->")[1]
    lines = [line for line in table.splitlines() if line.startswith("| 2 |")]
    assert lines == ["| 2 | quick preset | `python stage2_rnn_lstm/train.py --preset quick` | 2.4 min | "
                     f"val loss 1.70 nats | {CPU} |",
                     f"| 2 | default run | `python stage2_rnn_lstm/train.py` | 12.4 min | val loss 1.49 nats | {CPU} |",
                     "| 2 | GPU run | `python stage2_rnn_lstm/train.py --device cuda` | not measured | not measured "
                     "| — |"]
    assert "`stage2_rnn_lstm/results/overview.json`" in table
    quick = (repo / "README.md").read_text(encoding="utf-8").split("<!-- results:course_quick -->")[1]
    assert [line for line in quick.splitlines() if line.startswith("| [")] == [
        f"| [stage2_rnn_lstm](stage2_rnn_lstm/) | `python stage2_rnn_lstm/train.py --preset quick` | 2.4 min | "
        f"val loss 1.70 nats | {CPU} |"]


def test_repo_readme_blocks_are_what_the_results_make():
    """The top README's course tables (and docs/roadmap.md's, where it has the markers) are generated, never typed:
    after a new result file or a hand edit, run `python scripts/course_report.py`."""
    blocks = course_report.course_blocks(course_report.load_records(REPO_ROOT),
                                         course_report.load_overviews(REPO_ROOT))
    found = course_report.targets(REPO_ROOT, blocks)
    assert set(found[REPO_ROOT / "README.md"]) == set(BLOCKS)
    for path, named in found.items():
        text = path.read_text(encoding="utf-8")
        for name, body in named.items():
            assert replace_block(text, name, body) == text, f"{path} [{name}]: run `python scripts/course_report.py`"
    readme_text = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    for name in ("course_classification.png", "course_translation.png"):
        assert f"docs/images/{name}" in readme_text and (REPO_ROOT / "docs" / "images" / name).is_file()
