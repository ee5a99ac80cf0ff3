"""Asking trained models: ``pathvqa predict``, the Gradio app through gradio_client, and a real browser."""

import json
import shutil
import socket
from concurrent.futures import ThreadPoolExecutor

import pytest
from PIL import Image

from pathvqa.config import load_config
from pathvqa.train import fit
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
    assert all(set(r) == {"image", "model", "question", "answer", "latency_ms"} for r in rows)
    assert all(r["model"] == "blip_tiny" and r["answer"] and r["latency_ms"] > 0 for r in rows)
    assert rows[0]["latency_ms"] == rows[1]["latency_ms"], "one batch for the questions about one image"
    plain = run_cli(
        "predict", "--checkpoint", runs["blip-tiny"], "--image", images / "tile.png", "--question", "q?"
    )
    assert plain.stdout.strip() and plain.stdout.count("\n") == 1


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

    with ThreadPoolExecutor(3) as pool:
        procs = dict(zip(cases, pool.map(attempt, (change for change, _ in cases.values())), strict=True))
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
    from pathvqa.serve import serve

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


@pytest.mark.skipif(
    CHROMIUM is None,
    reason="no system Chromium (Debian: apt-get install chromium; make test does it as root)",
)
def test_a_browser_uploads_asks_and_sees_every_model_answer(server, images, tmp_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(server)
        page.locator("input[type=file]").first.set_input_files(str(images / "tile.png"))
        page.locator("#question textarea").fill("what stain is used?")
        page.locator("#ask").click()
        answers = page.locator("#answers table")
        answers.wait_for(timeout=60_000)
        rows = answers.locator("tbody tr")
        shown = {
            rows.nth(i).locator("td").nth(0).inner_text(): rows.nth(i).locator("td").nth(1).inner_text()
            for i in range(rows.count())
        }
        assert set(shown) == {"blip-tiny", "llava-tiny"} and all(shown.values()), shown
        assert "what stain is used?" in page.locator("#asked").inner_text()
        page.screenshot(path=str(tmp_path / "serve.png"), full_page=True)
        browser.close()
    assert Image.open(tmp_path / "serve.png").size[0] == 1280
