"""Results tables made from metrics.json files, and written into READMEs between markers.

A README holds
    <!-- results:NAME -->
    ...generated table...
    <!-- /results:NAME -->
and `replace_block` rewrites what lies between, so no number in a table is ever typed by hand.
"""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

from scripts.common import ChildFailed, UserError, read_json

Column = tuple[str, Callable[[dict[str, Any]], Any]]


def load_results(paths: Sequence[Path]) -> list[dict[str, Any]]:
    """Read metrics.json files, each with its file name under `_file`."""
    rows = []
    for path in paths:
        row = read_json(path, "results file")
        if not isinstance(row, dict):
            raise UserError(f"results file {path} holds no JSON object; regenerate it with the stage's bench.py")
        row["_file"] = Path(path).name
        rows.append(row)
    return rows


def fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.1f}" if abs(value) >= 100 else f"{value:.4g}" if abs(value) < 1 else f"{value:.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def hardware_label(hardware: str, amp: str | None) -> str:
    """A results table's hardware cell: the machine, and the training's autocast mode where the run recorded it
    (`metrics.json`'s "amp", from `scripts.common.amp_name`): one CPU model can train in float32 or in bf16."""
    return f"{hardware}, {amp} training" if amp else hardware


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[Column]) -> str:
    lines = ["| " + " | ".join(name for name, _ in columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(fmt(get(row)).replace("|", "\\|") for _, get in columns) + " |")
    return "\n".join(lines)


def replace_block(text: str, name: str, body: str) -> str:
    """Put `body` between the `results:name` markers of `text` (the markers must exist)."""
    pattern = re.compile(rf"(<!-- results:{re.escape(name)} -->\n).*?(<!-- /results:{re.escape(name)} -->)", re.S)
    if not pattern.search(text):
        raise KeyError(f"no <!-- results:{name} --> ... <!-- /results:{name} --> block")
    return pattern.sub(lambda m: m.group(1) + body.rstrip("\n") + "\n" + m.group(2), text)


def update_file(path: Path, blocks: dict[str, str]) -> bool:
    """Rewrite every named block in `path` (atomically); True if the file changed."""
    from scripts.common import UserError, write_text  # noqa: PLC0415 - common imports torch; tables alone should not

    path = Path(path)
    old = path.read_text(encoding="utf-8")
    new = old
    for name, body in blocks.items():
        try:
            new = replace_block(new, name, body)
        except KeyError:
            raise UserError(f"{path}: no <!-- results:{name} --> ... <!-- /results:{name} --> block; "
                            "put the two marker lines where the table belongs") from None
    if new != old:
        write_text(path, new)
    return new != old


def run_script(stage_dir: Path, script: str, *argv: str) -> None:
    """Run one of a stage's programs as a learner would (a fresh Python process), echoing the command;
    a failure stops the benchmark with the program's own one-line message as the only one (ChildFailed). Benches
    bind `stage_dir` once: `run = functools.partial(run_script, STAGE_DIR)`."""
    cmd = [sys.executable, str(Path(stage_dir) / script), *argv]
    print("$", " ".join(cmd[1:]), flush=True)
    check_child(script, subprocess.run(cmd).returncode)


def check_child(script: str, code: int) -> None:
    """A program a bench started has ended with `code`: a failure it explained in its own line ends the bench with
    that status (ChildFailed, no second line); one killed by a signal could say nothing, so it is said here."""
    if code < 0:        # killed by a signal (out of memory, kill)
        raise UserError(f"{script} was stopped by signal {-code} (out of memory?); see above for how far it got")
    if code != 0:
        raise ChildFailed(code)


def short_paths(command: str, stage: str) -> str:
    """A bench's absolute run and checkpoint paths, relative to the stage (the same in every checkout)."""
    return re.sub(rf"\S*/{re.escape(stage)}/(runs|checkpoints)/", r"\1/", command)
