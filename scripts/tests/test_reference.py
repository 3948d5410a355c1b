"""scripts/reference.py: build a band from fake run folders in every stage's real history format, compare runs
inside and outside it, and the bad-input errors. Tiny JSON files only: no training."""
import json
import math

import pytest

from scripts import reference

# stage -> (model, dataset, command as train.py records it, per-epoch extra series)
STAGE_RUNS = {
    "stage1_mlp": ("ngram_mlp_torch", "imdb", "python stage1_mlp/train.py", {"val_acc": 0.9}),
    "stage2_rnn_lstm": ("lstm_char_torch", "shakespeare", "python stage2_rnn_lstm/train.py", {"val_ppl": 4.4}),
    "stage3_attention_seq2seq": ("bahdanau_scratch", "multi30k", "python stage3_attention_seq2seq/train.py",
                                 {"val_bleu": 50.0, "val_chrf": 70.0}),
    "stage4_transformer": ("transformer_scratch", "multi30k", "python stage4_transformer/train.py",
                           {"val_bleu": 48.0, "val_chrf": 68.0}),
    "stage5_gpt": ("gpt_char", "shakespeare", "python stage5_gpt/train.py", {}),
}
FINALS = {
    "stage1_mlp": {"val_accuracy": 0.91, "val_loss": 0.25, "best_epoch": 5, "train_samples_per_s": 2800.0},
    "stage2_rnn_lstm": {"val_loss": 1.49, "val_ppl": 4.43, "val_bpc": 2.15, "best_epoch": 7},
    "stage3_attention_seq2seq": {"val_bleu_greedy": 55.6, "val_chrf_greedy": 71.6, "val_loss": 1.04},
    "stage4_transformer": {"val_bleu_greedy": 52.1, "val_chrf_greedy": 69.7, "val_loss": 1.24,
                           "best_epoch": "average of 12-16", "averaged_val_bleu": None},
    "stage5_gpt": {"val_loss": 1.48, "final_val_loss": 1.48, "final_train_loss": 1.16, "steps": 4000},
}


def loss_at(x, last, seed, shift=0.0):
    """A falling loss curve; seeds differ by a little."""
    return 1.5 + 2.0 * math.exp(-4 * x / last) + 0.004 * (seed - 1) + shift


def write_run(folder, stage, seed, shift=0.0, epochs=7, extra_flags="", finals_shift=0.0, **metrics_overrides):
    """A run folder as the stage's train.py leaves it (history.json in its format, metrics.json): the same curves
    as the reference's seeds (7 epochs, or 4,000 steps), cut at `epochs`, with val loss raised by `shift` from
    epoch 5 on (stage 5: every loss) and the final metrics by `finals_shift`."""
    model, dataset, command, extra = STAGE_RUNS[stage]
    folder.mkdir(parents=True)
    if stage == "stage5_gpt":
        steps = 4000
        history = {"evals": [{"step": s, "train_loss": loss_at(s, steps, seed, shift) - 0.05,
                              "val_loss": loss_at(s, steps, seed, shift), "lr": 1e-3, "tokens_seen": s * 4096}
                             for s in range(250, steps + 1, 250)],
                   "curve": [[s, round(loss_at(s, steps, seed, shift) - 0.05 + 0.02 * (-1) ** s, 6)]
                             for s in range(1, steps + 1)]}
    else:
        history = [{"epoch": e, "steps": 100 * e, "train_loss": loss_at(e, 7, seed) + 0.1,
                    "val_loss": loss_at(e, 7, seed, shift if e >= 5 else 0.0),
                    **{k: v + 0.1 * seed + e for k, v in extra.items()}, "tokens_per_s": 9000.0 + seed}
                   for e in range(1, epochs + 1)]
    finals = {k: v + finals_shift if isinstance(v, float) else v for k, v in FINALS[stage].items()}
    finals = {k: v + 0.002 * seed if isinstance(v, float) else v for k, v in finals.items()}
    metrics = {"stage": stage, "model": model, "dataset": dataset, "split": "valid", "metrics": finals,
               "params": 1000, "train_seconds": 60.0 + seed, "device": "cuda", "hardware": "NVIDIA H200",
               "torch": "2.11.0+cu130",
               "command": f"{command}{extra_flags} --seed {seed} --out_dir /x/s{seed} --checkpoint /tmp/c{seed}.pt",
               **metrics_overrides}
    (folder / "history.json").write_text(json.dumps(history))
    (folder / "metrics.json").write_text(json.dumps(metrics))
    return folder


def build_three(tmp_path, cli, stage, name="default"):
    runs = [write_run(tmp_path / f"ref_s{seed}", stage, seed) for seed in (0, 1, 2)]
    out = tmp_path / "reference" / f"{name}.json"
    code, stdout, err = cli(reference.main, ["build", "--stage", stage, "--name", name, "--out", out, *runs])
    assert code == 0, err
    return out, stdout


@pytest.mark.parametrize("stage", list(STAGE_RUNS))
def test_build_reads_every_stage_format(tmp_path, cli, stage):
    out, stdout = build_three(tmp_path, cli, stage)
    ref = json.loads(out.read_text())
    assert out.stat().st_size < 30_000 and f"wrote {out}" in stdout
    assert ref["stage"] == stage and ref["seeds"] == [0, 1, 2] and ref["hardware"] == "NVIDIA H200"
    assert ref["command"] == STAGE_RUNS[stage][2] and ref["torch"] == "2.11.0+cu130"   # placement flags dropped
    assert {"train_loss", "val_loss"} <= set(ref["curves"])
    val = ref["curves"]["val_loss"]["points"]
    assert all(len(p) == 4 and p[2] <= p[1] <= p[3] for p in val)
    first, last = (250, 4000) if stage == "stage5_gpt" else (1, 7)
    assert val[0] == pytest.approx([first, loss_at(first, last, 1), loss_at(first, last, 0), loss_at(first, last, 2)],
                                   rel=1e-5)
    final = ref["final"]
    assert set(final) == {k for k, v in FINALS[stage].items() if k in reference.STAGES[stage].final and v is not None}
    key = next(iter(final))
    assert math.isclose(final[key]["mean"], FINALS[stage][key] + 0.002, rel_tol=1e-5)
    assert math.isclose(final[key]["std"], 0.002, rel_tol=1e-3) and final[key]["max"] > final[key]["min"]
    if stage == "stage5_gpt":      # 4,000 per-step losses become 100 bin means, which average the noise away
        per_step = ref["curves"]["train_loss_per_step"]
        assert per_step["bin"] == 40 and len(per_step["points"]) == 100
        assert per_step["points"][-1][0] == 4000
        assert math.isclose(per_step["points"][-1][1], loss_at(3980.5, 4000, 1) - 0.05, abs_tol=2e-3)
    else:
        extra = set(STAGE_RUNS[stage][3]) & set(reference.STAGES[stage].curves)
        assert extra <= set(ref["curves"]) and "tokens_per_s" not in ref["curves"]


def test_compare_within_and_outside_the_band(tmp_path, cli):
    out, _ = build_three(tmp_path, cli, "stage2_rnn_lstm")
    mine = write_run(tmp_path / "mine", "stage2_rnn_lstm", seed=3)          # a fourth seed: normal
    code, stdout, err = cli(reference.main, ["compare", mine, "--reference", out])
    assert code == 0, err
    assert "val loss: within the band at all 7 epochs compared" in stdout
    assert "final metrics:" in stdout and "OUTSIDE" not in stdout
    assert stdout.strip().endswith("verdict: within the reference band")
    assert (mine / "reference_compare.png").stat().st_size > 1000

    bad = write_run(tmp_path / "bad", "stage2_rnn_lstm", seed=3, shift=0.3, finals_shift=0.5)
    code, stdout, err = cli(reference.main, ["compare", bad, "--reference", out])
    assert code == 0, err                                                  # outside is an answer, not an error
    assert "val loss: outside at 3 of 7 epochs; first: val loss at epoch 5 is" in stdout
    verdict = stdout.strip().splitlines()[-1]
    assert verdict.startswith("verdict: outside: val loss at epoch 5 is ") and "above the band" in verdict
    assert "final val_loss" in verdict and "OUTSIDE" in stdout
    assert (bad / "reference_compare.png").is_file()


def test_compare_stage5_bins_the_per_step_loss_and_skips_missing_points(tmp_path, cli):
    out, _ = build_three(tmp_path, cli, "stage5_gpt")
    mine = write_run(tmp_path / "mine", "stage5_gpt", seed=1)
    history = json.loads((mine / "history.json").read_text())
    history["evals"] = history["evals"][::2]              # evaluated every 500 steps: fewer points, all compared
    (mine / "history.json").write_text(json.dumps(history))
    code, stdout, err = cli(reference.main, ["compare", mine, "--reference", out])
    assert code == 0, err
    assert "val loss: within the band at all 8 steps compared" in stdout
    assert "train loss per step (mean of 40 steps): within the band at all 100 steps compared" in stdout
    assert stdout.strip().endswith("verdict: within the reference band")

    diverged = write_run(tmp_path / "nan", "stage5_gpt", seed=1, shift=float("nan"))
    code, stdout, err = cli(reference.main, ["compare", diverged, "--reference", out])
    assert code == 0 and "verdict: outside: train loss at step 250 is nan" in stdout


def test_shorter_run_with_other_flags_skips_final_metrics(tmp_path, cli):
    out, _ = build_three(tmp_path, cli, "stage3_attention_seq2seq")
    short = write_run(tmp_path / "short", "stage3_attention_seq2seq", seed=0, epochs=3, extra_flags=" --epochs 3",
                      finals_shift=-20.0)
    code, stdout, err = cli(reference.main, ["compare", short, "--reference", out])
    assert code == 0, err
    assert "command differs" in stdout and "final metrics: not compared" in stdout
    assert "val bleu: within the band at all 3 epochs compared" in stdout
    assert stdout.strip().endswith("verdict: within the reference band")


def test_default_reference_is_found_by_stage_dataset_and_command(tmp_path, cli, monkeypatch):
    monkeypatch.setattr(reference, "REPO_ROOT", tmp_path / "repo")
    runs = [write_run(tmp_path / f"s{seed}", "stage1_mlp", seed) for seed in (0, 1, 2)]
    code, _, err = cli(reference.main, ["build", "--name", "default", *runs])      # --stage read from the runs
    assert code == 0, err
    scratch = [write_run(tmp_path / f"scratch{seed}", "stage1_mlp", seed, extra_flags=" --impl scratch",
                         model="ngram_mlp_scratch") for seed in (0, 1)]
    code, stdout, err = cli(reference.main, ["build", "--name", "scratch", *scratch])
    assert code == 0 and "2 seeds give a narrow band" in stdout
    folder = tmp_path / "repo" / "stage1_mlp" / "reference"
    assert sorted(p.name for p in folder.iterdir()) == ["default.json", "scratch.json"]

    mine = write_run(tmp_path / "mine", "stage1_mlp", seed=5, extra_flags=" --impl scratch", model="ngram_mlp_scratch")
    code, stdout, err = cli(reference.main, ["compare", mine])
    assert code == 0 and f"reference: {folder / 'scratch.json'}" in stdout and "note:" not in stdout
    other = write_run(tmp_path / "other", "stage1_mlp", seed=5, extra_flags=" --lr 0.01")
    code, stdout, err = cli(reference.main, ["compare", other])
    assert code == 0 and f"reference: {folder / 'default.json'}" in stdout and "command differs" in stdout
    agnews = write_run(tmp_path / "ag", "stage1_mlp", seed=0, dataset="ag_news")
    code, _, err = cli(reference.main, ["compare", agnews])
    assert code == 2 and "no reference for stage1_mlp on ag_news" in err and "(there: default, scratch)" in err


def test_among_references_of_one_command_the_one_as_long_as_the_run_is_found(tmp_path, cli, monkeypatch):
    # stage 4's default command trains 15 epochs in float32 and 19 with bf16 autocast: one band for each length
    monkeypatch.setattr(reference, "REPO_ROOT", tmp_path / "repo")
    stage = "stage4_transformer"
    for name, epochs in (("default", 7), ("default_5_epochs", 5)):
        runs = [write_run(tmp_path / name / f"s{seed}", stage, seed, epochs=epochs) for seed in (0, 1, 2)]
        assert cli(reference.main, ["build", "--name", name, *runs])[0] == 0
    folder = tmp_path / "repo" / stage / "reference"
    for epochs, name in ((5, "default_5_epochs"), (7, "default"), (6, "default")):
        mine = write_run(tmp_path / f"mine{epochs}", stage, seed=4, epochs=epochs)
        code, stdout, err = cli(reference.main, ["compare", mine])
        assert code == 0 and f"reference: {folder / name}.json" in stdout, (epochs, stdout)


def test_bad_input_is_one_line_with_status_2(tmp_path, cli):
    out, _ = build_three(tmp_path, cli, "stage2_rnn_lstm")
    run = write_run(tmp_path / "run", "stage2_rnn_lstm", seed=0)
    other_stage = write_run(tmp_path / "s4", "stage4_transformer", seed=0)
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "metrics.json").write_text(json.dumps({"stage": "stage2_rnn_lstm", "metrics": {}}))
    corrupt = write_run(tmp_path / "corrupt", "stage2_rnn_lstm", seed=0)
    (corrupt / "history.json").write_text('[{"epoch": 1, "train_loss"')
    wrong_shape = write_run(tmp_path / "shape", "stage2_rnn_lstm", seed=0)
    (wrong_shape / "history.json").write_text(json.dumps({"evals": [], "curve": []}))
    bad_ref = tmp_path / "bad_ref.json"
    bad_ref.write_text('{"format": "my_llm-reference-v1", "stage": "stage2_rnn_lstm", "curves": {"val_loss": 3}}')
    cases = [
        (["compare", tmp_path / "nowhere", "--reference", out], "is not a folder"),
        (["compare", tmp_path / "eval", "--reference", out], "is not a training run: it has no history.json"),
        (["compare", other_stage, "--reference", out], "is a reference of stage2_rnn_lstm, but"),
        (["compare", corrupt, "--reference", out], "is not valid JSON"),
        (["compare", wrong_shape, "--reference", out], "is not a per-epoch history"),
        (["compare", run, "--reference", bad_ref], "is not a reference file of this course"),
        (["compare", run, "--reference", tmp_path / "none.json"], "does not exist"),
        (["compare", run, "--reference", out, "--tolerance", "-1"], "--tolerance: must be a number >= 0"),
        (["build", run, other_stage], "different stages"),
        (["build", "--stage", "stage1_mlp", run], "--stage stage1_mlp, but the runs were made by stage2_rnn_lstm"),
        (["build", run, write_run(tmp_path / "dup", "stage2_rnn_lstm", seed=0)], "both ran --seed 0"),
        (["build", run, write_run(tmp_path / "lr", "stage2_rnn_lstm", seed=1, extra_flags=" --lr 0.1")],
         "different commands"),
        (["build", write_run(tmp_path / "nan", "stage2_rnn_lstm", seed=1, shift=float("nan"))],
         "non-finite val_loss at epoch 5"),
        (["build", "--name", "../x", run], "--name '../x'"),
        (["compare"], "the following arguments are required: run"),
    ]
    for argv, message in cases:
        code, _, err = cli(reference.main, argv)
        assert code == 2 and message in err and err.count("\n") == 1, (argv, err)
    (tmp_path / "run" / "metrics.json").write_text(json.dumps({"stage": "stage9", "metrics": {}}))
    code, _, err = cli(reference.main, ["compare", run, "--reference", out])
    assert code == 2 and "'stage9', which has no reference runs" in err


def test_helpers():
    assert reference.recipe("python stage5_gpt/train.py --seed 3 --out_dir a b --lr 1e-3 --device=cuda --resume "
                            "--checkpoint /tmp/x.pt --num_threads 1") == "python stage5_gpt/train.py b --lr 1e-3"
    assert reference.seed_of("python t.py --lr 1") == 0 and reference.seed_of("python t.py --seed=7") == 7
    assert reference.allowance(1.0, 1.2, 1.1) == pytest.approx((0.8, 1.4))          # the band's own width
    assert reference.allowance(2.0, 2.0, 2.0) == pytest.approx((1.94, 2.06))        # 3% of the mean
    assert reference.allowance(0.001, 0.002, 0.0015) == pytest.approx((-0.009, 0.012))  # the absolute floor
    points = [[1, 2.0, 1.0, 3.0], [3, 4.0, 3.0, 5.0]]
    assert reference.band_at(points, 2) == pytest.approx((3.0, 2.0, 4.0))
    assert reference.band_at(points, 3) == (4.0, 3.0, 5.0) and reference.band_at(points, 4) is None
    assert reference.bin_curve({1: 1.0, 2: 3.0, 3: 5.0, 4: 7.0, 5: 9.0}, 2) == {2: 2.0, 4: 6.0, 6: 9.0}
    assert reference.bin_curve({1: 1.0, 2: 3.0, 3: 5.0, 4: 7.0, 5: 9.0}, 4) == {4: 4.0}
    long = reference.band([{x: float(x) for x in range(1000)}], 1)
    assert len(long) == reference.MAX_POINTS and long[0][0] == 0 and long[-1][0] == 999


def test_committed_references_are_well_formed():
    """Every committed <stage>/reference/*.json: made from at least 3 seeds, bands that hold their means."""
    files = sorted(reference.REPO_ROOT.glob("stage*/reference/*.json"))
    assert files, "no reference runs committed"
    for path in files:
        ref = json.loads(path.read_text())
        assert ref["format"] == reference.FORMAT and ref["stage"] == path.parent.parent.name, path
        assert len(ref["seeds"]) >= 3 and ref["hardware"] and ref["command"].startswith("python "), path
        for name, curve in ref["curves"].items():
            assert curve["points"], f"{path}: {name} is empty"
            assert all(lo <= mean <= hi for _, mean, lo, hi in curve["points"]), f"{path}: {name}"
        assert all(m["min"] <= m["mean"] <= m["max"] for m in ref["final"].values()), path


def unfinished(folder, stage, state, pid):
    """Turn a finished run folder into one that stopped after 3 epochs: no metrics.json, a progress.json."""
    (folder / "metrics.json").unlink()
    history = json.loads((folder / "history.json").read_text())
    model, dataset, command, _ = STAGE_RUNS[stage]
    (folder / "progress.json").write_text(json.dumps({
        "format": "my_llm-progress-v1", "stage": stage, "model": model, "dataset": dataset, "device": "cuda",
        "hardware": "NVIDIA H200", "torch": "2.11.0+cu130", "command": f"{command} --seed 5", "pid": pid,
        "host": __import__("socket").gethostname(), "state": state, "step": 300, "total_steps": 700}))
    return history


@pytest.mark.parametrize("state, pid, shown", [("running", None, "running, step 300 of 700"),
                                               ("running", 2 ** 22 + 12345, "stopped, step 300 of 700"),
                                               ("interrupted", 1, "interrupted, step 300 of 700")])
def test_compare_judges_a_run_that_has_not_finished(tmp_path, cli, state, pid, shown):
    import os

    out, _ = build_three(tmp_path, cli, "stage2_rnn_lstm")
    run = write_run(tmp_path / "mine", "stage2_rnn_lstm", 1, epochs=3)
    unfinished(run, "stage2_rnn_lstm", state, os.getpid() if pid is None else pid)
    code, stdout, err = cli(reference.main, ["compare", run, "--reference", out])
    assert code == 0, err
    assert shown in stdout and "final metrics: not compared: the run is" in stdout
    assert f"verdict: within the reference band so far ({shown})" in stdout
    assert ("--resume" in stdout) == (shown.split(",")[0] in ("stopped", "interrupted"))
    # a reference is built from finished runs only
    code, _, err = cli(reference.main, ["build", "--out", tmp_path / "x.json", run])
    assert code == 2 and "a reference is built from finished runs only" in err and err.count("\n") == 1


def test_compare_of_a_run_before_its_first_evaluation_says_so(tmp_path, cli):
    out, _ = build_three(tmp_path, cli, "stage2_rnn_lstm")
    run = write_run(tmp_path / "mine", "stage2_rnn_lstm", 1, epochs=3)
    unfinished(run, "stage2_rnn_lstm", "running", 1)
    (run / "history.json").unlink()
    code, _, err = cli(reference.main, ["compare", run, "--reference", out])
    assert code == 2 and "has not finished its first evaluation" in err and err.count("\n") == 1


def test_a_run_of_a_preset_meets_that_presets_band_whatever_its_other_flags(tmp_path, cli, monkeypatch):
    stage = "stage1_mlp"
    folder = tmp_path / stage / "reference"
    folder.mkdir(parents=True)
    for name, flags in (("default", ""), ("quick", " --preset quick")):
        runs = [write_run(tmp_path / f"{name}_s{seed}", stage, seed, extra_flags=flags) for seed in (0, 1, 2)]
        assert cli(reference.main, ["build", "--name", name, "--out", folder / f"{name}.json", *runs])[0] == 0
    monkeypatch.setattr(reference, "REPO_ROOT", tmp_path)
    mine = write_run(tmp_path / "mine", stage, 1, extra_flags=" --preset quick --impl scratch", model="other")
    assert reference.find_reference(reference.read_run(mine)).name == "quick.json"
    plain = write_run(tmp_path / "plain", stage, 1, extra_flags=" --impl scratch", model="other")
    assert reference.find_reference(reference.read_run(plain)).name == "default.json"
    assert reference.preset_of("python t.py --preset=quick") == "quick" and reference.preset_of("python t.py") is None
