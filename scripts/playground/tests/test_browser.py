"""The playground page in a real browser: Debian's chromium, driven by Playwright, against the real app (uvicorn in a
thread) over a copy of the tiny course. One test per tab, plus stop, two tabs at once and failed requests.

    pytest scripts/playground/tests/test_browser.py                          # about a minute
    MY_LLM_SCREENSHOTS=1 pytest scripts/playground/tests/test_browser.py     # also docs/images/playground_*.png

Without chromium the tests are skipped (with how to install it), except under CI, where they fail. Screenshots
need a font with Chinese glyphs (Debian: fonts-wqy-microhei or fonts-noto-cjk), or the page shows boxes.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest
from playwright.sync_api import expect

REPO = Path(__file__).resolve().parents[3]
SCREENSHOTS = os.environ.get("MY_LLM_SCREENSHOTS") == "1"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
TIMEOUT_MS = 20_000            # the longest wait for one thing on the page (a first model load on a busy machine)
REMOVED = "stage4_transformer"  # its classifier is taken out of the copy, so the models tab lists a missing model


NO_BROWSER = ("no chromium for the browser tests: install Debian's (sudo apt-get install chromium), "
              "which Playwright drives from /usr/bin/chromium")


def chromium() -> str | None:
    for candidate in ("/usr/bin/chromium", shutil.which("chromium")):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


# Skipped before the tiny course is built; under CI a missing browser is a failure (see `browser`), not a skip.
pytestmark = pytest.mark.skipif(chromium() is None and not os.environ.get("CI"), reason=NO_BROWSER)


# ----------------------------------------------------------------------------- the course, the server, the browser
@pytest.fixture(scope="module")
def course(tiny_course: Path, tmp_path_factory) -> Path:
    """The tiny course (copied: the shared fixture stays untouched) with the repository's results and reference
    files, a sweep, and without stage 4's classifier."""
    root = tmp_path_factory.mktemp("browser") / "course"
    shutil.copytree(tiny_course, root)
    for pattern in ("stage*/results/*.json", "stage1_mlp/results/*.png", "stage*/reference/*.json"):
        for path in REPO.glob(pattern):
            (root / path.relative_to(REPO)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, root / path.relative_to(REPO))
    (root / REMOVED / "checkpoints" / "best_classifier_imdb.pt").unlink()
    (root / REMOVED / "runs" / "classify_imdb" / "last.pt").unlink()
    write_sweep(root / "sweeps" / "gpt_lr")
    return root


def write_sweep(folder: Path) -> None:
    """A finished sweep as scripts/sweep.py writes it: a learning rate and a depth, two seeds each."""
    rows = [{"setting": {"lr": lr, "n_layer": depth}, "seed": seed, "score": 1.5 + abs(float(lr) - 2e-3) * 100
             + 0.02 * int(depth) + 0.01 * seed, "run": str(folder / f"lr{lr}_n_layer{depth}_seed{seed}")}
            for lr in ("1e-3", "2e-3", "4e-3") for depth in ("2", "4") for seed in (0, 1)]
    folder.mkdir(parents=True)
    (folder / "results.json").write_text(json.dumps({
        "script": "stage5_gpt/train.py", "metric": "val_loss", "mode": "min", "fixed": ["--max_steps", "500"],
        "rows": rows}), encoding="utf-8")


@pytest.fixture(scope="module")
def server(course: Path) -> Iterator[str]:
    """The real app on a free port of 127.0.0.1, served by uvicorn in a background thread."""
    import uvicorn

    from scripts.playground.server import create_app

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))          # the port is ours from here on: no race with another process
    config = uvicorn.Config(create_app(course), log_level="warning", timeout_graceful_shutdown=2)
    app_server = uvicorn.Server(config)
    thread = threading.Thread(target=app_server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not app_server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the playground server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}/"
    app_server.should_exit = True
    thread.join(10)
    sock.close()


@pytest.fixture(scope="module")
def browser():
    path = chromium()
    if path is None:
        pytest.fail(NO_BROWSER)        # only under CI: elsewhere pytestmark has skipped the module
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def context(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 800}, locale="zh-CN")
    context.set_default_timeout(TIMEOUT_MS)
    yield context
    context.close()


@pytest.fixture
def page(context, server: str):
    """A fresh page on the playground; a JavaScript error on it fails the test."""
    page = open_page(context, server)
    yield page
    assert not page.js_errors, page.js_errors


def open_page(context, url: str, tab: str = "models"):
    page = context.new_page()
    page.js_errors = []
    page.on("pageerror", lambda error: page.js_errors.append(error))
    page.goto(f"{url}#{tab}")
    return page


def models(page, task: str) -> list[dict]:
    """The catalog's best models of a task (what classify and translate ask by default), read as the page does."""
    data = page.evaluate("fetch('/api/models').then((r) => r.json())")
    return [m for m in data["models"] if task in m["tasks"] and m["kind"] == "best"]


def screenshot(page, tab: str) -> None:
    """docs/images/playground_<tab>.png, only when asked (MY_LLM_SCREENSHOTS=1): normal runs leave the tree clean."""
    if SCREENSHOTS:
        page.evaluate("window.scrollTo(0, 0)")
        page.screenshot(path=str(REPO / "docs" / "images" / f"playground_{tab}.png"))


# ----------------------------------------------------------------------------- one test per tab
def test_models_tab_lists_models_and_the_command_of_a_missing_one(page, context):
    page.wait_for_selector("#models-list [data-model]")
    found = page.evaluate("fetch('/api/models').then((r) => r.json())")
    listed = page.locator("#models-list [data-model]").evaluate_all("(items) => items.map((i) => i.dataset.model)")
    assert set(listed) == {m["id"] for m in found["models"]}
    assert page.locator("#models-list .stage-group").count() == 5
    missing = page.locator(f"#models-missing .missing[data-stage='{REMOVED}']")
    command = missing.locator("code").inner_text()
    assert command == "python stage4_transformer/train_classifier.py --dataset imdb"
    context.grant_permissions(["clipboard-read", "clipboard-write"])
    missing.get_by_test_id("copy-command").click()
    expect(missing.get_by_test_id("copy-command")).to_have_text("已复制")
    assert page.evaluate("navigator.clipboard.readText()") == command
    screenshot(page, "models")


def test_classify_every_classifier_side_by_side_and_an_empty_text(page):
    page.click("#tab-classify")
    page.fill("#classify-text", "A wonderful, moving film with brilliant acting.")
    page.click("#classify-run")
    cards = page.get_by_test_id("classify-card")
    cards.first.wait_for()
    assert cards.count() == len(models(page, "classify")) == 3      # stages 1, 2 and 5 (4's was removed)
    for i in range(cards.count()):
        card = cards.nth(i)
        assert card.locator(".error").count() == 0, card.inner_text()
        label = card.get_by_test_id("classify-label").inner_text()
        assert card.locator(".bar-row.chosen .bar-name").inner_text() == label
        assert card.get_by_test_id("bar-row").count() >= 2
        assert "ms" in card.locator(".latency").inner_text()
    assert page.locator("#classify-error").is_hidden()
    screenshot(page, "classify")

    page.fill("#classify-text", "   ")
    page.click("#classify-run")
    page.wait_for_selector("#classify-error:not([hidden])")
    assert page.locator("#classify-error").inner_text().strip()
    assert cards.count() == 0


def translate(page, count: int) -> None:
    """Click 翻译 and wait until each of `count` cards shows its translation or its error."""
    page.click("#translate-run")
    page.wait_for_function(f"document.querySelectorAll('[data-testid=translation], #translate-results .error')"
                           f".length === {count}")


def test_translate_greedy_and_beam_draw_attention_heatmaps(page):
    page.click("#tab-translate")
    page.fill("#translate-text", "Two dogs are playing in the snow.")
    translators = models(page, "translate")
    assert len(translators) == 3            # stage 3, stage 4 and stage 5's multi-task GPT
    translate(page, len(translators))
    assert page.locator("#translate-results .error").count() == 0
    assert page.get_by_test_id("translate-card").count() == 3
    for stage in ("stage3_attention_seq2seq", "stage4_transformer"):
        heatmap = page.locator(f"[data-testid=translate-card][data-model^='{stage}/'] canvas[data-drawn]")
        rows, columns = map(int, heatmap.get_attribute("data-drawn").split("x"))
        assert rows >= 1 and columns >= 2 and heatmap.bounding_box()["width"] > 50
    assert page.locator("[data-testid=translate-card][data-model^='stage5_gpt/'] canvas").count() == 0
    stage4 = page.locator("[data-testid=translate-card][data-model^='stage4_transformer/']")
    layers = stage4.get_by_test_id("attention-layer")
    layers.select_option(index=layers.locator("option").count() - 1)    # the last layer, its first head
    stage4.get_by_test_id("attention-head").select_option("0")
    assert stage4.locator("canvas[data-drawn]").count() == 1
    assert page.locator("[data-testid=translate-card][data-model^='stage3_attention_seq2seq/'] select").count() == 0

    page.select_option("#translate-mode", "beam")
    page.fill("#translate-beam", "3")
    page.fill("#translate-alpha", "1.2")
    translate(page, len(translators))
    for stage in ("stage3_attention_seq2seq", "stage4_transformer"):
        card = page.locator(f"[data-testid=translate-card][data-model^='{stage}/']")
        assert card.get_by_test_id("translation").inner_text().strip()
        assert card.locator("canvas[data-drawn]").count() == 1
    screenshot(page, "translate")


def watch_outputs(page) -> None:
    """Record, inside the page, each pane's text length every time it changes while it is still generating."""
    page.evaluate("""() => {
        window.seen = [[], []];
        [0, 1].forEach((i) => {
            const output = document.getElementById(`gen-output-${i}`);
            new MutationObserver(() => {
                if (output.dataset.state === "running") window.seen[i].push(output.textContent.length);
            }).observe(output, {childList: true, subtree: true, characterData: true});
        });
    }""")


def wait_panes(page, states: str = "done") -> None:
    for i in (0, 1):
        page.wait_for_selector(f"#gen-output-{i}[data-state='{states}']")


def test_generate_streams_two_panes_and_shows_the_next_token_distribution(page):
    page.click("#tab-generate")
    page.wait_for_selector("#gen-model-1 option", state="attached")
    assert page.input_value("#gen-model-0") == "stage2_rnn_lstm/checkpoints/best_lstm_char.pt"
    assert page.input_value("#gen-model-1") == "stage5_gpt/checkpoints/gpt_shakespeare_char.pt"
    page.fill("#gen-prompt", "ROMEO:")
    page.fill("#gen-length", "2000")
    page.fill("#gen-top-k", "10")          # the chosen token is then always among the ten shown
    watch_outputs(page)
    page.click("#gen-start")
    wait_panes(page)
    for i in (0, 1):
        growing = sorted(set(page.evaluate(f"window.seen[{i}]")))
        assert len(growing) >= 2, f"pane {i}: the text came in one piece, not streamed: {growing}"
        assert page.locator(f"#gen-output-{i} .token").count() == 2000
        assert "词元/秒" in page.inner_text(f"#gen-stats-{i}")
    page.locator("#gen-output-1").evaluate("(output) => { output.scrollTop = 0; }")
    page.locator("#gen-output-1 .token").nth(3).click()
    dist = page.get_by_test_id("gen-dist-1")
    dist.get_by_test_id("bar-row").first.wait_for()
    assert 1 <= dist.get_by_test_id("bar-row").count() <= 10
    assert dist.locator(".bar-row.chosen").count() == 1
    assert page.locator("#gen-output-1 .token.selected").count() == 1
    screenshot(page, "generate")


def test_an_empty_number_box_is_an_error_not_zero_and_a_new_model_clears_its_pane(page):
    page.click("#tab-generate")
    page.wait_for_selector("#gen-model-1 option", state="attached")
    page.fill("#gen-prompt", "ROMEO:")
    page.fill("#gen-temperature", "")
    page.click("#gen-start")
    assert "温度" in page.inner_text("#generate-error")
    assert page.locator("#gen-output-0 .token").count() == 0       # nothing was sent
    page.fill("#gen-temperature", "0.8")
    page.fill("#gen-length", "30")
    page.click("#gen-start")
    wait_panes(page)
    assert page.locator("#gen-output-1 .token").count() == 30
    other = page.locator("#gen-model-1 option").nth(1).get_attribute("value")
    page.select_option("#gen-model-1", other)
    assert page.locator("#gen-output-1 .token").count() == 0       # the old model's text is gone with its name


def test_stop_aborts_both_panes_and_the_page_generates_again(page):
    page.click("#tab-generate")
    page.wait_for_selector("#gen-model-1 option", state="attached")
    page.fill("#gen-length", "2000")
    # The tiny models write 2000 tokens in well under a second: press stop from inside the page at the first token.
    page.evaluate("""() => new MutationObserver((_, observer) => {
        if (!document.querySelector('.gen-output .token')) return;
        observer.disconnect();
        document.getElementById('gen-stop').click();
    }).observe(document.querySelector('.panes'), {childList: true, subtree: true})""")
    page.click("#gen-start")
    wait_panes(page, "stopped")
    for i in (0, 1):
        assert page.locator(f"#gen-output-{i} .token").count() < 2000
        assert "已停止" in page.inner_text(f"#gen-stats-{i}")
    expect(page.locator("#gen-start")).to_be_enabled()
    expect(page.locator("#gen-stop")).to_be_disabled()
    page.fill("#gen-length", "50")
    page.click("#gen-start")
    wait_panes(page)
    assert page.locator("#gen-output-0 .token").count() == 50


def test_two_tabs_generate_at_once(context, server, page):
    second = open_page(context, server, "generate")
    page.click("#tab-generate")
    for tab in (page, second):
        tab.wait_for_selector("#gen-model-1 option", state="attached")
        tab.fill("#gen-length", "1000")
    page.click("#gen-start")
    second.click("#gen-start")
    assert page.is_disabled("#gen-start") and second.is_disabled("#gen-start")   # both running now
    for tab in (page, second):
        wait_panes(tab)
        assert tab.locator(".gen-output .token").count() == 2 * 1000
    assert not second.js_errors, second.js_errors


def test_runs_tab_shows_a_run_over_its_reference_and_the_diagnosis(page):
    page.click("#tab-runs")
    item = page.locator("[data-testid=run-item][data-run='stage3_attention_seq2seq/runs/bahdanau_multi30k']")
    assert item.locator(".status").inner_text() == "已完成"
    item.click()
    page.get_by_test_id("run-summary").wait_for()
    assert page.get_by_test_id("run-summary").inner_text().strip()
    findings = page.locator("[data-testid=run-findings] .finding")
    assert findings.count() >= 1
    assert all(findings.nth(i).get_attribute("class").split()[-1] in ("level-ok", "level-warn", "level-bad")
               for i in range(findings.count()))
    assert page.locator("[data-testid=run-curve][data-drawn]").count() >= 1
    assert page.locator("#runs-list .status").count() == page.get_by_test_id("run-item").count() >= 5
    screenshot(page, "runs")


def visible_rows(table) -> list[dict[str, str]]:
    """The rows a filter left visible in one results table, as {column key: cell text}."""
    return table.locator("tbody tr:not([hidden])").evaluate_all(
        "(rows) => rows.map((row) => Object.fromEntries([...row.cells].map((c) => [c.dataset.column, c.textContent])))")


def test_results_tables_filter_and_sweeps_plot(page):
    page.click("#tab-results")
    classification = page.locator(".result-table[data-table='classify']")
    classification.locator("tbody tr").first.wait_for()
    total = classification.locator("tbody tr").count()
    page.fill("#results-filter", "lstm")
    shown = visible_rows(classification)
    assert 0 < len(shown) < total and all("lstm" in row["model"].lower() for row in shown)
    page.fill("#results-filter", "")
    classification.locator("select[data-column='stage']").select_option("5")
    shown = visible_rows(classification)
    assert 0 < len(shown) < total and {row["stage"] for row in shown} == {"5"}
    assert classification.locator(".count").inner_text() == f"显示 {len(shown)} / {total} 行"
    page.uncheck("#results-readme")          # every results file, not only the README's rows
    assert classification.locator("tbody tr").count() > total

    plot = page.locator("[data-testid=result-plot]").first
    plot.scroll_into_view_if_needed()
    plot.locator("img").evaluate("(image) => image.decode()")      # fails when the PNG is not served
    sweep = page.locator("[data-testid=sweep][data-sweep='sweeps/gpt_lr']")
    assert int(sweep.locator("canvas[data-drawn]").get_attribute("data-drawn")) >= 12     # one point per run
    sweep.locator("select[aria-label='横轴参数']").select_option("n_layer")
    assert sweep.locator("canvas[data-drawn]").count() == 1
    page.check("#results-readme")
    screenshot(page, "results")


# ----------------------------------------------------------------------------- failures stay in their tab
def test_a_failed_request_shows_an_error_and_the_page_keeps_working(page):
    page.route("**/api/runs", lambda route: route.abort())
    page.click("#tab-runs")
    page.wait_for_selector("#runs-error:not([hidden])")
    assert "连不上" in page.inner_text("#runs-error")
    page.unroute("**/api/runs")
    page.route("**/api/models", lambda route: route.fulfill(status=500, json={"error": "模型目录读不出来"}))
    page.click("#tab-models")
    page.click("#models-refresh")
    page.wait_for_selector("#models-error:not([hidden])")
    assert page.inner_text("#models-error") == "模型目录读不出来"
    page.unroute("**/api/models")
    page.click("#tab-generate")
    page.fill("#gen-temperature", "9")           # above the server's limit of 5: refused before streaming
    page.click("#gen-start")
    for i in (0, 1):
        expect(page.locator(f"#gen-error-{i}")).to_contain_text("temperature")
        assert page.get_attribute(f"#gen-output-{i}", "data-state") == "error"
    page.click("#tab-runs")
    page.click("#runs-refresh")
    page.get_by_test_id("run-item").first.wait_for()
    assert page.locator("#runs-error").is_hidden()
