"""Bad input to the course-wide command-line tools (scripts/reference.py, sweep.py, course_report.py): each case
ends in exactly one line on stderr and exit status 2, and writes nothing."""
import json

import pytest

from scripts import course_report, reference, sweep


def files(folder, **contents):
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in contents.items():
        (folder / name.replace("_json", ".json")).write_bytes(text if isinstance(text, bytes) else text.encode())
    return folder


SWEEP = ["stage1_mlp/train.py", "--grid", "lr=1", "--metric", "m", "--out", "{tmp}/s"]
CASES = [
    ("reference: a NaN tolerance", reference.main, ["compare", "{run}", "--tolerance", "nan"], "--tolerance: must be"),
    ("reference: a run folder that is not there", reference.main, ["compare", "{tmp}/nowhere"], "nowhere"),
    ("reference: metrics.json that is a list", reference.main, ["compare", "{run}"], "is not a metrics file"),
    ("reference: history.json not UTF-8", reference.main, ["compare", "{bad_run}"], "not valid UTF-8"),
    ("reference: metrics.json nested 100k deep", reference.main, ["compare", "{deep}"], "not valid JSON"),
    ("sweep: a negative seed", sweep.main, [*SWEEP, "--seeds", "-1"], "--seeds: must be an integer in [0, 4294967295]"),
    ("sweep: --random -2", sweep.main, [*SWEEP, "--random", "-2"], "--random: must be an integer >= 0"),
    ("sweep: a script that is not there", sweep.main, ["nope/train.py", "--grid", "lr=1", "--metric", "m",
                                                       "--out", "{tmp}/s"], "is not one of the course"),
    ("course_report: --root not a folder", course_report.main, ["--check", "--root", "{tmp}/nowhere"],
     "is not a folder"),
]


@pytest.mark.parametrize("what, main, argv, message", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line(cli, tmp_path, what, main, argv, message):
    run = files(tmp_path / "run", history_json='{"epochs": []}', metrics_json="[]")
    bad_run = files(tmp_path / "bad_run", history_json=b'{"x": "\xff"}',
                    metrics_json=json.dumps({"stage": "stage1_mlp", "metrics": {}}))
    deep = files(tmp_path / "deep_run", history_json="{}", metrics_json="[" * 100_000 + "]" * 100_000)
    names = {"run": run, "bad_run": bad_run, "deep": deep, "tmp": tmp_path}
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    code, out, err = cli(main, [a.format(**names) for a in argv])
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: ") and message in err, err
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before      # nothing written


SWEEP_CASES = [
    ("a repeated value", ["--grid", "lr=0.01,0.01"], "repeats a value"),
    ("a flag the sweep sets", ["--grid", "out_dir=/tmp/x"], "the sweep sets --out_dir itself"),
    ("a flag named twice", ["--grid", "lr=1", "lr=2"], "names lr twice"),
    ("a repeated seed", ["--grid", "lr=1", "--seeds", "1", "1"], "repeats a seed"),
    ("a file that is no training program", ["--grid", "lr=1"], "is not one of the course's training programs"),
]


@pytest.mark.parametrize("what, grid, message", SWEEP_CASES, ids=[c[0] for c in SWEEP_CASES])
def test_sweep_refuses_what_would_mislead(cli, tmp_path, what, grid, message):
    script = "/etc/hostname" if "training program" in message else "stage1_mlp/train.py"
    code, _, err = cli(sweep.main, [script, "--metric", "val_accuracy", "--out", str(tmp_path / "s"), *grid])
    assert code == 2 and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "s").exists()


def test_sweep_adds_no_line_to_a_failed_run(cli, tmp_path, tiny_data):
    """The run's own one-line error is the only one: the sweep ends with its status."""
    code, out, err = cli(sweep.main, ["stage1_mlp/train.py", "--metric", "val_accuracy", "--out", str(tmp_path / "s"),
                                      "--grid", "lr=nan", "--", "--data_dir", str(tiny_data)])
    assert code == 2 and err == "" and out.startswith("$ ")


def test_reference_says_a_nan_is_no_side_of_the_band():
    check = reference.Check(key="val_loss", unit="epoch", x=1, value=float("nan"), low=0.5, high=0.6,
                            allowed=(0.45, 0.65))
    assert "not a finite number: the run diverged" in check.describe() and not check.inside
