"""Checking the numbers a user types, written once for the whole course.

Every number a program takes (a flag, a setting typed in a REPL, a field of a form) goes through one `Range`:
it parses the text, refuses what is not a finite number of the right kind, and checks the range, with one line
that names the option and the allowed values. A learner who types `--clip -1`, `--lr 0`, `--limit -5`,
`:temperature nan` or a seed beyond 2**32 gets that line before any work starts, never a run that silently
trains the wrong thing or a crash halfway.

    p.add_argument("--epochs", type=POSITIVE_INT, default=7)         # checked while parsing
    check_args(args, lr=POSITIVE, clip=Range(float, lo=0, lo_open=True, zero_means="off"))   # after presets

Integers may be written with any Unicode digits (`３`, Python's int() reads them) and with `_` between digits
(`10_000`); not as floats (`3.0`), with superscripts (`²`) or as words.
"""
from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from typing import Any

from scripts.common import UserError

MAX_INT = 2 ** 62       # no count in the course comes near it; bigger values would overflow tensors and C longs


@dataclass(frozen=True)
class Range:
    """The allowed values of one number: its kind (int or float), bounds (open or closed), and optionally a
    special value outside them (`zero_means="off"`: 0 is allowed and means off)."""
    kind: type = int
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    zero_means: str | None = None

    def describe(self) -> str:
        """How the allowed values read in an error: "an integer >= 1", "a number in (0, 1]", "0 (off) or ..."."""
        noun = "an integer" if self.kind is int else "a number"
        if self.lo is not None and self.hi is not None:
            left, right = "(" if self.lo_open else "[", ")" if self.hi_open else "]"
            text = f"{noun} in {left}{fmt(self.lo)}, {fmt(self.hi)}{right}"
        elif self.lo is not None:
            text = f"{noun} {'>' if self.lo_open else '>='} {fmt(self.lo)}"
        elif self.hi is not None:
            text = f"{noun} {'<' if self.hi_open else '<='} {fmt(self.hi)}"
        else:
            text = f"{'a finite number' if self.kind is float else noun}"
        return f"0 ({self.zero_means}) or {text}" if self.zero_means else text

    def parse(self, text: Any) -> Any:
        """The value of `text` (a string, or an already-typed number), or ValueError."""
        if isinstance(text, bool):
            raise ValueError("a boolean")
        if isinstance(text, (int, float)):
            value = text
        else:
            text = str(text).strip()
            value = int(text) if self.kind is int else float(text)     # both raise ValueError on junk
        if self.kind is int:
            if isinstance(value, float):
                if not value.is_integer():
                    raise ValueError("not an integer")
                value = int(value)
            if abs(value) > MAX_INT:
                raise ValueError("too large")
        else:
            value = float(value)
            if not math.isfinite(value):
                raise ValueError("not finite")
            if value != 0 and abs(value) < sys.float_info.min:
                raise ValueError("subnormal")      # 1e-320: arithmetic on it loses all precision
        return value

    def inside(self, value: float) -> bool:
        if self.zero_means and value == 0:
            return True
        if self.lo is not None and (value <= self.lo if self.lo_open else value < self.lo):
            return False
        if self.hi is not None and (value >= self.hi if self.hi_open else value > self.hi):
            return False
        return True

    def check(self, text: Any, name: str) -> Any:
        """Parse and check; a UserError "NAME must be ..., got TEXT" otherwise."""
        try:
            value = self.parse(text)
        except (ValueError, OverflowError):
            raise UserError(f"{name} must be {self.describe()}, got {shown(text)}") from None
        if not self.inside(value):
            raise UserError(f"{name} must be {self.describe()}, got {shown(text)}")
        return value

    def __call__(self, text: str) -> Any:
        """As an argparse `type=`: argparse then says "argument --NAME: must be ..., got ..."."""
        try:
            return self.check(text, "value")
        except UserError as err:
            raise argparse.ArgumentTypeError(str(err).removeprefix("value ")) from None

    @property
    def __name__(self) -> str:     # argparse names the type in some messages
        return self.describe()


def fmt(bound: float) -> str:
    if isinstance(bound, int) and bound >= 2 ** 16 and (bound & (bound - 1)) == 0:
        return f"2**{bound.bit_length() - 1}"
    return f"{bound:g}" if isinstance(bound, float) else str(bound)


def shown(text: Any) -> str:
    """The offending value in an error: repr for strings (so blanks and odd characters show), cut short."""
    out = repr(text) if isinstance(text, str) else str(text)
    return out if len(out) <= 40 else out[:37] + "..."


# the kinds of values the course's programs take
POSITIVE_INT = Range(int, lo=1)                             # sizes, counts, epochs, batch sizes
COUNT = Range(int, lo=0)                                    # 0 allowed: "--limit 0" (all), "--max_steps 0" (none)
POSITIVE = Range(float, lo=0, lo_open=True)                 # learning rates, scales
NON_NEGATIVE = Range(float, lo=0)                           # weight decay, tolerances
FRACTION = Range(float, lo=0, hi=1, hi_open=True)           # dropout, warm-up fraction: [0, 1)
PROBABILITY = Range(float, lo=0, hi=1, lo_open=True)        # top-p: (0, 1]
CLIP = Range(float, lo=0, lo_open=True, zero_means="off")   # gradient clipping: 0 off, else > 0
SEED = Range(int, lo=0, hi=2 ** 32 - 1)                     # what numpy, torch and Python all accept
THREADS = Range(int, lo=0, hi=1024)                         # --num_threads: 0 means torch's default


def check_args(args: argparse.Namespace, **ranges: Range) -> None:
    """Check flags whose values were filled in after parsing (from a preset): `check_args(args, lr=POSITIVE)`.
    A flag left None (not used by this configuration) is skipped."""
    for flag, allowed in ranges.items():
        value = getattr(args, flag)
        if value is not None:
            setattr(args, flag, allowed.check(value, f"--{flag}"))
