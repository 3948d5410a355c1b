"""scripts/playground/results.py: the course's results files as rows, the plots a page may show, and the sweeps
(scripts/sweep.py's results.json and the stages' recorded learning-rate sweeps), on a synthetic root written in the
real formats and on this checkout."""
import json
from pathlib import Path

import pytest

from scripts.common import UserError
from scripts.playground import results as pg_results

ROOT = Path(__file__).resolve().parents[3]
CPU = "Intel(R) Xeon(R) Processor, 2 cores, 2 torch threads"


def write(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data) if not isinstance(data, bytes) else "", encoding="utf-8")
    return path


def metrics_file(stage, model, dataset, split, metrics, command, **extra):
    """A file in scripts.common.write_metrics's format."""
    return {"stage": stage, "model": model, "dataset": dataset, "split": split, "metrics": metrics, "params": 1000,
            "device": "cpu", "hardware": CPU, "torch": "2.13.0+cpu", "command": command, **extra}


@pytest.fixture
def course(tmp_path):
    root = tmp_path / "course"
    r1 = root / "stage1_mlp" / "results"
    write(r1 / "imdb_torch_train.json", metrics_file("stage1_mlp", "ngram_mlp_torch", "imdb", "val",
                                                     {"val_accuracy": 0.91, "train_samples_per_s": 2800.0},
                                                     "python stage1_mlp/train.py", train_seconds=120.0))
    write(r1 / "imdb_torch_test.json", metrics_file(
        "stage1_mlp", "ngram_mlp_torch", "imdb", "test",
        {"accuracy": 0.9, "macro_f1": 0.9, "latency_ms_bs1": 0.5, "per_class": {"positive": {"f1": 0.9}},
         "confusion_matrix": [[1, 0], [0, 1]], "loss": float("nan")}, "python stage1_mlp/evaluate.py",
        eval_seconds=3.0))
    write(r1 / "quick_history.json", [{"epoch": 1, "train_loss": 0.5}])         # another shape: not a row
    write(r1 / "overview.json", {"stage": "stage1_mlp", "rows": [
        {"run": "quick", "command": "python stage1_mlp/train.py --preset quick", "minutes": 0.4,
         "score": "test accuracy 90.78%", "hardware": CPU, "source": "results/quick.json"}]})
    (root / "stage1_mlp" / "bench.py").write_text("")
    write(root / "stage3_attention_seq2seq" / "results" / "main_test.json", metrics_file(
        "stage3_attention_seq2seq", "bahdanau_scratch", "multi30k", "test_2016_flickr",
        {"bleu_beam": 59.0, "chrf_beam": 74.0, "bleu_greedy": 58.0, "beam_size": 5}, "python evaluate.py"))
    write(root / "stage5_gpt" / "results" / "char_train.json", metrics_file(
        "stage5_gpt", "gpt_char", "shakespeare", "val", {"val_loss": 1.47, "train_tokens_per_s": 16000.0},
        "python stage5_gpt/train.py"))
    (root / "stage5_gpt" / "bench.py").write_text("")          # benched stage without overview.json: a note
    for png in ("stage1_mlp/results/imdb_torch_curves.png", "docs/images/course_classification.png"):
        (root / png).parent.mkdir(parents=True, exist_ok=True)
        (root / png).write_bytes(b"\x89PNG\r\n\x1a\n")
    (root / "stage1_mlp" / "results" / "notes.txt").write_text("not a plot")
    return root


def test_results_rows_tables_runs_and_plots(course):
    out = pg_results.results(course)
    json.dumps(out, allow_nan=False)
    rows = {row["id"]: row for row in out["rows"]}
    assert list(rows) == ["stage1_mlp/results/imdb_torch_test.json", "stage1_mlp/results/imdb_torch_train.json",
                          "stage3_attention_seq2seq/results/main_test.json", "stage5_gpt/results/char_train.json"]
    test = rows["stage1_mlp/results/imdb_torch_test.json"]
    assert test["task"] == "classify" and test["stage_number"] == 1 and test["model_name"] == "MLP (torch)"
    assert test["metrics"] == {"accuracy": 0.9, "macro_f1": 0.9, "latency_ms_bs1": 0.5, "loss": None}
    assert test["train_seconds"] == 120.0 and test["tables"] == ["course_classification"]   # from its _train.json
    assert test["dataset_name"] == "IMDb" and test["hardware"] == CPU and test["command"].endswith("evaluate.py")
    assert rows["stage3_attention_seq2seq/results/main_test.json"]["task"] == "translate"
    assert rows["stage3_attention_seq2seq/results/main_test.json"]["tables"] == ["course_translation"]
    assert rows["stage5_gpt/results/char_train.json"]["task"] == "language_model"
    # a benched stage without its overview.json: course_report refuses the overviews, the page says why
    assert out["runs"] == [] and "stage5_gpt/results/overview.json missing" in out["notes"][0]
    (course / "stage5_gpt" / "bench.py").unlink()
    assert pg_results.results(course)["runs"] == [
        {"stage": "stage1_mlp", "run": "quick", "command": "python stage1_mlp/train.py --preset quick",
         "minutes": 0.4, "score": "test accuracy 90.78%", "hardware": CPU, "source": "results/quick.json",
         "overview": "stage1_mlp/results/overview.json"}]
    assert out["plots"] == [
        {"id": "stage1_mlp/results/imdb_torch_curves.png", "stage": "stage1_mlp", "name": "imdb_torch_curves"},
        {"id": "docs/images/course_classification.png", "stage": None, "name": "course_classification"}]
    assert pg_results.plot_file(course, "docs/images/course_classification.png").is_file()
    for bad in ("stage1_mlp/results/notes.txt", "../course/docs/images/course_classification.png", "README.md"):
        with pytest.raises(UserError, match="no plot"):
            pg_results.plot_file(course, bad)


def test_a_malformed_results_file_is_one_user_error(course):
    (course / "stage1_mlp" / "results" / "broken.json").write_text("{", encoding="utf-8")
    with pytest.raises(UserError, match="is not valid JSON"):
        pg_results.results(course)


def sweep_results(rows, metric="val_loss", mode="min"):
    """results.json as scripts/sweep.py writes it."""
    return {"script": "stage5_gpt/train.py", "metric": metric, "mode": mode, "fixed": ["--max_steps", "500"],
            "rows": rows}


def test_sweeps_of_sweep_py_and_recorded_lr_sweeps(course):
    folder = course / "sweeps" / "gpt_lr"
    rows = [{"setting": {"lr": lr, "n_layer": "2"}, "seed": seed, "score": score,
             "run": str(folder / f"lr{lr}_n_layer2_seed{seed}")}
            for lr, seed, score in (("1e-3", 0, 1.9), ("1e-3", 1, 1.7), ("4e-3", 0, 1.6), ("4e-3", 1, 1.6))]
    write(folder / "results.json", sweep_results(rows))
    (folder / "sweep.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    write(course / "sweeps" / "lr1e-3_seed0" / "results.json", {"not": "a sweep"})      # skipped
    write(course / "stage5_gpt" / "results" / "baby_lr_sweep.json", {"rows": [
        {"lr": 0.001, "min_lr": 0.0001, "val_loss_every_token": 1.91, "train_command": "python a"},
        {"lr": 0.004, "min_lr": 0.0004, "val_loss_every_token": 1.77, "train_command": "python b"}], "chosen": 0.004})
    found = pg_results.sweeps(course)
    json.dumps(found, allow_nan=False)
    assert [s["id"] for s in found] == ["sweeps/gpt_lr", "stage5_gpt/results/baby_lr_sweep.json"]
    mine, recorded = found
    assert mine["kind"] == "sweep" and mine["stage"] == "stage5_gpt" and mine["params"] == ["lr", "n_layer"]
    assert mine["rows"][0] == {"lr": 0.001, "n_layer": 2.0, "seed": 0, "val_loss": 1.9,
                               "run": "sweeps/gpt_lr/lr1e-3_n_layer2_seed0"}
    assert [(s["lr"], round(s["mean"], 3), s["seeds"]) for s in mine["summary"]] == [(0.004, 1.6, 2), (0.001, 1.8, 2)]
    assert mine["plot"] == "sweeps/gpt_lr/sweep.png" and pg_results.plot_file(course, mine["plot"]).is_file()
    assert recorded["kind"] == "recorded" and recorded["metric"] == "val_loss_every_token"
    assert recorded["mode"] == "min" and recorded["rows"][1] == {"lr": 0.004, "val_loss_every_token": 1.77,
                                                                 "command": "python b"}


def test_the_real_checkout():
    out = pg_results.results(ROOT)
    json.dumps(out, allow_nan=False)
    if not out["rows"]:
        pytest.skip("no stage*/results/*.json in this checkout")
    assert {row["stage"] for row in out["rows"]} >= {"stage1_mlp", "stage5_gpt"}
    assert {row["task"] for row in out["rows"]} == {"classify", "translate", "language_model"}
    assert all(set(row["tables"]) <= set(pg_results.TABLES) for row in out["rows"])
    assert any("course_classification" in row["tables"] for row in out["rows"])
    assert all((ROOT / plot["id"]).is_file() and plot["id"].endswith(".png") for plot in out["plots"])
    assert {run["run"] for run in out["runs"]} <= {"quick", "default", "gpu"}
    found = pg_results.sweeps(ROOT)
    json.dumps(found, allow_nan=False)
    assert all(s["rows"] and s["metric"] in s["rows"][0] for s in found)


def test_every_run_of_the_tiny_course_is_diagnosed(tiny_course):
    """Runs of every stage, written by the stages' own programs: each has a status and findings, as JSON."""
    import json

    from scripts.diagnose import diagnose, list_runs
    runs = list_runs(tiny_course)
    assert {r["stage"] for r in runs} == {"stage1_mlp", "stage2_rnn_lstm", "stage3_attention_seq2seq",
                                         "stage4_transformer", "stage5_gpt"}
    for run in runs:
        result = diagnose(tiny_course / run["id"])
        assert result["status"] == run["status"] == "finished" and result["findings"], run["id"]
        assert "nan" not in {f["code"] for f in result["findings"]}, (run["id"], result["findings"])
        json.dumps(result, allow_nan=False)
