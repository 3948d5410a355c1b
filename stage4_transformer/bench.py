"""Stage 4 benchmark: every number in the stage README, from default settings, on this machine.

    python stage4_transformer/bench.py                     # all parts
    python stage4_transformer/bench.py --parts quick       # the quick preset end to end, timed (a few minutes)
    python stage4_transformer/bench.py --parts main        # the Transformer with the default settings: train, evaluate
    python stage4_transformer/bench.py --parts main --num_threads 1   # as in the README's stage 3 comparison (beside a
                                                           # second run, one core each: about 32 min of training, 19
                                                           # epochs in bf16 on a 2-core CPU with native bf16)
    python stage4_transformer/bench.py --tables_only       # rebuild the README tables from results/

quick:    `train.py --preset quick`, then `evaluate.py` on the model it wrote, timed together (wall clock);
          writes results/quick.json with a few translations.
main:     `train.py` with no flags, then `evaluate.py` on test_2016_flickr (with and without the cache).
speed:    training target tokens/s of the scratch model and of the nn.Transformer model, same shape,
          same batches, measured one after the other in one run.
heatmaps: `translate.py --heatmap` on one sentence (every decoder layer and head).
classify: `train_classifier.py` on IMDb (AG News has no reference training split to publish results of).
Each writes JSON files into stage4_transformer/results/; every run (and --tables_only) also rewrites
results/overview.json (the quick, default and GPU runs: command, minutes, test BLEU, hardware) and the README tables.
The data must be the course's reference copies (checked against their sha256 before anything runs): a bench
publishes results. Your own data is train.py's.
"""
import functools
import os
import shutil
import time
from operator import itemgetter
from pathlib import Path
from typing import Sequence

import torch

from scripts.checks import THREADS
from scripts.classification_data import IMDB_SHA256
from scripts.common import (REPO_ROOT, ArgParser, UserError, amp_name, check_reference_data, command_line, hardware,
                            path_arg, read_json, run_main, write_json)
from scripts.report import hardware_label, markdown_table, run_script, update_file
from scripts.report import short_paths as report_short_paths
from scripts.translation_data import MULTI30K_FILES, MULTI30K_SHA256, load_pairs
from stage4_transformer.data.batches import encode_pairs, token_batches
from stage4_transformer.data.subword import SubwordVocab
from stage4_transformer.models.transformer import Transformer, TransformerConfig
from stage4_transformer.train import batch_loss, resolve_args, target_pieces
from stage4_transformer.train import build_parser as train_parser
from stage4_transformer.translator import load_model, translate_sentences

STAGE_DIR = Path(__file__).resolve().parent
RESULTS = STAGE_DIR / "results"
STAGE3_RESULTS = REPO_ROOT / "stage3_attention_seq2seq" / "results"
PARTS = ("quick", "main", "speed", "heatmaps", "classify")
QUICK_COMMAND = "python stage4_transformer/train.py --preset quick"
# the data the parts read must be the shared reference copies (sha256 of the gz bytes, as the downloads are checked)
MULTI30K_PINS = {f"{MULTI30K_FILES[split]}.{lang}.gz": MULTI30K_SHA256[f"{MULTI30K_FILES[split]}.{lang}.gz"]
                 for split in ("train", "valid", "test") for lang in ("en", "fr")}
# translated by the quick model after its run (beam 5): short sentences like the training captions
QUICK_SENTENCES = ("A man is riding a bicycle down the street.", "Two dogs are playing in the snow.",
                   "A little girl is eating an ice cream.", "A woman in a red dress is singing.",
                   "Three men are sitting at a table in a restaurant.")
HEATMAP_SENTENCE = "A young woman in a red dress is singing into a microphone."
ALPHAS = ("0.6", "1.0", "1.4")   # length-penalty exponents tried on the validation set


run = functools.partial(run_script, STAGE_DIR)   # a failed program's own line is the only one


short_paths = functools.partial(report_short_paths, stage="stage4_transformer")


def choose_alpha(checkpoint: Path, run_dir: Path, extra: list[str]) -> str:
    """The beam's length penalty, chosen on the validation set (never on test): the best beam-5 BLEU wins."""
    scores = {}
    for alpha in ALPHAS:
        out = run_dir / f"valid_alpha_{alpha}"
        run("evaluate.py", "--checkpoint", str(checkpoint), "--split", "valid", "--alpha", alpha, "--out_dir",
            str(out), *extra)
        scores[alpha] = read_json(out / "metrics.json")["metrics"]["bleu_beam"]
    best = max(ALPHAS, key=lambda a: scores[a])
    write_json(RESULTS / "main_alpha.json", {"split": "valid", "beam_size": 5, "val_bleu_beam": scores,
                                             "chosen": best})
    return best


def quick_run(extra: list[str]) -> None:
    """The quick preset as a learner runs it (its own checkpoint and run folder), then evaluate.py's default scoring
    of that model; the wall clock of both processes, data loading and start-up included."""
    checkpoint = STAGE_DIR / "checkpoints" / "best_transformer_quick.pt"
    run_dir, eval_dir = STAGE_DIR / "runs" / "transformer_scratch_multi30k_quick", STAGE_DIR / "runs" / "eval_quick"
    load_before = os.getloadavg()[0]    # other programs running at the same time stretch the wall clock
    tick = time.time()
    run("train.py", "--preset", "quick", *extra)
    train_wall = time.time() - tick
    run("evaluate.py", "--checkpoint", str(checkpoint), "--out_dir", str(eval_dir), *extra)
    wall = time.time() - tick
    train, test = read_json(run_dir / "metrics.json"), read_json(eval_dir / "metrics.json")
    model, vocab, _ = load_model(checkpoint, torch.device("cpu"))
    french = translate_sentences(model, vocab, QUICK_SENTENCES, torch.device("cpu"), beam_size=5)
    write_json(RESULTS / "quick.json", {
        "command": QUICK_COMMAND, "eval_command": "python stage4_transformer/evaluate.py",
        "bench_command": short_paths(command_line()), "wall_seconds": round(wall, 1),
        "train_wall_seconds": round(train_wall, 1), "eval_wall_seconds": round(wall - train_wall, 1),
        "load_average_1min": {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2),
                              "cores": os.cpu_count()},
        "test_bleu_beam": test["metrics"]["bleu_beam"], "test_bleu_greedy": test["metrics"]["bleu_greedy"],
        "test_chrf_beam": test["metrics"]["chrf_beam"], "beam_size": test["metrics"]["beam_size"],
        "alpha": test["metrics"]["alpha"], "bleu_signature": test["metrics"]["bleu_signature"],
        "val_bleu_greedy": train["metrics"]["val_bleu_greedy"], "epochs": train["metrics"]["epochs_run"],
        "params": train["params"], "train_tgt_tokens_per_s": train["metrics"]["train_tgt_tokens_per_s"],
        "hardware": hardware_label(train["hardware"], train.get("amp")), "torch": train["torch"],
        "translations": [{"en": en, "fr": fr} for en, fr in zip(QUICK_SENTENCES, french)]})


def overview() -> dict:
    """results/overview.json: the quick preset, the default run and the GPU run, each with its command, minutes,
    test BLEU and hardware, read from the results files named in "source" (None where a run was not measured)."""
    rows = []
    if (RESULTS / "quick.json").is_file():
        quick = read_json(RESULTS / "quick.json")
        rows.append({"run": "quick", "command": quick["command"], "minutes": round(quick["wall_seconds"] / 60, 1),
                     "score": f"test BLEU {quick['test_bleu_beam']:.2f} (beam {quick['beam_size']}; greedy "
                              f"{quick['test_bleu_greedy']:.2f})",
                     "hardware": quick["hardware"], "source": "results/quick.json"})
    if (RESULTS / "main_test.json").is_file():
        train, test = read_json(RESULTS / "main_train.json"), read_json(RESULTS / "main_test.json")
        metrics = test["metrics"]
        rows.append({"run": "default", "command": "python stage4_transformer/train.py",
                     "minutes": round(train["train_seconds"] / 60, 1),
                     "score": f"test BLEU {metrics['bleu_beam']:.2f} (beam {metrics['beam_size']}, alpha "
                              f"{metrics['alpha']:g}; greedy {metrics['bleu_greedy']:.2f})",
                     "hardware": hardware_label(train["hardware"], train.get("amp")),
                     "source": "results/main_train.json, results/main_test.json"})
    rows.append({"run": "gpu", "command": "python stage4_transformer/train.py --device cuda", "minutes": None,
                 "score": "not measured", "hardware": None, "source": None})
    return {"stage": "stage4_transformer", "rows": rows}


def main_run(extra: list[str]) -> None:
    run_dir, checkpoint = STAGE_DIR / "runs" / "bench_main", STAGE_DIR / "checkpoints" / "bench_main.pt"
    run("train.py", "--out_dir", str(run_dir), "--checkpoint", str(checkpoint), *extra)
    RESULTS.mkdir(exist_ok=True)
    alpha = choose_alpha(checkpoint, run_dir, extra)
    run("evaluate.py", "--checkpoint", str(checkpoint), "--alpha", alpha, "--out_dir", str(run_dir / "eval"), *extra)
    run("evaluate.py", "--checkpoint", str(checkpoint), "--alpha", alpha, "--out_dir", str(run_dir / "eval_no_cache"),
        "--no-kv_cache", *extra)
    for source, name in (("metrics.json", "main_train.json"), ("history.json", "main_history.json"),
                         ("curves.png", "main_curves.png"), ("eval/metrics.json", "main_test.json"),
                         ("eval/translations.txt", "main_translations.txt"),
                         ("eval_no_cache/metrics.json", "main_test_no_cache.json")):
        shutil.copy(run_dir / source, RESULTS / name)


def training_speed(config: TransformerConfig, batches: list, steps: int, amp: bool) -> float:
    """Target tokens per second over `steps` training steps (after 3 warm-up steps), as train.py runs them."""
    torch.manual_seed(0)
    model = Transformer(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    tokens, start = 0, 0.0
    for i, batch in enumerate(batches[: steps + 3]):
        if i == 3:
            tokens, start = 0, time.perf_counter()
        loss = batch_loss(model, batch.src, batch.tgt_in, batch.tgt_out, torch.device("cpu"), amp, 0.1)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        tokens += batch.target_tokens
    return tokens / (time.perf_counter() - start)


def speed(data_dir: str | None, steps: int = 40) -> None:
    """Scratch against nn.Transformer (and the scratch model with F.scaled_dot_product_attention, or with
    fast dropout), one run, with train.py's default vocabulary and softmax."""
    defaults = resolve_args(train_parser().parse_args([]))
    pairs = load_pairs("multi30k", "train", data_dir)
    vocab = SubwordVocab.train((t for pair in pairs for t in pair), defaults.vocab_size,
                               split_punctuation=defaults.split_punctuation)
    examples = encode_pairs(pairs, vocab, defaults.max_len)
    batches = list(token_batches(examples, defaults.max_tokens, True))
    output_ids = target_pieces(examples)
    rows = []
    for name, impl, sdpa, fast in (("scratch", "scratch", False, False), ("scratch + F.sdpa", "scratch", True, False),
                                   ("scratch + fast dropout", "scratch", False, True),
                                   ("nn.Transformer", "torch", False, False)):
        config = TransformerConfig(src_vocab_size=len(vocab), tgt_vocab_size=len(vocab), d_model=defaults.d_model,
                                   n_heads=defaults.n_heads, n_encoder_layers=defaults.encoder_layers,
                                   n_decoder_layers=defaults.decoder_layers, d_ff=defaults.d_ff,
                                   dropout=defaults.dropout, max_len=defaults.max_len + 2,
                                   norm_first=defaults.norm_first, positional=defaults.positional,
                                   share_embeddings=True, impl=impl, use_sdpa=sdpa, fast_dropout=fast,
                                   output_ids=output_ids)
        rows.append({"model": name, "tokens_per_s": training_speed(config, batches, steps, defaults.amp)})
    reference = rows[-1]["tokens_per_s"]
    for row in rows:
        row["ratio"] = row["tokens_per_s"] / reference
    write_json(RESULTS / "speed.json", {"rows": rows, "steps": steps, "max_tokens": defaults.max_tokens,
                                        "vocab": len(vocab), "softmax_columns": len(output_ids),
                                        "precision": amp_name(torch.device("cpu"), defaults.amp),
                                        "hardware": hardware("cpu"), "torch": torch.__version__,
                                        "command": "python stage4_transformer/bench.py --parts speed"})


def classify(extra: list[str]) -> None:
    """IMDb only: AG News has no reference training split (the shared copy holds its test split), so the bench
    cannot publish an AG News result; train_classifier.py --dataset ag_news trains on a copy of your own."""
    run_dir = STAGE_DIR / "runs" / "bench_classify_imdb"
    run("train_classifier.py", "--dataset", "imdb", "--out_dir", str(run_dir), "--checkpoint",
        str(STAGE_DIR / "checkpoints" / "bench_classifier_imdb.pt"), *extra)
    shutil.copy(run_dir / "metrics.json", RESULTS / "classify_imdb_test.json")


# ----------------------------------------------------------------------------- tables
def stage3_row() -> dict | None:
    if not (STAGE3_RESULTS / "main_test.json").is_file():
        return None
    train, test = read_json(STAGE3_RESULTS / "main_train.json"), read_json(STAGE3_RESULTS / "main_test.json")
    return {"model": "stage 3: GRU + Bahdanau attention", "bleu_beam": test["metrics"]["bleu_beam"],
            "bleu_greedy": test["metrics"]["bleu_greedy"], "chrf": test["metrics"]["chrf_beam"],
            "params": train["params"], "minutes": train["train_seconds"] / 60,
            "tokens_per_s": train["metrics"]["train_tgt_tokens_per_s"],
            "beam_sent_s": test["metrics"]["sentences_per_s_beam"], "hardware": train["hardware"]}


def stage4_row() -> dict:
    train, test = read_json(RESULTS / "main_train.json"), read_json(RESULTS / "main_test.json")
    return {"model": "stage 4: Transformer (scratch)", "bleu_beam": test["metrics"]["bleu_beam"],
            "bleu_greedy": test["metrics"]["bleu_greedy"], "chrf": test["metrics"]["chrf_beam"],
            "params": train["params"], "minutes": train["train_seconds"] / 60,
            "tokens_per_s": train["metrics"]["train_tgt_tokens_per_s"],
            "beam_sent_s": test["metrics"]["sentences_per_s_beam"],
            "hardware": hardware_label(train["hardware"], train.get("amp")),
            "command": short_paths(train["command"]), "signature": test["metrics"]["bleu_signature"],
            "alpha": f"{test['metrics']['alpha']:g}"}


MT_COLUMNS = [(title, itemgetter(key)) for key, title in (
    ("model", "model"), ("bleu_beam", "test BLEU (beam 5)"), ("bleu_greedy", "test BLEU (greedy)"),
    ("chrf", "chrF (beam)"), ("params", "parameters"), ("minutes", "train min"),
    ("tokens_per_s", "target tokens/s"), ("beam_sent_s", "beam sentences/s"), ("hardware", "hardware"))]

# results/vs_stage3.json: stage 3 and stage 4 trained side by side on one machine (two runs at once, 1 thread each)
VS_COLUMNS = [(title, itemgetter(key)) for key, title in (
    ("model", "model"), ("seed", "seed"), ("train_seconds", "train s"), ("epochs", "epochs"),
    ("val_bleu_greedy", "val BLEU (greedy)"), ("test_bleu_beam5", "test BLEU (beam 5)"),
    ("test_bleu_greedy", "test BLEU (greedy)"), ("alpha", "alpha"), ("amp", "precision"),
    ("hardware", "hardware"))]


CLASSIFY_COLUMNS = [
    ("data", itemgetter("dataset")),
    ("test accuracy", lambda r: f"{100 * r['metrics']['accuracy']:.2f}%"),
    ("test macro-F1", lambda r: f"{100 * r['metrics']['macro_f1']:.2f}"),
    ("train time", lambda r: f"{r['train_seconds']:.0f} s"),
    ("latency, batch 1", lambda r: f"{r['metrics']['latency_ms_bs1']:.2f} ms"),
    ("parameters", itemgetter("params")), ("hardware", itemgetter("hardware"))]


def readme_blocks() -> dict[Path, dict[str, str]]:
    """Every generated block of the stage README, from whatever results/ holds (the top README's course-wide
    tables are made from the same files by `python scripts/course_report.py`)."""
    stage: dict[str, str] = {}
    summary = overview()
    stage["stage4_overview"] = markdown_table(summary["rows"], [
        ("run", itemgetter("run")), ("command", lambda r: f"`{r['command']}`"),
        ("minutes", lambda r: "—" if r["minutes"] is None else f"{r['minutes']:.1f}"), ("score", itemgetter("score")),
        ("hardware", lambda r: r["hardware"] or "—")]) + (
        "\n\nquick: the wall clock of `train.py --preset quick` and then `evaluate.py` (data loading, the BPE "
        "vocabulary and the scoring included), measured by `python stage4_transformer/bench.py --parts quick`; "
        "default: the training time of `bench.py --parts main`; BLEU on test_2016_flickr (1,000 sentences). "
        "Made from results/overview.json.")
    if (RESULTS / "quick.json").is_file():
        quick = read_json(RESULTS / "quick.json")
        stage["stage4_quick"] = markdown_table(quick["translations"], [
            ("English", itemgetter("en")), ("French (quick model, beam 5)", itemgetter("fr"))]) + (
            f"\n\nThe model of `{quick['command']}` ({quick['params']:,} parameters, {quick['epochs']} epochs): "
            f"test BLEU {quick['test_bleu_beam']:.2f} with beam {quick['beam_size']}, {quick['test_bleu_greedy']:.2f} "
            f"greedy; {quick['wall_seconds'] / 60:.1f} min for training and scoring on {quick['hardware']}"
            + (f" (1-minute load average {load['before']:g} before the run and {load['after']:g} after it, on "
               f"{load['cores']} cores)." if (load := quick.get("load_average_1min")) else "."))
    if (RESULTS / "main_test.json").is_file():
        rows = [r for r in (stage3_row(), stage4_row()) if r]
        note = (f"\n\nCommand: `{rows[-1]['command']}`, then `python evaluate.py --checkpoint <checkpoint> "
                f"--alpha {rows[-1]['alpha']}` (beam 5; the length penalty alpha chosen on the validation set); "
                f"sacreBLEU signature `{rows[-1]['signature']}`. Stage 3 counts words, stage 4 BPE pieces; "
                "each row's own hardware (same-machine comparison: the table below).")
        stage["stage4_translation"] = markdown_table(rows, MT_COLUMNS) + note
        cached = read_json(RESULTS / "main_test.json")["metrics"]
        uncached = read_json(RESULTS / "main_test_no_cache.json")["metrics"]
        stage["stage4_cache"] = markdown_table([
            {"decoding": name, "cached": cached[key], "uncached": uncached[key], "same_bleu": "yes" if cached[bleu] ==
             uncached[bleu] else "no", "speedup": cached[key] / uncached[key]}
            for name, key, bleu in (("greedy", "sentences_per_s_greedy", "bleu_greedy"),
                                    ("beam 5", "sentences_per_s_beam", "bleu_beam"))],
            [("decoding", itemgetter("decoding")), ("sentences/s with cache", itemgetter("cached")),
             ("without", itemgetter("uncached")), ("same BLEU", itemgetter("same_bleu")),
             ("speed-up", itemgetter("speedup"))])
    if (RESULTS / "vs_stage3.json").is_file():
        data = read_json(RESULTS / "vs_stage3.json")
        stage["stage4_vs_stage3"] = (markdown_table(data["rows"], VS_COLUMNS) +
                                     f"\n\nHardware: {data['hardware']}. Commands: {data['commands']}.")
    if (RESULTS / "speed.json").is_file():
        data = read_json(RESULTS / "speed.json")
        stage["stage4_speed"] = (markdown_table(data["rows"], [
            ("model", itemgetter("model")), ("training target tokens/s", itemgetter("tokens_per_s")),
            ("against nn.Transformer", itemgetter("ratio"))]) +
            f"\n\nCommand: `{data['command']}` ({data['steps']} steps each, batches of {data['max_tokens']} "
            f"target pieces, a vocabulary of {data['vocab']:,} pieces with the softmax over "
            f"{data['softmax_columns']:,} of them, {data['precision']}); hardware: {data['hardware']}.")
    rows = [read_json(p) for p in sorted(RESULTS.glob("classify_*_test.json"))]
    if rows:
        note = "\n\nCommand: " + ", ".join(f"`{short_paths(r['command'])}`" for r in rows) + "."
        stage["stage4_classify"] = markdown_table(rows, CLASSIFY_COLUMNS) + note
    return {STAGE_DIR / "README.md": stage}


def main(argv: Sequence[str] | None = None) -> int:
    p = ArgParser(description="Stage 4 benchmark: train and evaluate, then rebuild the README tables.")
    p.add_argument("--parts", nargs="+", default=None, choices=PARTS, help="what to run (default: all)")
    p.add_argument("--tables_only", action="store_true", help="only rebuild the README tables from results/")
    p.add_argument("--data_dir", type=path_arg, default=None,
                   help="folder holding the data sets (default: $MY_LLM_DATA); they must be the reference copies, "
                        "checked against their sha256 before anything runs (your own data: train.py)")
    p.add_argument("--num_threads", type=THREADS, default=None,
                   help="CPU threads for the train and evaluate runs (default 0: torch's default, one per core)")
    args = p.parse_args(argv)
    if args.tables_only and (args.parts is not None or args.data_dir is not None or args.num_threads is not None):
        raise UserError("--tables_only runs nothing: drop --parts, --data_dir and --num_threads")
    args.parts = args.parts or list(PARTS)
    if args.data_dir is not None and not Path(args.data_dir).is_dir():    # checked here, before a program runs
        raise UserError(f"--data_dir {args.data_dir} is not a folder; pass the folder that holds the data sets")
    if not args.tables_only and {"quick", "main", "speed"} & set(args.parts):
        check_reference_data("multi30k", MULTI30K_PINS, args.data_dir)
    if not args.tables_only and "classify" in args.parts:
        check_reference_data("imdb", IMDB_SHA256, args.data_dir, download_checked=False)
    extra = ["--data_dir", args.data_dir] if args.data_dir else []
    if args.num_threads:
        extra += ["--num_threads", str(args.num_threads)]
    if not args.tables_only:
        RESULTS.mkdir(exist_ok=True)
        if "quick" in args.parts:
            quick_run(extra)
        if "main" in args.parts:
            main_run(extra)
        if "speed" in args.parts:
            speed(args.data_dir)
        if "heatmaps" in args.parts:
            run("translate.py", "--checkpoint", str(STAGE_DIR / "checkpoints" / "bench_main.pt"), HEATMAP_SENTENCE,
                "--heatmap", str(RESULTS / "heatmap_layers_heads.png"), *extra)
        if "classify" in args.parts:
            classify(extra)
    write_json(RESULTS / "overview.json", overview())
    for readme, blocks in readme_blocks().items():
        if readme.is_file():
            print(readme.relative_to(REPO_ROOT), "updated" if update_file(readme, blocks) else "unchanged")
    return 0


if __name__ == "__main__":
    run_main(main)
