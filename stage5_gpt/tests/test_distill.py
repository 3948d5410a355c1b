"""distill.py: the loss against the formula, a tiny teacher distilled end to end, exact resume, bad input."""
import json
import math

import pytest
import torch

from scripts.common import load_checkpoint, run_main, save_checkpoint
from scripts.testing import ctrl_c_after_steps, one_error_line
from stage5_gpt import distill, evaluate, generate, train
from stage5_gpt.tests.conftest import tiny_args


def formula(student, teacher, targets, temperature, alpha):
    """The loss written out: probabilities as exp / sum, the KL term as sum p (log p - log q)."""
    def softmax(z):
        e = torch.exp(z - z.max(dim=-1, keepdim=True).values)
        return e / e.sum(dim=-1, keepdim=True)
    p = softmax(teacher / temperature)
    q = softmax(student / temperature)
    kl = (p * (torch.log(p) - torch.log(q))).sum(dim=-1)            # (B, T)
    probs = softmax(student)
    keep = targets != -1
    picked = torch.gather(probs, -1, targets.clamp(min=0)[..., None])[..., 0]
    ce = -torch.log(picked)[keep].mean()
    return alpha * temperature ** 2 * kl[keep].mean() + (1 - alpha) * ce


@pytest.mark.parametrize("temperature, alpha", [(1.0, 0.5), (2.0, 0.5), (4.0, 0.9), (0.5, 1.0), (2.0, 0.0)])
def test_the_loss_and_its_gradient_follow_the_formula(temperature, alpha):
    gen = torch.Generator().manual_seed(0)
    student = (3 * torch.randn(3, 5, 11, generator=gen, dtype=torch.float64)).requires_grad_()
    teacher = 3 * torch.randn(3, 5, 11, generator=gen, dtype=torch.float64)
    targets = torch.randint(11, (3, 5), generator=gen)
    targets[0, :2] = -1                                              # ignored positions, as the model's loss has
    ours = distill.distillation_loss(student, teacher, targets, temperature, alpha)
    (grad_ours,) = torch.autograd.grad(ours, student)
    direct = formula(student, teacher, targets, temperature, alpha)
    (grad_direct,) = torch.autograd.grad(direct, student)
    assert ours.item() == pytest.approx(direct.item(), rel=1e-5)
    torch.testing.assert_close(grad_ours.double(), grad_direct, rtol=1e-4, atol=1e-7)


def test_a_student_equal_to_its_teacher_has_no_soft_loss():
    logits = torch.randn(2, 4, 7)
    targets = torch.randint(7, (2, 4))
    loss = distill.distillation_loss(logits, logits, targets, 2.0, 1.0)
    assert abs(loss.item()) < 1e-5


def test_the_teacher_table_matches_the_teacher_on_every_window(teacher_run):
    """The cached logits of a position equal the teacher's on a window that gives it at least a quarter of a
    context (windows of 16 every 12 positions; the last one ends at the last position)."""
    _, teacher, _ = distill.load_teacher(teacher_run / "best.pt")
    data = torch.randint(teacher.config.vocab_size, (101,)).numpy()
    table = distill.TeacherTargets(teacher.eval(), data, torch.device("cpu"), False, True,
                                   type("L", (), {"info": staticmethod(print)})).table
    block = teacher.config.block_size
    assert table.shape == (100, teacher.config.vocab_size)
    for start, keep in ((0, 0), (12, 4), (36, 4), (72, 4), (84, 4)):
        with torch.no_grad():
            logits, _ = teacher(torch.from_numpy(data[start:start + block]).long()[None])
        torch.testing.assert_close(table[start + keep:start + block].float(), logits[0, keep:], atol=2e-3, rtol=2e-3)


# ----------------------------------------------------------------------------- end to end on tiny data
@pytest.fixture(scope="module")
def teacher_run(lm_data, tmp_path_factory):
    """A tiny char-level teacher: 2 layers, 32 wide, context 16."""
    out = tmp_path_factory.mktemp("teacher")
    argv = tiny_args(lm_data, out, "--n_layer", "2", "--n_embd", "32", "--max_steps", "30", "--eval_interval", "30",
                     "--lr", "1e-2", "--min_lr", "1e-3")
    with pytest.raises(SystemExit) as info:
        run_main(train.main, [str(a) for a in argv])
    assert info.value.code == 0
    return out


def student_args(lm_data, teacher_run, out, *extra):
    return ["--teacher", teacher_run / "best.pt", "--data_dir", lm_data, "--cache_dir", out / "cache",
            "--out_dir", out / "run", "--checkpoint", out / "student.pt", "--n_layer", "1", "--n_head", "2",
            "--n_embd", "16", "--batch_size", "4", "--max_steps", "12", "--eval_interval", "6", "--eval_iters", "2",
            "--warmup_steps", "2", "--log_interval", "3", "--num_threads", "1", "--device", "cpu", *extra]


@pytest.fixture(scope="module")
def student_run(lm_data, teacher_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("student")
    with pytest.raises(SystemExit) as info:
        run_main(distill.main, [str(a) for a in student_args(lm_data, teacher_run, out)])
    assert info.value.code == 0
    return out


def test_the_student_is_a_stage5_checkpoint_with_its_record(student_run, teacher_run):
    ckpt = load_checkpoint(student_run / "student.pt", "stage5_gpt", ["gpt"])
    record = ckpt["distillation"]
    assert record["distilled"] and record["temperature"] == 1.0 and record["alpha"] == 0.9
    assert record["teacher"] == str(teacher_run / "best.pt") and len(record["teacher_sha256"]) == 64
    assert record["student_params"] < record["teacher_params"] and record["cache_teacher"]
    assert ckpt["config"]["n_layer"] == 1 and ckpt["config"]["n_embd"] == 16
    teacher = load_checkpoint(teacher_run / "best.pt", "stage5_gpt")
    assert ckpt["tokenizer_fingerprint"] == teacher["tokenizer_fingerprint"] and ckpt["dataset"] == "shakespeare"
    metrics = json.loads((student_run / "run" / "metrics.json").read_text())
    assert metrics["stage"] == "stage5_gpt" and metrics["metrics"]["steps"] == 12
    assert metrics["metrics"]["train_tokens_per_s"] > 0 and metrics["metrics"]["teacher_seconds"] > 0
    assert "tokens/s" in (student_run / "run" / "train.log").read_text()


def test_generate_and_evaluate_load_the_student(student_run, lm_data, cli, tmp_path):
    code, out, err = cli(generate.main, ["--checkpoint", student_run / "student.pt", "--prompt", "ROMEO:",
                                         "--max_new_tokens", "20", "--temperature", "0", "--device", "cpu"])
    assert code == 0 and out.startswith("ROMEO:"), err
    code, out, err = cli(evaluate.main, ["--checkpoint", student_run / "student.pt", "--data_dir", lm_data,
                                         "--metrics_out", tmp_path / "m.json", "--device", "cpu"])
    assert code == 0, err
    assert math.isfinite(json.loads((tmp_path / "m.json").read_text())["metrics"]["loss"])


def test_the_control_trains_the_same_student_on_the_data_alone(lm_data, teacher_run, tmp_path, cli):
    code, _, err = cli(distill.main, student_args(lm_data, teacher_run, tmp_path, "--no-distill",
                                                  "--max_steps", "4", "--eval_interval", "4"))
    assert code == 0, err
    ckpt = load_checkpoint(tmp_path / "student.pt", "stage5_gpt")
    assert ckpt["distillation"]["distilled"] is False and ckpt["distillation"]["alpha"] == 0.0
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["metrics"]["teacher_seconds"] == 0


@pytest.mark.parametrize("online", [False, True])
def test_ctrl_c_then_resume_gives_the_uninterrupted_student(lm_data, teacher_run, tmp_path, cli, monkeypatch, online):
    """Bit-exact on CPU: the same losses at every step and the same final weights (student dropout on)."""
    common = ["--dropout", "0.1", "--max_steps", "10", "--eval_interval", "5"] + (["--no-cache_teacher"] if online
                                                                                  else [])
    code, _, err = cli(distill.main, student_args(lm_data, teacher_run, tmp_path / "a", *common))
    assert code == 0, err
    uninterrupted = load_checkpoint(tmp_path / "a" / "run" / "last.pt", "stage5_gpt")
    restore = ctrl_c_after_steps(monkeypatch, 7)
    code, _, err = cli(distill.main, student_args(lm_data, teacher_run, tmp_path / "b", *common))
    assert code == 130 and "--resume" in err
    restore()
    assert load_checkpoint(tmp_path / "b" / "run" / "last.pt", "stage5_gpt")["step"] == 7
    code, _, err = cli(distill.main, student_args(lm_data, teacher_run, tmp_path / "b", *common, "--resume"))
    assert code == 0, err
    resumed = load_checkpoint(tmp_path / "b" / "run" / "last.pt", "stage5_gpt")
    assert resumed["curve"] == uninterrupted["curve"]
    for name, value in uninterrupted["model_state"].items():
        assert torch.equal(resumed["model_state"][name], value), name
    code, _, err = cli(distill.main, student_args(lm_data, teacher_run, tmp_path / "b", *common, "--resume",
                                                  "--temperature", "3"))
    one_error_line(code, err, "--temperature 1.0 (now 3.0)")


# ----------------------------------------------------------------------------- bad input: one line, exit 2
def teacher_vocab(teacher_run):
    return load_checkpoint(teacher_run / "best.pt", "stage5_gpt")["config"]["vocab_size"]


def edited(teacher_run, tmp_path, name, **changes):
    ckpt = load_checkpoint(teacher_run / "best.pt", "stage5_gpt")
    ckpt.update(changes)
    save_checkpoint(tmp_path / name, ckpt)
    return tmp_path / name


def test_a_student_not_smaller_than_its_teacher_is_refused(lm_data, teacher_run, tmp_path, cli):
    code, _, err = cli(distill.main, student_args(lm_data, teacher_run, tmp_path, "--n_layer", "2", "--n_embd", "32"))
    one_error_line(code, err, "not smaller than the teacher", "--n_layer")
    assert not (tmp_path / "run").exists()


def test_teachers_that_are_not_a_stage5_language_model_are_refused(lm_data, teacher_run, tmp_path, cli):
    cases = [(edited(teacher_run, tmp_path, "cls.pt", model="gpt_classifier"), "gpt_classifier"),
             (edited(teacher_run, tmp_path, "s4.pt", stage="stage4_transformer"), "stage4_transformer"),
             (edited(teacher_run, tmp_path, "q.pt", quantization={"scheme": "int8"}), "quantized"),
             (edited(teacher_run, tmp_path, "ft.pt", finetune={"kind": "text"}), "fine-tuned"),
             (tmp_path / "missing.pt", "does not exist")]
    for path, needle in cases:
        argv = student_args(lm_data, teacher_run, tmp_path)
        argv[1] = path
        code, _, err = cli(distill.main, argv)
        one_error_line(code, err, needle)


def test_a_student_start_with_another_tokenizer_is_refused(lm_data, teacher_run, tmp_path, cli):
    other = tmp_path / "other"
    code, _, err = cli(train.main, tiny_args(lm_data, other, "--dataset", "gutenberg", "--tokenizer", "char",
                                             "--max_steps", "2", "--eval_interval", "2"))
    assert code == 0, err
    code, _, err = cli(distill.main, student_args(lm_data, teacher_run, tmp_path, "--init_from", other / "best.pt"))
    one_error_line(code, err, "another tokenizer than --teacher")


def test_a_data_dir_without_the_teachers_data_set_is_refused(lm_data, teacher_run, tmp_path, cli):
    (tmp_path / "empty").mkdir()
    argv = student_args(lm_data, teacher_run, tmp_path)
    argv[3] = tmp_path / "empty"
    code, _, err = cli(distill.main, argv)
    one_error_line(code, err, "tiny_shakespeare", "input.txt")


@pytest.mark.parametrize("flags, needle", [
    (["--temperature", "0"], "--temperature"),
    (["--alpha", "1.5"], "--alpha"),
    (["--alpha", "0"], "--no-distill"),
    (["--n_embd", "15"], "divisible"),
    (["--min_lr", "1"], "--min_lr"),
    (["--max_steps", "0"], "--max_steps"),
    (["--resume", "--restart"], "choose one"),
])
def test_bad_flags_are_one_line(lm_data, teacher_run, tmp_path, cli, flags, needle):
    code, _, err = cli(distill.main, student_args(lm_data, teacher_run, tmp_path, *flags))
    one_error_line(code, err, needle)


def test_the_teacher_pass_is_counted_in_forward_flops(teacher_run):
    _, teacher, _ = distill.load_teacher(teacher_run / "best.pt")
    windows = len(distill.table_windows(100, 16))                   # every 12 positions: 0, 12, ..., 84
    assert windows == 8
    assert distill.teacher_pass_flops(teacher, 101) == windows * 16 * teacher.flops_per_token(16) / 3


def test_measure_gives_the_control_the_teacher_pass_in_extra_steps(lm_data, teacher_run, tmp_path, monkeypatch):
    """The control's extra steps cost what the teacher's pass did (on tiny data the pass is large next to a tiny
    student's step, so the pass is shrunk here to keep the control short)."""
    monkeypatch.setenv("MY_LLM_DATA", str(lm_data))
    flags = ["--n_layer", "1", "--n_head", "2", "--n_embd", "16", "--batch_size", "4", "--max_steps", "6",
             "--eval_interval", "3", "--eval_iters", "2", "--warmup_steps", "2", "--cache_dir", str(tmp_path / "c")]
    student = distill.GPT(distill.GPTConfig(vocab_size=teacher_vocab(teacher_run), block_size=16, n_layer=1,
                                            n_head=2, n_embd=16, bias=False))
    student_step = 4 * 16 * student.flops_per_token(16)                    # batch 4, windows of 16
    monkeypatch.setattr(distill, "teacher_pass_flops", lambda teacher, tokens: 2.5 * student_step)
    result = distill.measure(tmp_path / "m", teacher_run / "best.pt", flags=flags, num_threads=1, log=lambda m: None)
    run = result["runs"][0]
    assert run["distilled"]["steps"] == 6 and run["alone"]["steps"] == result["settings"]["control_steps"] == 9
    assert run["gap_closed"] == distill.gap_closed(run["alone"]["val_loss"], run["distilled"]["val_loss"],
                                                   result["teacher"]["val_loss"])
    assert result["student"]["params"] < result["teacher"]["params"] and result["load_average"]["mean"] >= 0


def test_gap_closed_is_undefined_when_the_student_alone_matches_its_teacher():
    assert distill.gap_closed(alone=1.6, distilled=1.55, teacher=1.5) == pytest.approx(0.5)
    assert distill.gap_closed(alone=1.6, distilled=1.65, teacher=1.5) == pytest.approx(-0.5)
    assert distill.gap_closed(alone=1.5, distilled=1.45, teacher=1.5) is None
    assert distill.gap_closed(alone=1.47, distilled=1.46, teacher=1.49) is None


def test_the_student_never_replaces_the_teacher_or_a_file_it_did_not_write(lm_data, teacher_run, student_run,
                                                                           tmp_path, cli):
    teacher = teacher_run / "best.pt"
    before = teacher.read_bytes()
    other = tmp_path / "trained.pt"
    other.write_bytes(before)
    for target, needles in ((teacher, ["is the --teacher file"]), (other, ["already exists", "not a student"])):
        argv = [a for a in student_args(lm_data, teacher_run, tmp_path) if a != tmp_path / "student.pt"]
        at = argv.index("--checkpoint")
        code, _, err = cli(distill.main, [*argv[:at + 1], target, *argv[at + 1:]])
        one_error_line(code, err, *needles)
    assert teacher.read_bytes() == before and other.read_bytes() == before
    code, _, err = cli(distill.main, [*student_args(lm_data, teacher_run, tmp_path / "s"), "--init_from",
                                      student_run / "student.pt", "--n_layer", "3"])
    one_error_line(code, err, "--init_from", "sets the student's shape", "drop --n_layer")


def test_a_short_try_shortens_the_default_warmup(lm_data, teacher_run, tmp_path):
    args = distill.resolve_args(distill.build_parser().parse_args(["--max_steps", "40"]))
    assert args.warmup_steps == 4
    assert distill.resolve_args(distill.build_parser().parse_args([])).warmup_steps == 100
    for typed in ("50", "100"):     # a typed warm-up is kept as typed, so it must fit
        with pytest.raises(distill.UserError, match=f"--warmup_steps {typed} must be at most --max_steps 40"):
            distill.resolve_args(distill.build_parser().parse_args(["--max_steps", "40", "--warmup_steps", typed]))


def test_ctrl_c_while_the_teacher_scores_the_text_says_nothing_was_saved(lm_data, teacher_run, tmp_path, cli,
                                                                         monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(distill.TeacherTargets, "logits_table", interrupted)
    code, _, err = cli(distill.main, student_args(lm_data, teacher_run, tmp_path))
    assert code == 130 and "before the first step: nothing to save yet" in err
    assert not (tmp_path / "run" / "last.pt").exists() and not (tmp_path / "student.pt").exists()
    assert distill.layers(1) == "1 layer" and distill.layers(4) == "4 layers"
