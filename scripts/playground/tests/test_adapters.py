"""The classifier and translator adapters (scripts/playground/classify.py, translate.py) on the tiny course."""
from scripts.playground.tests.tiny_models import EXPECTED


def test_the_tiny_course_holds_every_model(tiny_course):
    missing = [name for name in EXPECTED if not (tiny_course / name).is_file()]
    assert not missing
    for stage in ("stage1_mlp", "stage2_rnn_lstm", "stage3_attention_seq2seq", "stage4_transformer", "stage5_gpt"):
        runs = list((tiny_course / stage / "runs").glob("*/history.json"))
        assert runs, stage
    assert (tiny_course / "stage5_gpt" / "runs" / "gpt_shakespeare_char" / "last.pt").is_file()
