"""scripts/checks.py: every kind of number a learner types, accepted or refused in one line."""
import argparse

import pytest
from hypothesis import given, strategies as st

from scripts.checks import (CLIP, COUNT, FRACTION, POSITIVE, POSITIVE_INT, PROBABILITY, SEED, Range, check_args)
from scripts.common import ArgParser, UserError


@pytest.mark.parametrize("allowed, text, value", [
    (POSITIVE_INT, "7", 7), (POSITIVE_INT, " 12 ", 12), (POSITIVE_INT, "１２", 12), (POSITIVE_INT, "10_000", 10000),
    (POSITIVE_INT, 3.0, 3), (COUNT, "0", 0), (POSITIVE, "3e-4", 3e-4), (FRACTION, "0", 0.0),
    (PROBABILITY, "1", 1.0), (CLIP, "0", 0.0), (CLIP, "0.5", 0.5), (SEED, str(2 ** 32 - 1), 2 ** 32 - 1)])
def test_good_values_pass(allowed, text, value):
    assert allowed.check(text, "--x") == value and type(allowed.check(text, "--x")) is allowed.kind


@pytest.mark.parametrize("allowed, text, says", [
    (POSITIVE_INT, "0", "--x must be an integer >= 1, got '0'"), (POSITIVE_INT, "2.5", "an integer >= 1"),
    (POSITIVE_INT, "²", "got '²'"), (POSITIVE_INT, "", "got ''"), (POSITIVE_INT, "ten", "got 'ten'"),
    (POSITIVE_INT, "9" * 40, "an integer >= 1"), (COUNT, "-5", "an integer >= 0, got '-5'"),
    (POSITIVE, "0", "a number > 0, got '0'"), (POSITIVE, "nan", "got 'nan'"), (POSITIVE, "inf", "got 'inf'"),
    (POSITIVE, "1e-320", "got '1e-320'"), (FRACTION, "1", "a number in [0, 1), got '1'"),
    (PROBABILITY, "0", "a number in (0, 1]"), (CLIP, "-1", "0 (off) or a number > 0, got '-1'"),
    (SEED, str(2 ** 64), "an integer in [0, 4294967295]"), (SEED, "-1", "got '-1'"), (POSITIVE_INT, True, "got True")])
def test_bad_values_are_one_line_naming_the_option(allowed, text, says):
    with pytest.raises(UserError) as err:
        allowed.check(text, "--x")
    assert says in str(err.value) and "\n" not in str(err.value) and str(err.value).startswith("--x must be")


def test_as_an_argparse_type_the_error_names_the_flag(capsys):
    parser = ArgParser(prog="train.py")
    parser.add_argument("--clip", type=CLIP, default=1.0)
    parser.add_argument("--epochs", type=POSITIVE_INT, default=3, help="passes")
    assert parser.parse_args(["--clip", "0", "--epochs", "２"]) == argparse.Namespace(clip=0.0, epochs=2)
    with pytest.raises(SystemExit) as exit_:
        parser.parse_args(["--clip", "-1"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1
    assert "argument --clip: must be 0 (off) or a number > 0, got '-1'" in err
    assert "--epochs EPOCHS" in parser.format_help() and "(default: 3)" in parser.format_help()


def test_check_args_checks_preset_values_and_skips_unused():
    args = argparse.Namespace(lr=-1.0, limit=None)
    with pytest.raises(UserError, match="^--lr must be a number > 0, got -1.0$"):
        check_args(args, lr=POSITIVE, limit=COUNT)
    args = argparse.Namespace(lr=2e-3, limit=None)
    check_args(args, lr=POSITIVE, limit=COUNT)
    assert args.lr == 2e-3 and args.limit is None


@given(st.text(max_size=30))
def test_any_text_is_a_value_or_one_line(text):
    for allowed in (POSITIVE_INT, POSITIVE, FRACTION, SEED, Range(float)):
        try:
            value = allowed.check(text, "--x")
        except UserError as err:
            assert "\n" not in str(err).replace(repr(text), "")
        else:
            assert allowed.inside(value) and isinstance(value, allowed.kind)
