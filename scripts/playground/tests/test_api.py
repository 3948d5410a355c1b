"""The playground's HTTP API on a real server (uvicorn on 127.0.0.1) over a tiny course of every stage's models."""
from __future__ import annotations

import io
import json
import shutil
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest
import torch

from scripts.playground.__main__ import is_loopback, main as playground_main
from scripts.playground.catalog import scan
from scripts.playground.tests.live import GPT, LSTM, MULTI, serve
from scripts.testing import one_error_line



@pytest.fixture(scope="module")
def server(tiny_course):
    with serve(tiny_course) as (url, app):
        with httpx.Client(base_url=url, timeout=60) as client:
            yield client, app


def events_of(response: httpx.Response) -> list[tuple[str, dict]]:
    """(name, data) of each server-sent event in a streamed response."""
    out, name = [], None
    for line in response.iter_lines():
        if line.startswith("event: "):
            name = line[len("event: "):]
        elif line.startswith("data: "):
            out.append((name, json.loads(line[len("data: "):])))
    return out


def generate(client: httpx.Client, **body) -> list[tuple[str, dict]]:
    with client.stream("POST", "/api/generate", json=body) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        return events_of(response)


def text_of(events: list[tuple[str, dict]]) -> str:
    return "".join(data["text"] for name, data in events if name == "token")


def test_models_lists_every_kind_and_never_a_path(server, tiny_course):
    client, _ = server
    body = client.get("/api/models").json()
    tasks = {(m["stage"], t) for m in body["models"] for t in m["tasks"]}
    assert {("stage1_mlp", "classify"), ("stage2_rnn_lstm", "generate"), ("stage2_rnn_lstm", "classify"),
            ("stage3_attention_seq2seq", "translate"), ("stage4_transformer", "translate"),
            ("stage4_transformer", "classify"), ("stage5_gpt", "generate"), ("stage5_gpt", "classify"),
            ("stage5_gpt", "translate")} <= tasks
    assert body["missing"] == []
    assert all(str(tiny_course) not in json.dumps(m) for m in body["models"])
    multi = next(m for m in body["models"] if m["id"] == MULTI)
    assert multi["tasks"] == ["translate", "generate"]


def test_missing_models_name_the_command_and_its_measured_time(tmp_path, tiny_course):
    root = tmp_path / "course"
    shutil.copytree(tiny_course / "stage1_mlp", root / "stage1_mlp")
    (root / "stage5_gpt" / "results").mkdir(parents=True)
    (root / "stage5_gpt" / "results" / "quick.json").write_text(json.dumps({"seconds": 155.4, "hardware": "2 cores"}))
    from scripts.playground.catalog import missing
    gone = {(m["stage"], m["task"]): m for m in missing(root, scan(root))}
    assert ("stage1_mlp", "classify") not in gone
    gpt = gone[("stage5_gpt", "generate")]
    assert gpt["command"] == "python stage5_gpt/train.py --preset quick"
    assert gpt["minutes"] == 2.6 and gpt["hardware"] == "2 cores"
    assert gone[("stage3_attention_seq2seq", "translate")]["minutes"] is None      # not measured here: said so


def test_a_damaged_or_foreign_checkpoint_is_not_listed(tmp_path, tiny_course):
    root = tmp_path / "course"
    shutil.copytree(tiny_course / "stage5_gpt" / "checkpoints", root / "stage5_gpt" / "checkpoints")
    (root / "stage5_gpt" / "checkpoints" / "broken.pt").write_bytes(b"not a checkpoint")
    shutil.copy(tiny_course / "stage1_mlp" / "checkpoints" / "best_model.pt", root / "stage5_gpt" / "checkpoints")
    ids = {e.id for e in scan(root)}
    assert "stage5_gpt/checkpoints/broken.pt" not in ids and "stage5_gpt/checkpoints/best_model.pt" not in ids
    assert GPT in ids


@pytest.mark.parametrize("model", [GPT, LSTM])
def test_streamed_tokens_are_what_the_stages_generate_py_writes(server, tiny_course, model):
    client, _ = server
    settings = dict(max_new_tokens=60, temperature=0.9, top_k=20, top_p=0.95, seed=7)
    events = generate(client, model=model, prompt="ROMEO:", **settings)
    names = [name for name, _ in events]
    assert names[0] == "start" and names[-1] == "done" and names.count("token") == 60
    assert [d["i"] for n, d in events if n == "token"] == list(range(60))
    done = events[-1][1]
    assert done["tokens"] == 60 and done["tokens_per_second"] > 0 and done["first_token_ms"] >= 0
    assert not done["stopped"]
    out = io.StringIO()
    with torch.no_grad():
        if model == GPT:
            from scripts.playground.generation import GPTGenerator
            from stage5_gpt.generate import stream
            gen = GPTGenerator(tiny_course / GPT, torch.device("cpu"))
            stream(gen.model, gen.tokenizer, gen.encode("ROMEO:")[0], settings, True, torch.device("cpu"), out)
        else:
            from stage2_rnn_lstm.evaluate import load_language_model
            from stage2_rnn_lstm.generate import stream as rnn_stream
            lm, vocab, _ = load_language_model(tiny_course / LSTM, None, torch.device("cpu"))
            rnn_stream(lm, vocab, "ROMEO:", settings, out, torch.device("cpu"))
    expected = out.getvalue()
    expected = expected[len("ROMEO:"):] if model == LSTM else expected
    assert text_of(events) == expected.rstrip("\n") or text_of(events) + "\n" == expected


def test_kv_cache_on_and_off_give_the_same_tokens(server):
    client, _ = server
    on = generate(client, model=GPT, prompt="KING:", max_new_tokens=40, seed=3, kv_cache=True)
    off = generate(client, model=GPT, prompt="KING:", max_new_tokens=40, seed=3, kv_cache=False)
    assert text_of(on) == text_of(off) and on[0][1]["kv_cache"] is True and off[0][1]["kv_cache"] is False
    rnn = generate(client, model=LSTM, prompt="KING:", max_new_tokens=5)
    assert rnn[0][1]["kv_cache"] is None          # a recurrent model has a state, not a cache


def test_tokens_arrive_while_the_model_is_still_sampling(server):
    client, _ = server
    arrivals = []
    with client.stream("POST", "/api/generate", json=dict(model=GPT, prompt="A", max_new_tokens=400)) as response:
        for chunk in response.iter_bytes():
            arrivals.append((time.perf_counter(), chunk.count(b"event: token")))
    with_tokens = [t for t, n in arrivals if n]
    assert len(with_tokens) >= 2 and with_tokens[-1] > with_tokens[0]
    assert sum(n for _, n in arrivals) == 400


def test_closing_the_connection_stops_the_generation_within_a_second(server):
    client, app = server
    worker = app.state.playground.worker
    with client.stream("POST", "/api/generate", json=dict(model=GPT, prompt="A", max_new_tokens=2000)) as response:
        for line in response.iter_lines():
            if line.startswith("event: token"):
                break
        assert worker.active == 1
    deadline = time.monotonic() + 1.0
    while worker.active and time.monotonic() < deadline:
        time.sleep(0.01)
    assert worker.active == 0


def test_four_generations_at_once_all_finish(server):
    client, _ = server
    results: list = [None] * 4

    def one(i: int) -> None:
        with httpx.Client(base_url=str(client.base_url), timeout=60) as own:
            results[i] = generate(own, model=[GPT, LSTM][i % 2], prompt="ROMEO:", max_new_tokens=150, seed=i)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert all(r and r[-1][0] == "done" and r[-1][1]["tokens"] == 150 for r in results)
    assert not any(name == "error" for r in results for name, _ in r)


def test_next_token_is_the_distribution_the_sampler_draws_from(server):
    client, _ = server
    start = generate(client, model=GPT, prompt="ROMEO:", max_new_tokens=5, temperature=0)
    ids = start[0][1]["prompt_ids"]
    chosen = [d["id"] for n, d in start if n == "token"]
    for model in (GPT, LSTM):
        body = client.post("/api/next_token", json=dict(model=model, ids=ids[:3], temperature=0.8, top_k=5)).json()
        probs = [t["p"] for t in body["top"]]
        assert len(probs) == 5 and probs == sorted(probs, reverse=True) and abs(sum(probs) - 1) < 1e-4
        assert body["entropy"] > 0
    greedy = client.post("/api/next_token", json=dict(model=GPT, ids=ids, temperature=0)).json()
    assert greedy["top"][0]["id"] == chosen[0] and greedy["top"][0]["p"] == 1.0 and greedy["entropy"] == 0


def test_classify_answers_with_every_classifier(server):
    client, _ = server
    results = client.post("/api/classify", json={"text": "a wonderful film, moving and funny"}).json()["results"]
    stages = {r["model"].split("/")[0] for r in results}
    assert stages == {"stage1_mlp", "stage2_rnn_lstm", "stage4_transformer", "stage5_gpt"}
    for r in results:
        assert "error" not in r, r
        assert r["label"] in r["probabilities"] and abs(sum(r["probabilities"].values()) - 1) < 1e-4
        assert r["ms"] >= 0


def test_translate_with_each_translator(server):
    client, _ = server
    models = [m["id"] for m in client.get("/api/models").json()["models"] if "translate" in m["tasks"]]
    assert len(models) >= 3
    for model in models:
        body = client.post("/api/translate", json={"text": "a man is riding a bike .", "model": model}).json()
        assert "error" not in body, body
        assert isinstance(body["translation"], str) and body["ms"] >= 0
        if not model.startswith("stage5"):
            attention = body["attention"]
            assert len(attention["maps"]) == len(attention["layers"])
            assert len(attention["maps"][0]) == attention["heads"]
            assert len(attention["maps"][0][0]) == len(attention["target"])
    beam = client.post("/api/translate", json={"text": "a dog runs .", "model": models[0], "beam": 4,
                                               "alpha": 0.6}).json()
    assert "translation" in beam


def test_runs_results_and_sweeps(server):
    client, _ = server
    runs = client.get("/api/runs").json()["runs"]
    assert runs and {"id", "stage", "status"} <= set(runs[0])
    one = client.get(f"/api/runs/{runs[0]['id']}").json()
    assert "findings" in one and "curves" in one
    assert client.get("/api/runs/../../etc/passwd").status_code == 404
    results = client.get("/api/results").json()
    assert {"rows", "plots"} <= set(results)
    assert "sweeps" in client.get("/api/sweeps").json()
    assert client.get("/api/image/stage1_mlp/checkpoints/best_model.pt").status_code == 404
    assert client.get("/api/image/../../../etc/passwd").status_code == 404


def test_images_are_served_only_when_listed(tmp_path, tiny_course):
    root = tmp_path / "course"
    shutil.copytree(tiny_course / "stage1_mlp", root / "stage1_mlp")
    (root / "stage1_mlp" / "results").mkdir()
    png = b"\x89PNG\r\n\x1a\n" + b"0" * 32
    (root / "stage1_mlp" / "results" / "curves.png").write_bytes(png)
    (root / "stage1_mlp" / "results" / "secret.txt").write_text("no")
    with serve(root) as (url, _):
        plots = httpx.get(f"{url}/api/results").json()["plots"]
        assert "stage1_mlp/results/curves.png" in {p["id"] for p in plots}
        got = httpx.get(f"{url}/api/image/stage1_mlp/results/curves.png")
        assert got.status_code == 200 and got.content == png and got.headers["content-type"] == "image/png"
        assert httpx.get(f"{url}/api/image/stage1_mlp/results/secret.txt").status_code == 404


def test_the_page_and_its_files_are_served_with_no_outside_address(server):
    client, _ = server
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    for asset in ("/static/app.js", "/static/style.css"):
        assert client.get(asset).status_code == 200
    text = page.text + client.get("/static/app.js").text + client.get("/static/style.css").text
    assert "http://" not in text.replace("http://127.0.0.1", "") and "https://" not in text
    assert client.get("/static/../server.py").status_code == 404


BAD = [
    ("/api/generate", dict(model=GPT, prompt=""), 400, "empty"),
    ("/api/generate", dict(model=GPT, prompt="   "), 400, "empty"),
    ("/api/generate", dict(model=GPT, prompt="x" * 5001), 400, "prompt"),
    ("/api/generate", dict(model=GPT, prompt="a", max_new_tokens=100_000), 400, "max_new_tokens"),
    ("/api/generate", dict(model=GPT, prompt="a", max_new_tokens=0), 400, "max_new_tokens"),
    ("/api/generate", dict(model=GPT, prompt="a", temperature=-1), 400, "temperature"),
    ("/api/generate", dict(model=GPT, prompt="a", top_p=0), 400, "top_p"),
    ("/api/generate", dict(model=GPT, prompt="a", seed=-1), 400, "seed"),
    ("/api/generate", dict(model=GPT, prompt="a", colour="red"), 400, "colour"),
    ("/api/generate", dict(model="../../../etc/passwd", prompt="a"), 404, "模型"),
    ("/api/generate", dict(model="/etc/passwd", prompt="a"), 404, "模型"),
    ("/api/generate", dict(model="stage1_mlp/checkpoints/best_model.pt", prompt="a"), 404, "生成"),
    ("/api/generate", dict(prompt="a"), 400, "model"),
    ("/api/next_token", dict(model=GPT, ids=[]), 400, "token"),
    ("/api/next_token", dict(model=GPT, ids=[10**9]), 400, "vocabulary"),
    ("/api/next_token", dict(model=GPT, ids=[-1]), 400, "vocabulary"),
    ("/api/classify", dict(text=""), 400, "空"),
    ("/api/classify", dict(text="x" * 5001), 400, "text"),
    ("/api/translate", dict(text="", model=MULTI), 400, "空"),
    ("/api/translate", dict(text="a dog", model=GPT), 404, "翻译"),
    ("/api/generate", dict(model=GPT, prompt="a", max_new_tokens=True), 400, "max_new_tokens"),
    ("/api/generate", dict(model=GPT, prompt="a", temperature="0.5"), 400, "temperature"),
    ("/api/classify", dict(text="fine", models=[]), 400, "没有选择"),
    ("/api/translate", dict(text="a dog", model=MULTI, beam=11), 400, "beam"),
]


@pytest.mark.parametrize("path,body,status,needle", BAD)
def test_a_bad_request_gets_one_line_and_the_server_keeps_serving(server, path, body, status, needle):
    client, _ = server
    response = client.post(path, json=body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert needle in error and "\n" not in error and len(error) < 300
    assert client.get("/api/models").status_code == 200


def test_errors_are_said_in_the_pages_language(server):
    client, _ = server
    assert client.post("/api/generate", json=dict(model=GPT, prompt="a", temperature=9)).json()["error"] == \
        "temperature: 不能大于 5.0"
    assert client.post("/api/generate", json=dict(model=GPT)).json()["error"] == "prompt: 缺少这一项"
    assert client.post("/api/generate", json=dict(model=GPT, prompt="a", seed="x")).json()["error"] == \
        "seed: 要一个整数"


def test_beam_on_the_gpt_translates_greedily_and_says_so(server):
    client, _ = server
    beam = client.post("/api/translate", json={"text": "A dog runs.", "model": MULTI, "beam": 4}).json()
    greedy = client.post("/api/translate", json={"text": "A dog runs.", "model": MULTI}).json()
    assert beam["translation"] == greedy["translation"] and "贪心" in beam["note"] and greedy["note"] is None


def test_unknown_addresses_and_huge_bodies_get_one_line(server):
    client, _ = server
    missing = client.get("/api/nothing")
    assert missing.status_code == 404 and "没有这个地址" in missing.json()["error"]
    assert client.get("/api/generate").status_code == 405 and "error" in client.get("/api/generate").json()
    huge = client.post("/api/classify", content=b'{"text": "' + b"a" * (2 << 20) + b'"}',
                       headers={"content-type": "application/json"})
    assert huge.status_code == 413 and "太大" in huge.json()["error"]
    assert client.get("/api/docs").status_code == 404          # Swagger UI would fetch its files from a CDN
    assert client.get("/openapi.json").status_code == 200


def test_done_says_why_the_text_ended(server):
    client, _ = server
    done = generate(client, model=GPT, prompt="ROMEO:", max_new_tokens=7)[-1][1]
    assert done["reason"] == "length" and not done["stopped"]


def test_classify_asks_one_model_per_stage_by_default(server, tiny_course, tmp_path):
    client, _ = server
    results = client.post("/api/classify", json={"text": "a fine film"}).json()["results"]
    stages = [r["model"].split("/")[0] for r in results]
    assert len(stages) == len(set(stages)) == 4
    assert all(r["load_ms"] >= 0 for r in results)


def test_a_deleted_model_is_one_card_error_not_a_failure(tmp_path, tiny_course):
    root = tmp_path / "course"
    for stage in ("stage1_mlp", "stage5_gpt"):
        shutil.copytree(tiny_course / stage / "checkpoints", root / stage / "checkpoints")
    with serve(root) as (url, _):
        with httpx.Client(base_url=url, timeout=60) as client:
            ids = [m["id"] for m in client.get("/api/models").json()["models"] if "classify" in m["tasks"]]
            (root / "stage5_gpt" / "checkpoints" / "ft_imdb_full.pt").unlink()
            results = client.post("/api/classify", json={"text": "a fine film", "models": ids}).json()["results"]
            gone = next(r for r in results if r["model"].endswith("ft_imdb_full.pt"))
            assert "已经不在" in gone["error"] or "没有找到" in gone["error"]
            assert any("label" in r for r in results)
            (root / "stage5_gpt" / "checkpoints" / GPT.split("/")[-1]).unlink()
            answer = client.post("/api/generate", json={"model": GPT, "prompt": "a"})
            assert answer.status_code == 404 and "error" in answer.json()


def test_links_out_of_the_course_and_unreadable_files_are_not_served(tmp_path, tiny_course):
    root = tmp_path / "course"
    shutil.copytree(tiny_course / "stage1_mlp", root / "stage1_mlp")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"secret")
    shutil.copy(tiny_course / GPT, outside / "elsewhere.pt")
    (root / "stage1_mlp" / "results").mkdir()
    (root / "stage1_mlp" / "results" / "link.png").symlink_to(outside / "secret.png")
    (root / "stage1_mlp" / "results" / "text.png").write_text("not a picture")
    (root / "stage5_gpt" / "checkpoints").mkdir(parents=True)
    (root / "stage5_gpt" / "checkpoints" / "link.pt").symlink_to(outside / "elsewhere.pt")
    (root / "stage5_gpt" / "checkpoints" / "garbage.pt").write_bytes(b"\x00garbage")
    (root / "stage5_gpt" / "checkpoints" / "empty.pt").write_bytes(b"")
    (root / "stage5_gpt" / "checkpoints" / "cut.pt").write_bytes((tiny_course / GPT).read_bytes()[:5000])
    with serve(root) as (url, _):
        plots = {p["id"] for p in httpx.get(f"{url}/api/results").json()["plots"]}
        assert not plots & {"stage1_mlp/results/link.png", "stage1_mlp/results/text.png"}
        for name in ("link.png", "text.png"):
            assert httpx.get(f"{url}/api/image/stage1_mlp/results/{name}").status_code == 404
        body = httpx.get(f"{url}/api/models").json()
        assert "stage5_gpt/checkpoints/link.pt" not in {m["id"] for m in body["models"]}
        why = {u["id"]: u["why"] for u in body["unreadable"]}
        assert "课程目录之外" in why["stage5_gpt/checkpoints/link.pt"] and "garbage.pt" in " ".join(why)
        assert "空文件" in why["stage5_gpt/checkpoints/empty.pt"]
        assert "不完整" in why["stage5_gpt/checkpoints/cut.pt"]


def test_malformed_json_and_nan_are_refused(server):
    client, _ = server
    bad = client.post("/api/generate", content=b"{not json", headers={"content-type": "application/json"})
    assert bad.status_code == 400 and "error" in bad.json()
    nan = client.post("/api/generate", content=b'{"model": "%s", "prompt": "a", "temperature": NaN}' % GPT.encode(),
                      headers={"content-type": "application/json"})
    assert nan.status_code == 400


def test_classify_reports_a_broken_model_beside_the_others(server):
    client, _ = server
    body = client.post("/api/classify", json={"text": "fine", "models": [GPT, "nope.pt"]}).json()
    assert all("error" in r for r in body["results"])


def test_host_flag_and_root_are_checked(cli, tmp_path, capsys):
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5")
    code, _, err = cli(playground_main, ["--root", str(tmp_path)])
    one_error_line(code, err, "not a course checkout")
    code, _, err = cli(playground_main, ["--port", "70000"])
    one_error_line(code, err, "--port")
    code, _, err = cli(playground_main, ["--host", ""])
    one_error_line(code, err, "--host is empty")
    code, _, err = cli(playground_main, ["--host", "999.1.1.1"])
    one_error_line(code, err, "not an address")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        code, _, err = cli(playground_main, ["--port", str(busy.getsockname()[1])])
        one_error_line(code, err, "pass another --port")


def test_another_host_warns(monkeypatch, capsys):
    import uvicorn
    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append(kw))
    assert playground_main(["--host", "0.0.0.0", "--root", str(Path(__file__).resolve().parents[3])]) == 0
    err = capsys.readouterr().err
    assert "warning: listening on 0.0.0.0" in err and calls[0]["host"] == "0.0.0.0"


def test_quantized_models_are_listed_and_served_like_the_others(tmp_path, tiny_course):
    """quantize.py's files (int8 and bf16 of the GPT, int8 of the IMDb classifier) in a course's checkpoints:
    listed, generating the tokens stage 5's generate.py writes from them, and classifying."""
    from scripts.playground.generation import GPTGenerator
    from stage5_gpt.generate import stream
    from stage5_gpt.quantize import quantize_file

    root = tmp_path / "course"
    shutil.copytree(tiny_course / "stage5_gpt" / "checkpoints", root / "stage5_gpt" / "checkpoints")
    folder = root / "stage5_gpt" / "checkpoints"
    quantize_file(folder / "gpt_shakespeare_char.pt", "int8", folder / "int8_gpt_shakespeare_char.pt")
    quantize_file(folder / "gpt_shakespeare_char.pt", "bf16", folder / "bf16_gpt_shakespeare_char.pt")
    quantize_file(folder / "ft_imdb_full.pt", "int8", folder / "int8_ft_imdb_full.pt")
    settings = dict(max_new_tokens=30, temperature=0.9, top_k=20, top_p=0.95, seed=3)
    with serve(root) as (url, _):
        with httpx.Client(base_url=url, timeout=60) as client:
            ids = {m["id"] for m in client.get("/api/models").json()["models"]}
            for name in ("int8_gpt_shakespeare_char.pt", "bf16_gpt_shakespeare_char.pt", "int8_ft_imdb_full.pt"):
                assert f"stage5_gpt/checkpoints/{name}" in ids
            for name in ("int8_gpt_shakespeare_char.pt", "bf16_gpt_shakespeare_char.pt"):
                events = generate(client, model=f"stage5_gpt/checkpoints/{name}", prompt="ROMEO:", **settings)
                gen, out = GPTGenerator(folder / name, torch.device("cpu")), io.StringIO()
                with torch.no_grad():
                    stream(gen.model, gen.tokenizer, gen.encode("ROMEO:")[0], settings, True, torch.device("cpu"),
                           out)
                assert text_of(events) in (out.getvalue(), out.getvalue().rstrip("\n")), name
            answer = client.post("/api/classify", json={"text": "a fine film",
                                                        "models": ["stage5_gpt/checkpoints/int8_ft_imdb_full.pt"]})
            result = answer.json()["results"][0]
            assert "error" not in result and result["label"] in result["probabilities"], result
