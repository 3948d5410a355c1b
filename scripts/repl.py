"""The one interactive loop of the course: every `--interactive` program (stage 1's classifier, stage 2's
and stage 5's generators, stage 3's and stage 4's translators) reads lines through `Repl`, so the same
`:commands` work everywhere and every line a user can type gets an answer, never a traceback.

    repl = Repl({"temperature": 0.8, "top_k": 0, "max_new_tokens": 200, "seed": 0})
    repl.loop(answer=lambda line: generate(line, repl.settings), banner="Type a prompt; :help lists commands.")

The standard settings, with the short forms a user may type:
    :temperature X  (:temp, :t)     0 = greedy; else between 0.01 and 100
    :top_k K        (:k)            keep the K most likely tokens (0 = all)
    :top_p P        (:p)            nucleus sampling mass, in (0, 1]
    :max_new_tokens N  (:length, :n)   how many tokens to produce
    :seed S                         reseed the sampler, 0 .. 2**32 - 1
    :beam B         (:beam_size, :b)   beam width (1 = greedy)
A program passes only the settings that apply to it; `extra_settings` and `extra_commands` add its own
(stage 5's `:cache on|off`, the translators' `:alpha` and `:heatmap FILE`). `:settings`, `:help` and `:quit`
always work. Each setting command echoes what it set, or says in one line why it kept the old value.
"""
from __future__ import annotations

import sys
from typing import Any, Callable

from scripts.checks import PROBABILITY, SEED, Range
from scripts.common import UserError, clean_text

MAX_SEED = 2**32 - 1      # what torch, numpy and Python all accept

# the allowed values of the standard settings (scripts/checks.py: finite, not subnormal, integers as integers)
SETTING_RANGES = {
    "temperature": Range(float, lo=0.01, hi=100, zero_means="greedy"),
    "top_k": Range(int, lo=0, hi=1_000_000),
    "top_p": PROBABILITY,
    "seed": SEED,
    "beam": Range(int, lo=1, hi=64),
}


def _int(text: str) -> int:
    """A whole number (any Unicode digits, as Python reads them; not '1e3', '2.0' or '²')."""
    return Range(int).check(text, "the value")


def _float(text: str) -> float:
    return Range(float).check(text, "the value")


def check_setting(name: str, value: Any, max_new_tokens: int = 10_000) -> Any:
    """Check one standard setting's value; raises UserError naming it and the allowed values.

    The command-line flags of the same names go through this too, so `--temperature nan` and
    `:temperature nan` are refused with the same words."""
    allowed = Range(int, lo=1, hi=max_new_tokens) if name == "max_new_tokens" else SETTING_RANGES.get(name)
    return value if allowed is None else allowed.check(value, name)


# name -> (parser of the typed value, one-line help)
STANDARD: dict[str, tuple[Callable[[str], Any], str]] = {
    "temperature": (_float, "sampling temperature (0 = greedy)"),
    "top_k": (_int, "keep the K most likely tokens (0 = all)"),
    "top_p": (_float, "nucleus sampling: smallest set of tokens with this much probability (1 = off)"),
    "max_new_tokens": (_int, "tokens to produce"),
    "seed": (_int, "reseed the sampler"),
    "beam": (_int, "beam width (1 = greedy)"),
}
ALIASES = {"temp": "temperature", "t": "temperature", "k": "top_k", "p": "top_p", "length": "max_new_tokens",
           "n": "max_new_tokens", "beam_size": "beam", "b": "beam", "h": "help", "?": "help", "s": "settings",
           "q": "quit", "exit": "quit"}
COMMANDS = ("temperature", "top_k", "top_p", "max_new_tokens", "seed", "beam", "help", "settings", "quit")


class Repl:
    """Settings and `:commands` of an interactive program, and the read-answer loop around them."""

    def __init__(self, settings: dict[str, Any], *,
                 extra_settings: dict[str, tuple[Callable[[str], Any], str]] | None = None,
                 extra_commands: dict[str, tuple[Callable[[str], str], str]] | None = None,
                 max_new_tokens: int = 10_000, say: Callable[[str], None] = print) -> None:
        unknown = set(settings) - set(STANDARD) - set(extra_settings or {})
        if unknown:
            raise ValueError(f"settings without a parser: {sorted(unknown)}")  # a bug in the caller
        self.settings = dict(settings)
        self.parsers = {**STANDARD, **(extra_settings or {})}
        self.extra_commands = dict(extra_commands or {})
        self.max_new_tokens = max_new_tokens
        self.say = say

    # ------------------------------------------------------------------ commands
    def help_text(self) -> str:
        lines = ["commands (type them instead of a text):"]
        for name in self.settings:
            short = [a for a, n in ALIASES.items() if n == name]
            lines.append(f"  :{name} VALUE".ljust(26) + self.parsers[name][1]
                         + (f"  (also :{', :'.join(short)})" if short else "") + f"; now {self.settings[name]}")
        for name, (_, text) in self.extra_commands.items():
            lines.append(f"  :{name}".ljust(26) + text)
        lines += ["  :settings".ljust(26) + "show the current settings",
                  "  :help".ljust(26) + "this text",
                  "  :quit".ljust(26) + "leave (Ctrl-D works too)"]
        return "\n".join(lines)

    def settings_text(self) -> str:
        return ", ".join(f"{k} {v}" for k, v in self.settings.items()) or "(no settings)"

    def set(self, name: str, text: str) -> str:
        """Parse and check `text` for setting `name`; on success store it. Returns the echo line."""
        try:
            if name in STANDARD:      # parsed and checked in one go, so the message names the allowed values
                value = check_setting(name, text, self.max_new_tokens)
            if self.parsers[name] is not STANDARD.get(name):     # the program's own parser (it may note the change)
                value = self.parsers[name][0](text)
        except (ValueError, OverflowError, UserError) as err:
            return f"(:{name} kept {self.settings[name]}: {err})"
        self.settings[name] = value
        return f"{name} = {value}"

    def command(self, line: str) -> bool:
        """Handle one `:command` line, saying what happened; returns False when the user asked to quit."""
        name, _, value = line.strip()[1:].partition(" ")
        name, value = name.strip().lower(), value.strip()
        name = ALIASES.get(name, name)
        if name == "quit":
            return False
        if name == "help":
            self.say(self.help_text())
        elif name == "settings":
            self.say(self.settings_text())
        elif name in self.extra_commands:
            self.say(self.extra_commands[name][0](value))
        elif name in self.settings:
            self.say(self.set(name, value) if value else f"{name} = {self.settings[name]}  (:{name} VALUE sets it)")
        elif name in STANDARD:
            self.say(f"(:{name} does not apply here; this program's settings: {self.settings_text()})")
        else:
            self.say(f"(unknown command :{name}; type :help)")
        return True

    # ------------------------------------------------------------------ the loop
    def loop(self, answer: Callable[[str], None], banner: str, prompt: str = "> ",
             read: Callable[[str], str] | None = None) -> int:
        """Read lines until :quit or end of input; `answer(line)` handles each non-command line.

        A UserError from `answer` is shown in one line and the loop goes on; Ctrl-C while answering stops
        that answer, Ctrl-C at the prompt gives a fresh prompt, like a shell. Returns exit status 0."""
        read = read or input  # looked up now, so a test that replaces builtins.input reaches it
        self.say(banner)
        while True:
            try:
                line = read(prompt)
            except EOFError:
                self.say("")
                return 0
            except KeyboardInterrupt:
                self.say("")
                continue
            except UnicodeDecodeError:
                self.say("(that line is not valid UTF-8 text; type it again)")
                continue
            line = clean_text(line, "that line", self.say)
            if line.lstrip().startswith(":"):
                if not self.command(line):
                    return 0
                continue
            if not line.strip():
                self.say("(empty line: type some text, or :help)")
                continue
            try:
                answer(line)
            except UserError as err:
                self.say(f"({err})")
            except KeyboardInterrupt:
                sys.stdout.write("\n")
                self.say("(stopped)")
