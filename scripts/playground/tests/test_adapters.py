"""The classifier and translator adapters (scripts/playground/classify.py, translate.py) on the tiny course: each
model's answers are the stage's own, the attention maps fit the tokens, and every bad input is a one-line
UserError."""
import pytest
import torch

from scripts.common import UserError, load_checkpoint, save_checkpoint
from scripts.playground.classify import MAX_TEXT_CHARS, load_classifier
from scripts.playground.tests.tiny_models import EXPECTED, build_course
from scripts.playground.translate import load_translator

CPU = torch.device("cpu")
POSITIVE, NEGATIVE = "A wonderful, moving film: brilliant and charming.", "An awful, boring film: a dull waste."
SENTENCE = "A dog is running in the park."
# (stage, model, best checkpoint, a run's last.pt): what the catalog lists and the server loads
CLASSIFIERS = [
    ("stage1_mlp", "ngram_mlp", "checkpoints/best_model.pt", "runs/imdb_torch/last.pt"),
    ("stage2_rnn_lstm", "rnn_classifier", "checkpoints/best_classifier_imdb.pt", "runs/classify_imdb/last.pt"),
    ("stage4_transformer", "transformer_classifier", "checkpoints/best_classifier_imdb.pt",
     "runs/classify_imdb/last.pt"),
    ("stage5_gpt", "gpt_classifier", "checkpoints/ft_imdb_full.pt", "runs/ft_imdb_full/last.pt"),
]
TRANSLATORS = [
    ("stage3_attention_seq2seq", "seq2seq_attention", "checkpoints/best_attention_model.pt",
     "runs/bahdanau_multi30k/last.pt"),
    ("stage4_transformer", "transformer_mt", "checkpoints/best_transformer.pt",
     "runs/transformer_scratch_multi30k/last.pt"),
    ("stage5_gpt", "gpt", "checkpoints/ft_multi_full.pt", "runs/ft_multi_full/last.pt"),
]


def one_line_error(call, *needles):
    with pytest.raises(UserError) as info:
        call()
    message = str(info.value)
    assert message and "\n" not in message, message
    for needle in needles:
        assert needle in message, (needle, message)
    return message


def test_the_tiny_course_holds_every_model(tiny_course):
    assert not [name for name in EXPECTED if not (tiny_course / name).is_file()]
    for stage in ("stage1_mlp", "stage2_rnn_lstm", "stage3_attention_seq2seq", "stage4_transformer", "stage5_gpt"):
        assert list((tiny_course / stage / "runs").glob("*/history.json")), stage
        assert list((tiny_course / stage / "runs").glob("*/last.pt")), stage


def test_the_tiny_course_is_built_only_into_a_new_or_empty_folder(tiny_course):
    with pytest.raises(ValueError, match="new or empty folder"):
        build_course(tiny_course)


# ----------------------------------------------------------------------------- classifiers
@pytest.fixture(scope="module")
def classifiers(tiny_course):
    return {stage: load_classifier(tiny_course / stage / best, stage, model, CPU)
            for stage, model, best, _ in CLASSIFIERS}


@pytest.mark.parametrize("stage", [c[0] for c in CLASSIFIERS])
def test_each_classifier_gives_a_label_and_its_softmax(classifiers, stage):
    classifier = classifiers[stage]
    assert classifier.classes == ["negative", "positive"]
    for text in (POSITIVE, NEGATIVE, "ok"):
        result = classifier.classify(text)
        probs = result["probabilities"]
        assert list(probs) == classifier.classes and all(0 <= p <= 1 for p in probs.values())
        assert sum(probs.values()) == pytest.approx(1, abs=1e-5)
        assert result["label"] == max(probs, key=probs.get)


def test_a_text_stage1_finds_no_word_in_is_refused(classifiers):
    one_line_error(lambda: classifiers["stage1_mlp"].classify("... --- ..."), "no words")


@pytest.mark.parametrize("stage", ["stage2_rnn_lstm", "stage4_transformer"])
def test_the_tiny_classifiers_learned_the_sentiment_words(classifiers, stage):
    assert classifiers[stage].classify(POSITIVE)["label"] == "positive"
    assert classifiers[stage].classify(NEGATIVE)["label"] == "negative"


def test_stage1_answers_as_its_evaluate_py(classifiers, tiny_course, cli):
    from stage1_mlp import evaluate

    code, out, err = cli(evaluate.main, ["--checkpoint", tiny_course / "stage1_mlp/checkpoints/best_model.pt",
                                         "--text", POSITIVE, "--num_threads", "1"])
    assert code == 0, err
    result = classifiers["stage1_mlp"].classify(POSITIVE)
    assert out.splitlines()[1] == f"{result['label']}  ({result['probabilities'][result['label']]:.1%})"


def test_stage5_answers_as_its_generate_py(classifiers, tiny_course, cli):
    from stage5_gpt import generate

    code, out, err = cli(generate.main, ["--checkpoint", tiny_course / "stage5_gpt/checkpoints/ft_imdb_full.pt",
                                         "--prompt", NEGATIVE, "--device", "cpu", "--num_threads", "1"])
    assert code == 0, err
    probs = classifiers["stage5_gpt"].classify(NEGATIVE)["probabilities"]
    order = sorted(probs, key=lambda c: -probs[c])
    assert out.strip() == f"{order[0]} ({probs[order[0]]:.1%})  {order[1]} {probs[order[1]]:.1%}"


@pytest.mark.parametrize("stage, model, last", [(c[0], c[1], c[3]) for c in CLASSIFIERS])
def test_a_runs_last_state_classifies_too(tiny_course, stage, model, last):
    result = load_classifier(tiny_course / stage / last, stage, model, CPU).classify(POSITIVE)
    assert sum(result["probabilities"].values()) == pytest.approx(1, abs=1e-5)


@pytest.mark.parametrize("text, needle", [("", "empty"), (" \n\t ", "empty"), ("x" * (MAX_TEXT_CHARS + 1), "5,000")])
def test_classifiers_refuse_empty_and_too_long_texts(classifiers, text, needle):
    for classifier in classifiers.values():
        one_line_error(lambda: classifier.classify(text), needle)


# ----------------------------------------------------------------------------- translators
@pytest.fixture(scope="module")
def translators(tiny_course):
    return {stage: load_translator(tiny_course / stage / best, stage, model, CPU)
            for stage, model, best, _ in TRANSLATORS}


def check_attention(attention, layers, heads):
    assert attention["layers"] == layers and attention["heads"] == heads and len(attention["maps"]) == len(layers)
    assert attention["source"][-1] == attention["target"][-1] == "<eos>"
    for per_head in attention["maps"]:
        assert len(per_head) == heads
        for matrix in per_head:
            assert len(matrix) == len(attention["target"])
            for row in matrix:
                assert len(row) == len(attention["source"]) and min(row) >= 0
                assert sum(row) == pytest.approx(1, abs=2e-3)


@pytest.mark.parametrize("beam", [1, 3])
def test_stage3_translates_as_its_translate_py_with_one_attention_map(translators, tiny_course, cli, beam):
    from stage3_attention_seq2seq import translate

    code, out, err = cli(translate.main, ["--checkpoint", tiny_course / TRANSLATORS[0][0] / TRANSLATORS[0][2],
                                          SENTENCE, "--beam_size", beam, "--num_threads", "1"])
    assert code == 0, err
    result = translators["stage3_attention_seq2seq"].translate(SENTENCE, beam, 1.0)
    assert result["translation"] == out.strip() and result["translation"]
    attention = result["attention"]
    check_attention(attention, ["attention"], 1)
    assert attention["source"] == ["A", "dog", "is", "running", "in", "the", "park", "##.", "<eos>"]


@pytest.mark.parametrize("beam", [1, 3])
def test_stage4_translates_as_its_translate_py_with_every_layer_and_head(translators, tiny_course, cli, beam):
    from stage4_transformer import translate

    code, out, err = cli(translate.main, ["--checkpoint", tiny_course / TRANSLATORS[1][0] / TRANSLATORS[1][2],
                                          SENTENCE, "--beam_size", beam, "--num_threads", "1"])
    assert code == 0, err
    result = translators["stage4_transformer"].translate(SENTENCE, beam, 1.0)
    assert result["translation"] == out.strip() and result["translation"]
    check_attention(result["attention"], ["layer 1", "layer 2"], 4)      # the tiny model: 2 decoder layers, 4 heads
    assert "".join(result["attention"]["source"][:-1]).replace("▁", " ").strip() == SENTENCE


def test_stage5_translates_greedily_as_its_finetune_scoring(translators, tiny_course):
    from stage5_gpt.data import tasks
    from stage5_gpt.finetune import load_finetuned
    from stage5_gpt.generate import task_prompt

    model, tokenizer, info = load_finetuned(tiny_course / TRANSLATORS[2][0] / TRANSLATORS[2][2], CPU)
    model.finetune = info
    prompt = task_prompt(model, tokenizer, "translate", SENTENCE)
    ids = tasks.greedy_decode(model, [prompt], tokenizer.eot_id, lambda n: max(8, 2 * n), 1, CPU, False)[0]
    result = translators["stage5_gpt"].translate(SENTENCE, 1, 1.0)
    assert result == {"translation": tokenizer.decode(ids).strip(), "attention": None}
    one_line_error(lambda: translators["stage5_gpt"].translate(SENTENCE, 2, 1.0), "greedily", "beam 1")


@pytest.mark.parametrize("stage, model, last", [(c[0], c[1], c[3]) for c in TRANSLATORS])
def test_a_runs_last_state_translates_too(tiny_course, stage, model, last):
    assert isinstance(load_translator(tiny_course / stage / last, stage, model, CPU).translate(SENTENCE)["translation"],
                      str)


@pytest.mark.parametrize("text, beam, alpha, needle", [
    ("", 1, 1.0, "empty"), ("  \n ", 1, 1.0, "empty"), ("a " * 501, 1, 1.0, "1,000"),
    (SENTENCE, 0, 1.0, "beam must be"), (SENTENCE, 11, 1.0, "beam must be"), (SENTENCE, 1.5, 1.0, "beam must be"),
    (SENTENCE, 1, 0.0, "alpha"), (SENTENCE, 1, 10.5, "alpha"), (SENTENCE, 1, float("nan"), "alpha"),
])
def test_translators_refuse_bad_input(translators, text, beam, alpha, needle):
    for translator in translators.values():
        one_line_error(lambda: translator.translate(text, beam, alpha), needle)


def test_sentences_longer_than_the_model_reads_are_refused(translators):
    long = "a. " * 300           # 600 words and marks in 900 characters
    one_line_error(lambda: translators["stage3_attention_seq2seq"].translate(long), "at most 200")
    one_line_error(lambda: translators["stage4_transformer"].translate(long), "subword pieces", "at most")
    # stage 5's prompt keeps the text's beginning and end, as finetune.py trained it
    assert isinstance(translators["stage5_gpt"].translate(long)["translation"], str)


# ----------------------------------------------------------------------------- wrong and damaged checkpoints
@pytest.mark.parametrize("load, path, stage, model, needle", [
    (load_classifier, "stage3_attention_seq2seq/checkpoints/best_attention_model.pt", "stage1_mlp", "ngram_mlp",
     "not by stage1_mlp"),
    (load_classifier, "stage4_transformer/checkpoints/best_transformer.pt", "stage4_transformer",
     "transformer_classifier", "'transformer_mt' model"),
    (load_classifier, "stage3_attention_seq2seq/checkpoints/best_attention_model.pt", "stage3_attention_seq2seq",
     "seq2seq_attention", "not a classifier"),
    (load_classifier, "stage5_gpt/checkpoints/gpt_shakespeare_char.pt", "stage5_gpt", "gpt_classifier",
     "not a fine-tuned one"),
    (load_classifier, "stage5_gpt/checkpoints/ft_multi_full.pt", "stage5_gpt", "gpt_classifier", "multi-task"),
    (load_translator, "stage4_transformer/checkpoints/best_classifier_imdb.pt", "stage4_transformer",
     "transformer_mt", "'transformer_classifier' model"),
    (load_translator, "stage2_rnn_lstm/checkpoints/best_classifier_imdb.pt", "stage3_attention_seq2seq",
     "seq2seq_attention", "not by stage3_attention_seq2seq"),
    (load_translator, "stage5_gpt/checkpoints/ft_imdb_full.pt", "stage5_gpt", "gpt", "not to translate"),
    (load_translator, "stage5_gpt/checkpoints/gpt_imdb_bpe.pt", "stage5_gpt", "gpt", "not a fine-tuned one"),
    (load_translator, "stage1_mlp/checkpoints/best_model.pt", "stage1_mlp", "ngram_mlp", "not a translator"),
    (load_translator, "stage3_attention_seq2seq/checkpoints/nothing.pt", "stage3_attention_seq2seq",
     "seq2seq_attention", "does not exist"),
])
def test_a_checkpoint_of_another_stage_or_model_is_refused(tiny_course, load, path, stage, model, needle):
    one_line_error(lambda: load(tiny_course / path, stage, model, CPU), needle)


@pytest.mark.parametrize("load, stage, model, best", [(load_classifier, *c[:3]) for c in CLASSIFIERS]
                         + [(load_translator, *t[:3]) for t in TRANSLATORS])
def test_a_damaged_or_edited_checkpoint_is_refused(tiny_course, tmp_path, load, stage, model, best):
    original = tiny_course / stage / best
    cut = tmp_path / "cut.pt"
    cut.write_bytes(original.read_bytes()[: original.stat().st_size // 2])
    one_line_error(lambda: load(cut, stage, model, CPU), "not a readable checkpoint")
    ckpt = load_checkpoint(original, stage)
    name = next(k for k, v in ckpt["model_state"].items() if v.dim() == 2)
    ckpt["model_state"][name] = ckpt["model_state"][name][:, :-1].clone()     # a weight cut by one column
    edited = tmp_path / "edited.pt"
    save_checkpoint(edited, ckpt)
    one_line_error(lambda: load(edited, stage, model, CPU), "do not fit")


def test_edited_vocabularies_and_class_names_are_refused(tiny_course, tmp_path):
    for stage, key, value, needle in [("stage2_rnn_lstm", "vocab", ["<pad>", "<unk>", "x", "x"], "vocabulary"),
                                      ("stage2_rnn_lstm", "classes", ["only one"], "class names"),
                                      ("stage4_transformer", "vocab", "{not json", "subword vocabulary"),
                                      ("stage4_transformer", "classes", ["a", ""], "class names")]:
        source = tiny_course / stage / "checkpoints/best_classifier_imdb.pt"
        ckpt = load_checkpoint(source, stage)
        ckpt[key] = value
        edited = tmp_path / f"{stage}_{key}.pt"
        save_checkpoint(edited, ckpt)
        model = "rnn_classifier" if stage == "stage2_rnn_lstm" else "transformer_classifier"
        one_line_error(lambda: load_classifier(edited, stage, model, CPU), needle)
