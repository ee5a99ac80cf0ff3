"""Asking trained models: ``pathvqa predict``, the Gradio app through gradio_client, and a real browser."""

import contextlib
import json
import os
import re
import shutil
import socket
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlparse

import pytest
from PIL import Image
from playwright.sync_api import TimeoutError as PlaywrightTimeout
from playwright.sync_api import expect

from pathvqa.config import load_config
from pathvqa.training.stages import fit
from tests.conftest import noise_image, run_cli

QUICK = [
    "stages=[]",
    "model.image_size=32",
    "model.hidden_size=32",
    "train.max_steps=10",
    "train.eval_every=10",
    "data.eval_samples=8",
    "data.max_pixels=10000",  # so a 128×128 upload is over the limit
    "eval.min_new_tokens=2",
    "eval.max_new_tokens=3",
]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def runs(tmp_path_factory, synth_dir):
    """Two briefly trained models of two families: {label: run folder}."""
    root = tmp_path_factory.mktemp("serve_runs")
    found = {}
    for label, config in (("blip-tiny", "blip_tiny"), ("llava-tiny", "llava_tiny")):
        cfg = load_config(f"configs/{config}.yaml", [f"data.dataset={synth_dir}", *QUICK])
        fit(cfg, root / config, progress=False)
        found[label] = root / config
    return found


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    noise_image(1, 48).save(root / "tile.png")
    noise_image(2, 128).save(root / "huge.png")  # 16,384 px > data.max_pixels 10,000
    (root / "notes.png").write_text("not an image at all\n")
    return root


def test_predict_answers_in_one_batch_and_prints_json(runs, images):
    proc = run_cli(
        "predict", "--checkpoint", runs["blip-tiny"], "--image", images / "tile.png",
        "--question", "what stain is used?", "--question", "is this normal?", "--json",
    )  # fmt: skip
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["question"] for r in rows] == ["what stain is used?", "is this normal?"]
    keys = {"image", "model", "question", "answer", "latency_ms", "confidence", "abstained"}
    assert all(set(r) == keys for r in rows)
    assert all(r["model"] == "blip_tiny" and r["answer"] and r["latency_ms"] > 0 for r in rows)
    assert all(0 < r["confidence"] < 1 and not r["abstained"] for r in rows)
    assert rows[0]["latency_ms"] == rows[1]["latency_ms"], "one batch for the questions about one image"
    sure = max(r["confidence"] for r in rows)
    plain = run_cli(
        "predict", "--checkpoint", runs["blip-tiny"], "--image", images / "tile.png",
        "--question", "what stain is used?", "--question", "is this normal?", "--abstain-below", str(sure),
    ).stdout.splitlines()  # fmt: skip
    for row, line in zip(rows, plain, strict=True):
        p = f"p = {row['confidence']:.2f}"
        said = f"not sure ({p})" if row["confidence"] < sure else f"{row['answer']} ({p})"
        assert line == f"{row['question']} → {said}", line
    plain = run_cli(
        "predict", "--checkpoint", runs["blip-tiny"], "--image", images / "tile.png", "--question", "q?"
    )
    assert plain.stdout.strip() and plain.stdout.count("\n") == 1


def test_predict_explain_draws_a_map_beside_each_answer_and_keeps_the_answers(runs, images, tmp_path):
    args = ["predict", "--checkpoint", runs["llava-tiny"], "--image", images / "tile.png",
            "--question", "what stain is used?", "--question", "is this normal?", "--json"]  # fmt: skip
    plain = [json.loads(line) for line in run_cli(*args).stdout.splitlines()]
    mapped = [json.loads(line) for line in run_cli(*args, "--explain", tmp_path / "maps").stdout.splitlines()]
    assert [r["answer"] for r in mapped] == [r["answer"] for r in plain]
    assert [Path(r["map"]).name for r in mapped] == ["1-tile.png", "2-tile.png"]
    for row in mapped:
        with Image.open(row["map"]) as drawn:
            assert drawn.width > drawn.height > 100
    again = run_cli(*args, "--explain", tmp_path / "maps", check=False)
    assert again.returncode == 2 and "--overwrite" in again.stderr.strip().splitlines()[0]


def test_predict_refuses_bad_input_in_one_line(runs, images, tmp_path):
    good = {
        "--checkpoint": runs["blip-tiny"],
        "--image": images / "tile.png",
        "--question": "what stain is used?",
    }
    cases = {  # what is wrong → (the argument that is wrong, what the one line must say)
        "not an image": ({"--image": images / "notes.png"}, "not an image"),
        "too large": ({"--image": images / "huge.png"}, "pixel limit"),
        "empty question": ({"--question": "   "}, "question is empty"),
        "missing checkpoint": ({"--checkpoint": tmp_path / "nothing"}, "checkpoint not found"),
        "missing image": ({"--image": tmp_path / "nothing.png"}, "image not found"),
    }

    def attempt(change):
        args = {**good, **change}
        return run_cli("predict", *(str(x) for kv in args.items() for x in kv), check=False)

    procs = {case: attempt(change) for case, (change, _) in cases.items()}
    for case, proc in procs.items():
        lines = proc.stderr.strip().splitlines()
        what = cases[case][1]
        assert proc.returncode == 2 and len(lines) == 1 and what in lines[0], (case, proc.stderr[-600:])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(runs, tmp_path_factory):
    from pathvqa.apps.serve import serve

    port = free_port()
    specs = [f"{label}={path}" for label, path in runs.items()]
    app = serve(specs, port=port, demo_dir=tmp_path_factory.mktemp("no_demo"), block=False)
    yield f"http://127.0.0.1:{port}/"
    app.close()


def test_the_app_answers_refuses_a_bad_upload_and_keeps_serving(server, images):
    from gradio_client import Client, handle_file

    client = Client(server, verbose=False)
    first = client.predict(handle_file(str(images / "tile.png")), "what stain is used?", api_name="/answer")
    assert [r["model"] for r in first] == ["blip-tiny", "llava-tiny"] and all(r["answer"] for r in first)
    for bad, question in (
        (images / "notes.png", "what?"),
        (images / "huge.png", "what?"),
        (images / "tile.png", " "),
    ):
        with pytest.raises(Exception, match=r"not an image|pixel limit|question is empty"):
            client.predict(handle_file(str(bad)), question, api_name="/answer")
    again = client.predict(handle_file(str(images / "tile.png")), "what stain is used?", api_name="/answer")
    assert again[0]["answer"] == first[0]["answer"]


def test_twenty_concurrent_requests_are_all_answered(server, images):
    from gradio_client import Client, handle_file

    client = Client(server, verbose=False)

    def ask(i: int):
        return client.predict(handle_file(str(images / "tile.png")), f"question {i}?", api_name="/answer")

    with ThreadPoolExecutor(20) as pool:
        results = list(pool.map(ask, range(20)))
    assert len(results) == 20 and all(len(r) == 2 and all(a["answer"] for a in r) for r in results)


needs_chromium = pytest.mark.skipif(
    CHROMIUM is None,
    reason="no system Chromium (Debian: apt-get install chromium; make test does it as root)",
)


@contextlib.contextmanager
def browser_page(url: str, outside: list[str]):
    """A Chromium page on ``url``; every request for another host than 127.0.0.1 is recorded in ``outside``
    and blocked (nothing leaves this machine)."""
    from playwright.sync_api import sync_playwright

    def guard(route):
        host = urlparse(route.request.url).hostname
        if route.request.url.startswith(("data:", "blob:")) or host == "127.0.0.1":
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.route("**/*", guard)
        page.goto(url)
        try:
            yield page
        finally:
            browser.close()


def upload(page, path) -> None:
    """Upload ``path`` as a user would: clear the previous file (the × button), then pick the new one."""
    for clear in page.locator('#upload button[aria-label="Clear"]').all():  # a file, or an error overlay
        if clear.is_visible():
            try:
                clear.click(timeout=5_000)
            except PlaywrightTimeout:  # gone between the look and the click (a closing overlay): fine
                assert not clear.is_visible(), "the clear button stayed on screen and could not be clicked"
    page.locator("#upload input[type=file]").set_input_files(str(path))


def ask(page, question: str) -> None:
    page.locator("#question textarea").fill(question)
    page.locator("#ask").click()


def shown_answers(page) -> dict[str, str]:
    rows = page.locator("#answers table tbody tr")
    return {
        rows.nth(i).locator("td").nth(0).inner_text(): rows.nth(i).locator("td").nth(1).inner_text()
        for i in range(rows.count())
    }


def test_an_answer_under_the_threshold_reads_not_sure():
    from pathvqa.apps.serve import answers_html
    from pathvqa.evaluation.answerer import Answer

    unsure = Answer("m", "q?", "yes", 5.0, 0.41, abstained=True)
    sure = Answer("n", "q?", "no", 5.0, 0.93)
    rows = [{**vars(a), "shown": a.shown} for a in (unsure, sure)]
    page = answers_html(rows)
    assert "<td>not sure (p = 0.41)</td>" in page and "<td>no</td>" in page and "p = 0.93" in page
    assert sure.shown == "no (p = 0.93)" and Answer("o", "q?", "x", 1.0).shown == "x"


@needs_chromium
def test_a_browser_uploads_asks_and_sees_every_model_answer(server, images, tmp_path):
    outside: list[str] = []
    with browser_page(server, outside) as page:
        upload(page, images / "tile.png")
        page.locator("#preview img").wait_for(timeout=30_000)
        ask(page, "what stain is used?")
        page.locator("#answers table").wait_for(timeout=60_000)
        shown = shown_answers(page)
        assert set(shown) == {"blip-tiny", "llava-tiny"} and all(shown.values()), shown
        rows = page.locator("#answers table tbody tr")
        sure = [rows.nth(i).locator("td").nth(2).inner_text() for i in range(rows.count())]
        assert all(re.fullmatch(r"p = [01]\.\d\d", p) for p in sure), sure  # beside every answer
        assert "what stain is used?" in page.locator("#asked").inner_text()
        assert not page.locator("#maps").is_visible(), "no map unless asked for"
        page.locator("#show-maps input[type=checkbox]").check()
        ask(page, "is there necrosis?")
        page.locator("#maps img").nth(1).wait_for(timeout=60_000)  # one map per model
        captions = page.locator("#maps").inner_text()
        assert "blip-tiny:" in captions and "llava-tiny:" in captions, captions
        page.screenshot(path=str(tmp_path / "serve.png"), full_page=True)
        page.locator("#show-maps input[type=checkbox]").uncheck()
        ask(page, "what organ is this?")
        page.locator("#maps").wait_for(state="hidden", timeout=60_000)
    assert Image.open(tmp_path / "serve.png").size[0] == 1280 and not outside, outside


@needs_chromium
def test_each_bad_upload_says_why_in_the_page_and_the_next_good_one_answers(server, images, tmp_path, capfd):
    tile = (images / "tile.png").read_bytes()
    (tmp_path / "truncated.png").write_bytes(tile[: len(tile) // 2])
    (tmp_path / "oversize.png").write_bytes(tile + os.urandom(11 * 2**20))  # an image, over the 10 MB cap
    bad = {  # file → what its sentence must say
        images / "notes.png": "it is not an image",
        tmp_path / "truncated.png": "truncated or damaged",
        images / "huge.png": "over the pixel limit of",
    }
    outside: list[str] = []
    with browser_page(server, outside) as page:
        status = page.locator("#status")
        for path, sentence in bad.items():
            upload(page, path)
            expect(status).to_contain_text(sentence, timeout=30_000)
            assert len(status.inner_text().strip().splitlines()) == 1, status.inner_text()
            ask(page, "what stain is used?")  # asking about a refused upload: told so, nothing crashes
            expect(status).to_contain_text("no image", timeout=30_000)
        # Over the size cap the browser never sends the file: Gradio's own sentence, in the page.
        upload(page, tmp_path / "oversize.png")
        toast = page.get_by_text('exceed the maximum allowed size of 10.0 Mb: "oversize.png"')
        expect(toast).to_be_visible(timeout=30_000)
        upload(page, images / "tile.png")
        page.locator("#preview img").wait_for(timeout=30_000)
        ask(page, "what stain is used?")
        page.locator("#answers table").wait_for(timeout=60_000)
        assert set(shown_answers(page)) == {"blip-tiny", "llava-tiny"}
        expect(status).to_have_text("")
    assert not outside, outside
    assert "Traceback" not in capfd.readouterr().err  # the server logged no traceback for any of them


@needs_chromium
def test_markdown_and_html_in_questions_show_as_text_and_fetch_nothing(server, images):
    hostile = (
        "![t](http://198.51.100.7/track.png) <img src=http://198.51.100.7/x.png> "
        "<b>bold</b> **strong** [link](http://198.51.100.7/) `code`"
    )
    outside: list[str] = []
    with browser_page(server, outside) as page:
        upload(page, images / "tile.png")
        page.locator("#preview img").wait_for(timeout=30_000)
        ask(page, hostile)
        page.locator("#answers table").wait_for(timeout=60_000)
        asked = page.locator("#asked table tbody tr td").first
        expect(asked).to_have_text(hostile)
        assert page.locator("#asked img, #asked b, #asked strong, #asked a, #answers img").count() == 0
        page.wait_for_timeout(500)
    assert not outside, outside


def test_a_non_loopback_bind_needs_credentials_or_an_explicit_open_flag(runs, tmp_path, monkeypatch):
    from pathvqa.apps.serve import access, is_loopback

    monkeypatch.delenv("PATHVQA_AUTH", raising=False)
    assert is_loopback("127.0.0.1") and is_loopback("127.0.0.2") and is_loopback("::1")
    assert is_loopback("localhost") and not is_loopback("0.0.0.0") and not is_loopback("192.0.2.10")
    assert access("127.0.0.1", None, False) is None and access("0.0.0.0", None, True) is None
    proc = run_cli("serve", "--checkpoint", runs["blip-tiny"], "--host", "0.0.0.0", check=False)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert "PATHVQA_AUTH" in proc.stderr and "--allow-open" in proc.stderr
    (tmp_path / "users").write_text("ana:s3cret\nbo:pa:ss\n")
    assert access("0.0.0.0", tmp_path / "users", False) == [("ana", "s3cret"), ("bo", "pa:ss")]
    monkeypatch.setenv("PATHVQA_AUTH", "ana:s3cret,broken")
    proc = run_cli("serve", "--checkpoint", runs["blip-tiny"], "--host", "0.0.0.0", check=False)
    assert proc.returncode == 2 and "every entry must be user:password" in proc.stderr


@pytest.mark.slow
@needs_chromium
def test_the_sign_in_page_appears_off_loopback_and_the_models_answer_after_it(runs, images, tmp_path):
    from pathvqa.apps.serve import serve

    (tmp_path / "users").write_text("ana:s3cret\n")
    port = free_port()
    specs = [f"{label}={path}" for label, path in runs.items()]
    app = serve(
        specs, host="0.0.0.0", port=port, demo_dir=tmp_path, block=False, auth_file=tmp_path / "users"
    )
    outside: list[str] = []
    try:  # bound to every address; the browser reaches it through loopback
        with browser_page(f"http://127.0.0.1:{port}/", outside) as page:
            page.locator("input[type=password]").wait_for(timeout=30_000)
            assert page.locator("#upload").count() == 0  # nothing of the app before signing in
            page.locator("input[type=text]").first.fill("ana")
            page.locator("input[type=password]").fill("wrong")
            page.locator("button", has_text="Login").click()
            expect(page.get_by_text("Incorrect Credentials", exact=False)).to_be_visible(timeout=30_000)
            page.locator("input[type=text]").first.fill("ana")  # the failed attempt may clear the form
            page.locator("input[type=password]").fill("s3cret")
            page.locator("button", has_text="Login").click()
            page.locator("#upload").wait_for(timeout=60_000)
            upload(page, images / "tile.png")
            page.locator("#preview img").wait_for(timeout=30_000)
            ask(page, "what stain is used?")
            page.locator("#answers table").wait_for(timeout=60_000)
            assert set(shown_answers(page)) == {"blip-tiny", "llava-tiny"}
    finally:
        app.close()
    assert not outside, outside
