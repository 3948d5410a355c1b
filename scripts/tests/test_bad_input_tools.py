"""The shared tools that keep bad input to one line: run_main's text and warning policy, the checked readers,
checkpoint config and weight checks, verified downloads, and the REPL under arbitrary lines."""
import dataclasses
import gzip
import hashlib
import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from scripts import common
from scripts.common import (UserError, check_vocab_fits, clean_text, config_from_checkpoint, model_from_checkpoint,
                            read_text, run_main)
from scripts.repl import Repl


def ended(main, argv, capsys):
    with pytest.raises(SystemExit) as info:
        run_main(main, argv)
    out = capsys.readouterr()
    return info.value.code, out.out, out.err


# ----------------------------------------------------------------------------- run_main
def test_an_argument_that_is_not_utf8_is_one_line(capsys):
    ran = []
    code, _, err = ended(lambda argv: ran.append(argv), ["--text", b"caf\xe9".decode("utf-8", "surrogateescape")],
                         capsys)
    assert code == 2 and not ran
    assert err.count("\n") == 1 and "command-line argument 2 is not valid UTF-8 text (byte 0xe9" in err


def test_warnings_never_come_before_the_error_line(capsys):
    def main(argv):
        warnings.warn("a library complains", UserWarning)
        raise UserError("--lr must be a number > 0, got '0'")
    code, _, err = ended(main, [], capsys)
    assert code == 2 and err == "error: --lr must be a number > 0, got '0'\n"


def test_warnings_are_shown_when_the_program_ends_well(capsys):
    def main(argv):
        warnings.warn("a library complains", UserWarning)
        print("done")
        return 0
    code, out, err = ended(main, [], capsys)
    assert code == 0 and out == "done\n" and "UserWarning: a library complains" in err


def test_an_error_with_newlines_is_still_one_line(capsys):
    def main(argv):
        raise UserError("first\nsecond")
    assert ended(main, [], capsys)[2] == "error: first second\n"


def test_out_of_memory_is_one_line(capsys):
    def main(argv):
        raise MemoryError
    code, _, err = ended(main, [], capsys)
    assert code == 2 and err.startswith("error: out of memory") and err.count("\n") == 1


def test_clean_text_replaces_undecodable_bytes_and_says_so():
    said = []
    assert clean_text("ok", say=said.append) == "ok" and not said
    text = b"caf\xe9 au lait".decode("utf-8", "surrogateescape")
    assert clean_text(text, "the prompt", said.append) == "caf\ufffd au lait"
    assert len(said) == 1 and "the prompt" in said[0]


# ----------------------------------------------------------------------------- readers
def test_read_text_names_the_line_that_is_not_utf8(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_bytes(b"fine\nalso fine\nbad \xff here\n")
    with pytest.raises(UserError, match=r"corpus\.txt, line 3: byte 0xff is not valid UTF-8"):
        read_text(path, "corpus file")


@pytest.mark.parametrize("damage", ["truncated", "not gzip", "corrupt"])
def test_read_text_refuses_a_damaged_gzip_file(tmp_path, damage):
    path = tmp_path / "train.txt.gz"
    data = gzip.compress(b"hello world\n" * 1000)
    data = {"truncated": data[: len(data) // 2], "not gzip": b"plain text, not gzip\n",
            "corrupt": data[:20] + bytes(b ^ 0xFF for b in data[20:40]) + data[40:]}[damage]
    path.write_bytes(data)
    with pytest.raises(UserError, match="train.txt.gz is not a complete gzip file"):
        read_text(path)


def test_read_text_refuses_a_file_beyond_its_limit(tmp_path):
    path = tmp_path / "big.txt.gz"
    path.write_bytes(gzip.compress(b"a" * 5000))
    with pytest.raises(UserError, match="unpacks to more than 1,000 bytes"):
        read_text(path, limit=1000)


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=300), st.booleans())
def test_read_text_reads_any_bytes_or_says_why_not(tmp_path_factory, data, zipped):
    path = tmp_path_factory.mktemp("any") / ("f.txt.gz" if zipped else "f.txt")
    path.write_bytes(data)
    try:
        text = read_text(path)
    except UserError as err:
        assert "\n" not in str(err) and str(path) in str(err)
    else:
        assert isinstance(text, str)


# ----------------------------------------------------------------------------- checkpoints
@dataclasses.dataclass
class TinyConfig:
    vocab_size: int = 10
    hidden: int = 4
    dropout: float = 0.1
    tied: bool = True
    kind: str = "mlp"


class Tiny(torch.nn.Module):
    def __init__(self, config: TinyConfig) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(config.vocab_size, config.hidden)
        self.out = torch.nn.Linear(config.hidden, config.vocab_size)


SAVED = dataclasses.asdict(TinyConfig())


@pytest.mark.parametrize("edit, message", [
    ({"hidden": None}, r"missing hidden"),
    ({"n_experts": 4}, r"unknown n_experts"),
    ({"hidden": 10**9}, r"hidden = '1000000000'"),
    ({"hidden": -3}, r"hidden = '-3'"),
    ({"hidden": "4"}, r"hidden = '4'"),
    ({"tied": 1}, r"tied = '1'"),
    ({"hidden": True}, r"hidden = 'True'"),
    ({"dropout": float("nan")}, r"dropout = 'nan'"),
])
def test_an_edited_config_is_refused_before_anything_is_built(edit, message):
    saved = {k: v for k, v in {**SAVED, **edit}.items() if v is not None}
    with pytest.raises(UserError, match=f"model.pt holds a model config that this version cannot build .*{message}"):
        config_from_checkpoint("model.pt", saved, TinyConfig)


def test_a_checked_config_builds_and_optional_fields_may_be_missing():
    assert config_from_checkpoint("m.pt", SAVED, TinyConfig) == TinyConfig()
    older = {k: v for k, v in SAVED.items() if k != "kind"}
    assert config_from_checkpoint("m.pt", older, TinyConfig, optional=["kind"]).kind == "mlp"
    with pytest.raises(UserError, match="hidden = '64'"):
        config_from_checkpoint("m.pt", {**SAVED, "hidden": 64}, TinyConfig, limits={"hidden": 32})


def test_weights_are_checked_against_the_config_on_the_meta_device():
    state = Tiny(TinyConfig()).state_dict()
    model = model_from_checkpoint("m.pt", lambda: Tiny(TinyConfig()), state)
    assert torch.equal(model.embed.weight, state["embed.weight"])
    with pytest.raises(UserError, match=r"embed.weight has shape \[10, 4\], the config makes \[10, 8\]"):
        model_from_checkpoint("m.pt", lambda: Tiny(TinyConfig(hidden=8)), state)
    with pytest.raises(UserError, match="out.bias is missing"):
        model_from_checkpoint("m.pt", lambda: Tiny(TinyConfig()), {k: v for k, v in state.items() if k != "out.bias"})
    with pytest.raises(UserError, match="unexpected extra.weight"):
        model_from_checkpoint("m.pt", lambda: Tiny(TinyConfig()), {**state, "extra.weight": torch.zeros(1)})
    with pytest.raises(UserError, match="no dict of tensors"):
        model_from_checkpoint("m.pt", lambda: Tiny(TinyConfig()), {"embed.weight": "not a tensor"})


def test_a_vocabulary_must_fit_the_model():
    check_vocab_fits("m.pt", 10, 10)
    with pytest.raises(UserError, match="its vocabulary has 7 entries but the model was built for 10"):
        check_vocab_fits("m.pt", 7, 10)


# ----------------------------------------------------------------------------- downloads
def test_a_download_is_verified_and_a_wrong_one_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.delenv("MY_LLM_OFFLINE", raising=False)
    source = tmp_path / "upstream.txt"
    source.write_bytes(b"the data set\n")
    good = hashlib.sha256(source.read_bytes()).hexdigest()
    dest = tmp_path / "cache" / "data.txt"
    with pytest.raises(ValueError, match="changed upstream or damaged in transit"):
        common.download(source.as_uri(), dest, sha256="0" * 64)
    assert not dest.exists() and not list(dest.parent.iterdir())
    assert common.download(source.as_uri(), dest, sha256=good).read_bytes() == b"the data set\n"


# ----------------------------------------------------------------------------- the REPL
SETTING_LINES = [f":{name} {value}" for name in ("temperature", "t", "top_k", "top_p", "seed", "beam", "n", "x")
                 for value in ("", "nan", "-1", "1e-320", "2**64", "18446744073709551616", "²", "３", "0.5", " ")]


def reader(lines):
    """`input` for the REPL: these lines, then end of input (Ctrl-D)."""
    feed = iter(lines)

    def read(prompt):
        line = next(feed, None)
        if line is None:
            raise EOFError
        return line
    return read


def repl_with_echo(said):
    repl = Repl({"temperature": 0.8, "top_k": 0, "top_p": 1.0, "max_new_tokens": 50, "seed": 0, "beam": 1},
                say=said.append)
    return repl


@pytest.mark.parametrize("line, kept", [
    (":temperature nan", "temperature must be 0 (greedy) or a number in [0.01, 100]"),
    (":temperature 1e-320", "temperature must be"),
    (":temperature inf", "temperature must be"),
    (":seed 18446744073709551616", "seed must be an integer in [0, 4294967295]"),
    (":beam ²", "beam must be an integer in [1, 64]"),
    (":top_p 0", "top_p must be a number in (0, 1]"),
    (":max_new_tokens 3.0", "max_new_tokens must be an integer"),
])
def test_bad_settings_keep_the_old_value_in_one_line(line, kept):
    said = []
    repl = repl_with_echo(said)
    before = dict(repl.settings)
    assert repl.loop(lambda text: None, "hi", read=reader([line])) == 0
    assert repl.settings == before
    assert any(kept in s and "kept" in s for s in said), said


def test_a_beam_typed_with_fullwidth_digits_is_read():
    said = []
    repl = repl_with_echo(said)
    repl.command(":beam ３")
    assert repl.settings["beam"] == 3 and said == ["beam = 3"]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(max_size=80) | st.sampled_from(SETTING_LINES), max_size=6))
def test_the_repl_answers_any_line(lines):
    said, answered = [], []
    repl = repl_with_echo(said)
    assert repl.loop(answered.append, "hi", read=reader(lines)) == 0
    assert all(isinstance(s, str) for s in said)
    for text in answered:       # what reaches the program can always be encoded
        text.encode("utf-8")


def test_torch_running_out_of_cpu_memory_is_one_line(capsys):
    def main(argv):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory: "
                           "you tried to allocate 4000000000000 bytes.")
    code, _, err = ended(main, [], capsys)
    assert code == 2 and err.startswith("error: out of memory") and err.count("\n") == 1


def test_other_runtime_errors_stay_tracebacks(capsys):
    def main(argv):
        raise RuntimeError("a bug")
    with pytest.raises(RuntimeError, match="a bug"):
        run_main(main, [])


# ----------------------------------------------------------------------------- resume
def resumable(tmp_path, state=None):
    import argparse  # noqa: PLC0415

    from scripts.training import ResumableRun  # noqa: PLC0415
    args = argparse.Namespace(resume=True, dataset="d", checkpoint=None)
    return ResumableRun(args, "stage0", "m", tmp_path / "last.pt", state or {"step": 0, "best": float("inf")})


def save_last(tmp_path, **edits):
    model = torch.nn.Linear(2, 2)
    payload = {**common.checkpoint_header("stage0", "m"), "dataset": "d", "args": {}, "step": 5, "best": 1.5,
               "model_state": model.state_dict(), "optimizer_state": torch.optim.SGD(model.parameters()).state_dict(),
               "rng_state": common.rng_state(), **edits}
    common.save_checkpoint(tmp_path / "last.pt", {k: v for k, v in payload.items() if v is not None})
    return model


@pytest.mark.parametrize("edits, message", [
    ({"args": ["not", "a", "dict"]}, "holds no settings"),
    ({"step": "five"}, r"last.pt: step is 'five', not an integer \(the file was edited\)"),
    ({"step": -2}, r"step is '-2', not an integer"),
    ({"best": True}, r"best is 'True', not a number"),
    ({"rng_state": None}, r"cannot be resumed \(KeyError: 'rng_state'\)"),
    ({"model_state": {"weight": torch.zeros(3, 3)}}, "cannot be resumed"),
])
def test_an_edited_last_checkpoint_is_refused_in_one_line(tmp_path, edits, message):
    model = save_last(tmp_path, **edits)
    before = (tmp_path / "last.pt").read_bytes()
    with pytest.raises(UserError, match=message):
        run = resumable(tmp_path)
        run.attach(model, torch.optim.SGD(model.parameters()), dict)
    assert (tmp_path / "last.pt").read_bytes() == before


def test_a_good_last_checkpoint_resumes(tmp_path):
    model = save_last(tmp_path)
    run = resumable(tmp_path)
    assert run.attach(model, torch.optim.SGD(model.parameters()), dict) and run.state == {"step": 5, "best": 1.5}


@pytest.mark.parametrize("state, refused", [("interrupted", True), ("stopped", True), ("finished", False),
                                            ("failed", False)])
def test_a_fresh_start_never_silently_replaces_an_unfinished_run(tmp_path, state, refused):
    import argparse  # noqa: PLC0415

    from scripts.monitor import PROGRESS_FORMAT  # noqa: PLC0415
    from scripts.training import ResumableRun  # noqa: PLC0415
    save_last(tmp_path)
    common.write_json(tmp_path / "progress.json", {"format": PROGRESS_FORMAT, "state": state, "step": 120,
                                                   "total_steps": 400})
    fresh = argparse.Namespace(resume=False, restart=False, dataset="d", checkpoint=None)
    if refused:
        with pytest.raises(UserError, match=rf"holds a run that was {state} at step 120 of 400; add --resume to "
                                            "continue it, or --restart to start over"):
            ResumableRun(fresh, "stage0", "m", tmp_path / "last.pt", {"step": 0})
    else:
        ResumableRun(fresh, "stage0", "m", tmp_path / "last.pt", {"step": 0}).lock.release()
    ResumableRun(argparse.Namespace(**{**vars(fresh), "restart": True}), "stage0", "m", tmp_path / "last.pt",
                 {"step": 0}).lock.release()
    with pytest.raises(UserError, match="choose one"):
        ResumableRun(argparse.Namespace(**{**vars(fresh), "restart": True, "resume": True}), "stage0", "m",
                     tmp_path / "last.pt", {"step": 0})


def test_a_failed_child_program_adds_no_second_line(capsys):
    def main(argv):
        raise common.ChildFailed(2)
    assert ended(main, [], capsys) == (2, "", "")


def test_an_empty_path_is_refused_not_taken_for_the_default(capsys):
    parser = common.ArgParser(prog="train.py")
    common.add_output_args(parser, "best model", "run folder")
    common.add_common_args(parser)
    for flag in ("--out_dir", "--checkpoint", "--data_dir"):
        with pytest.raises(SystemExit):
            parser.parse_args([flag, " "])
        assert f"argument {flag}" in (err := capsys.readouterr().err) and "an empty path" in err


def test_a_program_of_another_checkout_is_refused(tmp_path, monkeypatch):
    other = tmp_path / "clone"
    (other / "scripts").mkdir(parents=True)
    (other / "scripts" / "common.py").write_text("")
    (other / "stage1_mlp").mkdir()
    (other / "stage1_mlp" / "train.py").write_text("")
    monkeypatch.setattr("sys.argv", [str(other / "stage1_mlp" / "train.py")])
    with pytest.raises(UserError, match=r"belongs to the checkout .*clone, but Python imports the course's"):
        common.check_same_checkout()
    monkeypatch.setattr("sys.argv", [str(common.REPO_ROOT / "stage1_mlp" / "train.py")])
    common.check_same_checkout()


def test_a_checkpoint_that_is_a_folder_is_named_so(tmp_path):
    (tmp_path / "best.pt").write_bytes(b"")
    with pytest.raises(UserError, match=r"is a folder; pass a .pt file such as .*best.pt"):
        common.find_model(str(tmp_path), tmp_path, ["*.pt"], [], "python train.py")
    with pytest.raises(UserError, match="is a folder; pass the .pt file in it"):
        common.load_checkpoint(tmp_path, "stage1_mlp")


def test_non_finite_weights_are_refused():
    state = Tiny(TinyConfig()).state_dict()
    state["out.bias"][0] = float("nan")
    with pytest.raises(UserError, match="the weight out.bias holds NaN or infinite values"):
        model_from_checkpoint("m.pt", lambda: Tiny(TinyConfig()), state)


def test_a_diverged_training_loss_stops_the_run_in_one_line(tmp_path):
    from scripts.monitor import TrainingMonitor  # noqa: PLC0415
    monitor = TrainingMonitor(tmp_path, stage="stage0", model="m", dataset="d", device="cpu", total_steps=5,
                              unit="tok")
    monitor.step(2.5, items=10)
    with pytest.raises(UserError, match=r"the training loss became nan at step 2: training diverged; .*--lr"):
        monitor.step(float("nan"), items=10)
    monitor.close("failed")


@pytest.mark.parametrize("edit, message", [
    (lambda o: o["param_groups"][0].update(betas=(0.5,)), "optimizer setting betas"),
    (lambda o: o["param_groups"][0].update(lr=float("nan")), "optimizer setting lr"),
    (lambda o: o["state"][0].update(exp_avg=torch.zeros(5)), r"optimizer state exp_avg of shape \[5\]"),
])
def test_an_edited_optimizer_state_is_refused_on_resume(tmp_path, edit, message):
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.ones(1, 2)).sum().backward()
    optimizer.step()
    saved = optimizer.state_dict()
    edit(saved)
    save_last(tmp_path, optimizer_state=saved, model_state=model.state_dict())
    run = resumable(tmp_path)
    with pytest.raises(UserError, match=message):
        run.attach(model, torch.optim.AdamW(model.parameters()), dict)


@pytest.mark.parametrize("best, message", [("folder", "is a folder"), ("run/last.pt", "the run's own last.pt"),
                                           ("run/train.log", "is an existing file that is not a checkpoint")])
def test_a_best_checkpoint_path_that_would_destroy_something_is_refused(tmp_path, best, message):
    import argparse  # noqa: PLC0415

    from scripts.training import ResumableRun  # noqa: PLC0415
    (tmp_path / "folder").mkdir()
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "train.log").write_text("the log\n")
    args = argparse.Namespace(resume=False, dataset="d", checkpoint=str(tmp_path / best))
    with pytest.raises(UserError, match=message):
        ResumableRun(args, "stage0", "m", tmp_path / "run" / "last.pt", {"step": 0})
    assert (tmp_path / "run" / "train.log").read_text() == "the log\n"


def test_an_evaluation_never_replaces_a_trainings_metrics(tmp_path):
    common.write_metrics(tmp_path / "metrics.json", stage="s", model="m", dataset="d", split="test", metrics={},
                         params=1, seconds=1.0, seconds_key="train_seconds", device="cpu")
    before = (tmp_path / "metrics.json").read_bytes()
    with pytest.raises(UserError, match="is a training run's metrics.json"):
        common.write_metrics(tmp_path / "metrics.json", stage="s", model="m", dataset="d", split="test",
                             metrics={}, params=1, seconds=1.0, seconds_key="eval_seconds", device="cpu")
    assert (tmp_path / "metrics.json").read_bytes() == before


@pytest.mark.parametrize("edits, message", [({"best": float("nan")}, "best is nan"),
                                            ({"step": 3, "best": float("inf")}, None)])
def test_a_nan_counter_is_refused_on_resume(tmp_path, edits, message):
    model = save_last(tmp_path, **edits)
    run = resumable(tmp_path, {"step": 0, "best": float("inf")})
    if message:
        with pytest.raises(UserError, match=message):
            run.attach(model, torch.optim.SGD(model.parameters()), dict)
    else:       # no evaluation yet: the best score is still the fresh run's inf
        assert run.attach(model, torch.optim.SGD(model.parameters()), dict)
