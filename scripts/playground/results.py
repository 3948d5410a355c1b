"""The course's measured results and sweeps, as rows the playground's page can filter and plot.

`results(root)` reads every `stageN/results/*.json` in the course-wide metrics format the way
scripts/course_report.py does (its loaders, its model names, its tables) and lists the plots a page may show
(`stageN/results/*.png`, `docs/images/*.png`). `sweeps(root)` finds what scripts/sweep.py wrote (`<out>/results.json`,
with `--out` usually under `sweeps/`) and the learning-rate sweeps the stages recorded in their results.
"""
from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from scripts import course_report, sweep
from scripts.common import UserError, inside, read_json

PLOT_GLOBS = ("stage*/results/*.png", "docs/images/*.png")
# where `python scripts/sweep.py ... --out FOLDER` is looked for: its examples write under sweeps/; a learner may
# also keep a sweep beside a stage's runs
SWEEP_GLOBS = ("sweeps/**/results.json", "stage*/sweeps/**/results.json", "stage*/runs/**/results.json")
RECORDED_SWEEPS = "stage*/results/*sweep*.json"
METRIC_WORDS = re.compile(r"loss|bleu|acc|chrf|f1|ppl|perplexity|score")   # columns of a recorded sweep to plot
TABLES = ("course_classification", "course_translation", "course_language_models")


# ----------------------------------------------------------------------------- results
def numbers(values: dict[str, Any]) -> dict[str, float | int | None]:
    """The numeric entries of a metrics dict (null where not finite); nested tables (per class, confusion) left out."""
    out: dict[str, float | int | None] = {}
    for key, value in values.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[key] = value if math.isfinite(value) else None
    return out


def task_of(record: dict[str, Any]) -> str:
    """"translate" (Multi30k), "classify" (a file that reports an accuracy), else "language_model"."""
    metrics = record.get("metrics", {})
    if record.get("dataset") == "multi30k":
        return "translate"
    if any(key in metrics for key in ("accuracy", "val_accuracy", "macro_f1")):
        return "classify"
    return "language_model"


def table_members(records: dict[str, dict[str, Any]]) -> dict[str, list[str]]:
    """file id -> the README tables (course_report's blocks) that show it."""
    members: dict[str, list[str]] = {}
    shown = {"course_classification": course_report.classification_rows(records)[0],
             "course_translation": course_report.translation_rows(records),
             "course_language_models": [row[kind] for row in course_report.language_model_rows(records)
                                        for kind in ("train", "eval")]}
    for table, rows in shown.items():
        for record in rows:
            members.setdefault(record["_path"], []).append(table)
    return members


def result_row(record: dict[str, Any], records: dict[str, dict[str, Any]], tables: list[str]) -> dict[str, Any]:
    training = course_report.training_record(record, records)
    return {"id": record["_path"], "stage": record.get("stage"), "stage_number": course_report.stage_number(record),
            "task": task_of(record), "model": record.get("model"),
            "model_name": course_report.model_name(record, short=True),
            "dataset": record.get("dataset"),
            "dataset_name": course_report.DATASETS.get(str(record.get("dataset")), record.get("dataset")),
            "split": record.get("split"), "metrics": numbers(record["metrics"]),
            "params": record.get("params") if isinstance(record.get("params"), int) else None,
            "train_seconds": training.get("train_seconds"), "eval_seconds": record.get("eval_seconds"),
            "device": record.get("device"), "hardware": record.get("hardware"), "torch": record.get("torch"),
            "command": record.get("command"), "tables": tables}


def plots(root: Path) -> list[dict[str, Any]]:
    """The PNGs a page may show: {"id" (path relative to root), "stage" (None for docs/images), "name"}."""
    found = []
    for pattern in PLOT_GLOBS:
        for path in sorted(Path(root).glob(pattern)):
            if path.is_file() and inside(root, path) and is_png(path):
                found.append({"id": path.relative_to(root).as_posix(),
                              "stage": path.parts[-3] if pattern.startswith("stage") else None, "name": path.stem})
    return found


def is_png(path: Path) -> bool:
    """A file that starts as a PNG does: only pictures are listed and served, whatever a file is named."""
    try:
        with open(path, "rb") as f:
            return f.read(8) == b"\x89PNG\r\n\x1a\n"
    except OSError:
        return False


def results(root: str | Path) -> dict[str, Any]:
    """{"rows": one per results file (course_report's order), "runs": each stage's quick / default / GPU command
    with its time and score (stageN/results/overview.json; none, and a note, while a benched stage lacks its file,
    as course_report has it), "plots": [...], "notes": [what could not be read]}. A results file that is not valid
    JSON is a UserError, as in course_report."""
    root = Path(root)
    records = course_report.load_records(root)
    members = table_members(records)
    rows = [result_row(record, records, members.get(record["_path"], []))
            for record in sorted(records.values(), key=course_report.order)]
    notes = []
    try:
        overviews = course_report.load_overviews(root)
    except UserError as err:        # a stage not benched yet: its rows are missing, the rest still shown
        overviews, notes = [], [str(err)]
    runs = [{"stage": overview["stage"], **row, "overview": overview["_path"]}
            for overview in overviews for row in overview["rows"]]
    return {"rows": rows, "runs": runs, "plots": plots(root), "notes": notes}


def plot_file(root: str | Path, plot_id: str) -> Path:
    """The file of a plot listed by results() or sweeps(), else a UserError (nothing else is served)."""
    root = Path(root)
    listed = {p["id"] for p in plots(root)} | {s["plot"] for s in sweeps(root) if s.get("plot")}
    if plot_id not in listed or not inside(root, root / plot_id) or not is_png(root / plot_id):
        raise UserError(f"no plot {plot_id!r}; the plots are those listed by /api/results and /api/sweeps")
    return root / plot_id


# ----------------------------------------------------------------------------- sweeps
def value_of(text: Any) -> Any:
    """A grid value as the page plots it: a number when it reads as one ("1e-3" -> 0.001), else the text."""
    try:
        number = float(text)
    except (TypeError, ValueError):
        return text
    return number if math.isfinite(number) else text


def relative(path: str, root: Path) -> str:
    try:
        return Path(path).resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return path


def is_sweep(data: Any) -> bool:
    """A results.json of scripts/sweep.py: {"script", "metric", "mode", "fixed", "rows": [{"setting", "seed",
    "score", "run"}]}."""
    return (isinstance(data, dict) and isinstance(data.get("script"), str) and isinstance(data.get("metric"), str)
            and isinstance(data.get("rows"), list) and bool(data["rows"]) and all(
                isinstance(r, dict) and isinstance(r.get("setting"), dict) and isinstance(r.get("score"), (int, float))
                and set(r["setting"]) == set(data["rows"][0].get("setting", {})) for r in data["rows"]))


def sweep_entry(path: Path, data: dict[str, Any], root: Path) -> dict[str, Any]:
    metric, mode = data["metric"], data.get("mode", "min")
    params = list(dict.fromkeys(k for row in data["rows"] for k in row["setting"]))
    rows = [{**{k: value_of(row["setting"].get(k)) for k in params}, "seed": row.get("seed"), metric: row["score"],
             "run": relative(str(row.get("run", "")), root)} for row in data["rows"]]
    grid = {k: [] for k in params}
    summary = [{**{k: value_of(v) for k, v in s["setting"].items()}, **{k: s[k] for k in ("mean", "std", "min", "max",
                                                                                          "seeds")}}
               for s in sweep.summarise(data["rows"], grid, metric, mode if mode in ("min", "max") else "min")]
    png = path.parent / "sweep.png"
    stage = next((part for part in Path(data["script"]).parts if part.startswith("stage")), None)
    return {"id": path.parent.relative_to(root).as_posix(), "kind": "sweep", "stage": stage, "script": data["script"],
            "metric": metric, "mode": mode, "fixed": data.get("fixed", []), "params": params, "metrics": [metric],
            "rows": rows, "summary": summary,
            "plot": png.relative_to(root).as_posix() if png.is_file() else None}


def recorded_entries(path: Path, data: Any, root: Path) -> list[dict[str, Any]]:
    """A learning-rate sweep a stage recorded in its results (rows or runs, each with a numeric "lr" and scores)."""
    if not isinstance(data, dict):
        return []
    out = []
    for key in ("rows", "runs"):
        rows = data.get(key)
        if not isinstance(rows, list) or len(rows) < 2 or not all(
                isinstance(r, dict) and isinstance(r.get("lr"), (int, float)) for r in rows):
            continue
        metrics = [k for k in dict.fromkeys(k for r in rows for k in r)
                   if METRIC_WORDS.search(k) and all(isinstance(r.get(k), (int, float)) for r in rows)]
        if not metrics:
            continue
        out.append({"id": path.relative_to(root).as_posix() + (f"#{key}" if key != "rows" else ""),
                    "kind": "recorded", "stage": path.parts[-3], "script": None, "metric": metrics[0],
                    "mode": "min" if re.search("loss|ppl|perplexity", metrics[0]) else "max",
                    "note": data.get("what") or data.get("note"), "params": ["lr"], "metrics": metrics,
                    "rows": [{"lr": r["lr"], **{m: r[m] for m in metrics},
                              "command": r.get("command") or r.get("train_command")} for r in rows],
                    "summary": [], "plot": None, "hardware": data.get("hardware")})
    return out


def sweeps(root: str | Path) -> list[dict[str, Any]]:
    """Every sweep found, as rows {param: value, ..., metric: score, "seed", "run"} for a plot of the score against a
    parameter: scripts/sweep.py's outputs ("kind": "sweep", with "summary": mean/std/min/max over seeds per setting,
    best first, and "plot": its sweep.png) and the learning-rate sweeps in stageN/results ("kind": "recorded")."""
    root = Path(root)
    out = []
    seen: set[Path] = set()
    for pattern in SWEEP_GLOBS:
        for path in sorted(root.glob(pattern)):
            if path in seen:
                continue
            seen.add(path)
            try:
                data = read_json(path, "sweep results")
            except UserError:       # a run's own results.json or a half-written file: not a sweep to show
                continue
            if is_sweep(data):
                out.append(sweep_entry(path, data, root))
    for path in sorted(root.glob(RECORDED_SWEEPS)):
        out += recorded_entries(path, read_json(path, "results file"), root)
    return out
