"""The OpenAI-compatible endpoints, driven by the official `openai` Python client pointed at the local server."""
from __future__ import annotations

import openai
import pytest
from openai import OpenAI

from scripts.playground.tests.live import GPT, LSTM, MULTI, serve



@pytest.fixture(scope="module")
def client(tiny_course):
    with serve(tiny_course) as (url, _):
        yield OpenAI(base_url=f"{url}/v1", api_key="local", max_retries=0, timeout=60)


def test_models_lists_the_language_models(client):
    ids = {m.id for m in client.models.list()}
    assert {GPT, LSTM, MULTI} <= ids
    assert not any("classifier" in i or "stage1" in i for i in ids)


@pytest.mark.parametrize("model", [GPT, LSTM])
def test_completion_is_the_models_own_text(client, model):
    answer = client.completions.create(model=model, prompt="ROMEO:", max_tokens=30, temperature=0.8, seed=5)
    choice = answer.choices[0]
    assert answer.object == "text_completion" and answer.model == model
    assert isinstance(choice.text, str) and choice.text and choice.finish_reason == "length"
    assert answer.usage.completion_tokens == 30 and answer.usage.prompt_tokens == 6
    again = client.completions.create(model=model, prompt="ROMEO:", max_tokens=30, temperature=0.8, seed=5)
    assert again.choices[0].text == choice.text                       # a seed makes it repeatable


def test_no_seed_samples_anew_and_one_model_can_be_asked_for(client):
    texts = {client.completions.create(model=GPT, prompt="ROMEO:", max_tokens=40, temperature=1.0).choices[0].text
             for _ in range(3)}
    assert len(texts) > 1
    assert client.models.retrieve(GPT).id == GPT
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-4o")


def test_streamed_completion_joins_to_the_same_text(client):
    whole = client.completions.create(model=GPT, prompt="KING:", max_tokens=80, temperature=0.7, seed=2)
    parts = list(client.completions.create(model=GPT, prompt="KING:", max_tokens=80, temperature=0.7, seed=2,
                                           stream=True))
    assert len(parts) >= 2
    assert "".join(p.choices[0].text for p in parts) == whole.choices[0].text
    assert parts[-1].choices[0].finish_reason == "length"


def test_a_stop_string_ends_the_text_before_it(client):
    whole = client.completions.create(model=GPT, prompt="A", max_tokens=120, temperature=0, seed=0)
    text = whole.choices[0].text
    assert len(text) == 120                      # a char model: one character a token
    stop = text[60:62]                           # a string the greedy text holds (its first place may be earlier)
    cut = client.completions.create(model=GPT, prompt="A", max_tokens=120, temperature=0, stop=[stop])
    assert cut.choices[0].finish_reason == "stop" and cut.choices[0].text == text[: text.index(stop)]
    streamed = client.completions.create(model=GPT, prompt="A", max_tokens=120, temperature=0, stop=[stop],
                                         stream=True)
    assert "".join(p.choices[0].text for p in streamed) == cut.choices[0].text


def test_chat_with_the_multi_task_model_translates(client, tiny_course):
    answer = client.chat.completions.create(model=MULTI, messages=[{"role": "user", "content": "A dog runs."}],
                                            max_tokens=30)
    message = answer.choices[0].message
    assert answer.object == "chat.completion" and message.role == "assistant" and isinstance(message.content, str)
    # the same greedy answer the translate tab gives (stage 5's own task prompt and decoding)
    import torch

    from scripts.playground.translate import load_translator
    translator = load_translator(tiny_course / MULTI, "stage5_gpt", "gpt", torch.device("cpu"))
    same = translator.translate("A dog runs.", 1, 1.0)
    assert message.content.strip() == same["translation"].strip()[: len(message.content.strip())]
    chunks = list(client.chat.completions.create(model=MULTI, messages=[{"role": "user", "content": "A dog runs."}],
                                                 max_tokens=30, stream=True))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == message.content


def test_chat_task_named_by_the_system_message(client):
    answer = client.chat.completions.create(model=MULTI, max_tokens=5, messages=[
        {"role": "system", "content": "imdb"}, {"role": "user", "content": "What a wonderful film."}])
    assert answer.choices[0].message.content.strip()
    with pytest.raises(openai.BadRequestError, match="unknown task"):
        client.chat.completions.create(model=MULTI, messages=[{"role": "system", "content": "poetry"},
                                                              {"role": "user", "content": "hi"}])


def test_errors_are_the_clients_own_exceptions(client):
    with pytest.raises(openai.NotFoundError, match="not found"):
        client.completions.create(model="gpt-4o", prompt="hi")
    with pytest.raises(openai.BadRequestError, match="multi-task"):
        client.chat.completions.create(model=GPT, messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.BadRequestError, match="max_tokens"):
        client.completions.create(model=GPT, prompt="hi", max_tokens=10**6)
    with pytest.raises(openai.BadRequestError, match="n"):
        client.completions.create(model=GPT, prompt="hi", n=3)
    with pytest.raises(openai.BadRequestError, match="empty"):
        client.completions.create(model=GPT, prompt="")
    with pytest.raises(openai.BadRequestError, match="user message"):
        client.chat.completions.create(model=MULTI, messages=[{"role": "system", "content": "translate"}])
    with pytest.raises(openai.BadRequestError, match="echo"):
        client.completions.create(model=GPT, prompt="hi", echo=True)
    with pytest.raises(openai.BadRequestError, match="logprobs"):
        client.completions.create(model=GPT, prompt="hi", logprobs=3)
    assert client.completions.create(model=GPT, prompt="still serving", max_tokens=2).choices[0].text
