"""``pathvqa serve``: a Gradio app where every loaded model answers questions about an image, side by side.

Upload an image (or pick a demo test image), ask; each model answers with its latency, and the
questions asked about the current image stay listed with every model's answers. Ticking "Show where each
model looked" adds each answer's map (``pathvqa explain``'s) over the image. The endpoint
``/answer`` takes (image, question) and returns every model's answer::

    from gradio_client import Client, handle_file
    Client("http://127.0.0.1:7860").predict(handle_file("tile.png"), "what stain is used?", api_name="/answer")

A bad upload (not an image, truncated, over the pixel limit, over the size cap) or an empty question
is refused with one sentence in the page, checked by pathvqa before anything else reads the file; the
app keeps serving. Questions and answers are shown as text (escaped HTML), never as Markdown or HTML, so
nothing in them makes the browser fetch anything. Bound to loopback by default; any other address
requires sign-in (Gradio's auth; credentials from ``PATHVQA_AUTH`` or ``--auth-file``) unless the user
passes ``--allow-open``. Uploads are capped in size; the queue runs a bounded number of requests at
once (each model generates one batch at a time), so a burst waits in line instead of exhausting memory.
"""

from __future__ import annotations

import html
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

from pathvqa.data.images import BadImage, decode
from pathvqa.errors import PathVQAError
from pathvqa.evaluation.answerer import Answerer, image_problem
from pathvqa.runs import SUMMARY
from pathvqa.synth import generator as synthetic

MAX_UPLOAD = "10mb"
MAX_UPLOAD_BYTES = 10 * 2**20
CONCURRENT_REQUESTS = 4
QUEUE_SIZE = 256


def read_upload(image_path: str | None, max_bytes: int = MAX_UPLOAD_BYTES) -> bytes:
    """The uploaded file's bytes, or PathVQAError with one sentence saying what is wrong with it."""
    if not image_path:
        raise PathVQAError("no image: upload one or pick an example")
    try:
        size = Path(image_path).stat().st_size
        if size > max_bytes:
            raise PathVQAError(
                f"cannot use this image: the file is {size / 2**20:.1f} MB, over the {MAX_UPLOAD} upload limit"
            )
        return Path(image_path).read_bytes()
    except OSError as err:
        raise PathVQAError(f"cannot read the upload ({err.__class__.__name__})") from None


def check_image(data: bytes, max_pixels: int) -> None:
    """PathVQAError with one sentence when ``data`` cannot be used as an image (as the models would decode it)."""
    try:
        decode(data, max_pixels)
    except BadImage as err:
        raise PathVQAError(image_problem(err)) from None


def answer_all(answerers: list[Answerer], image_path: str | None, question: str) -> list[dict[str, Any]]:
    """Every model's answer to ``question`` about the image file at ``image_path``."""
    image = read_upload(image_path)
    return [
        {**asdict(answer), "shown": answer.shown} for a in answerers for answer in a.answer(image, [question])
    ]


def explain_all(answerers: list[Answerer], image_path: str | None, question: str) -> list[tuple[dict, Any]]:
    """Every model's answer to ``question`` and where it looked: (the answer's row, the map over the image as
    a PIL image, or None for an empty answer)."""
    from pathvqa.analysis.maps import overlay_image

    image = read_upload(image_path)
    out = []
    for answerer in answerers:
        for explained in answerer.explain(image, [question]):
            row = {**asdict(explained.answer), "shown": explained.answer.shown}
            drawn = None if explained.saliency is None else overlay_image(image, explained.saliency)
            out.append((row, drawn))
    return out


def demo_examples(demo_dir: Path, count: int = 6) -> list[list[str]]:
    """(image file, question) pairs from the demo's test split, written once as PNG files beside it."""
    from pathvqa.data.images import decode
    from pathvqa.data.prepare import load_split

    split = load_split(str(demo_dir / "data"), "test", samples=count, seed=0, progress=False)
    folder = demo_dir / "serve_examples"
    folder.mkdir(exist_ok=True)
    examples = []
    for sample in split.samples:
        path = folder / f"{sample.id}.png"
        if not path.is_file():
            decode(sample.image, 10**8).save(path)
        examples.append([str(path), sample.question])
    return examples


def _table(header: list[str], rows: list[list[str]], numeric: int | None = None) -> str:
    """An HTML table whose every cell is escaped text: nothing in a question or an answer is read as
    Markdown or HTML, so nothing in one can make the viewer's browser fetch anything."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>"
        + "".join(
            f"<td{' class=num' if i == numeric else ''}>{html.escape(str(c))}</td>" for i, c in enumerate(row)
        )
        + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def answers_html(rows: list[dict[str, Any]]) -> str:
    return _table(
        ["model", "answer", "confidence", "latency (ms)"],
        [[r["model"], _answer_cell(r), _confidence_cell(r), f"{r['latency_ms']:.0f}"] for r in rows],
        numeric=3,
    )


def _answer_cell(row: dict[str, Any]) -> str:
    return row["shown"] if row.get("abstained") else row["answer"] or "(empty)"  # "not sure (p = 0.41)"


def _confidence_cell(row: dict[str, Any]) -> str:
    """The answer's confidence as ``p = 0.93`` (``n/a`` for a model whose generation gives no scores)."""
    return "n/a" if row.get("confidence") is None else f"p = {row['confidence']:.2f}"


def history_html(labels: list[str], history: list[list[str]]) -> str:
    if not history:
        return "<p><em>No question asked about this image yet.</em></p>"
    return _table(["question", *labels], history)


def _status(text: str) -> str:
    return f'<p class="status">{html.escape(text)}</p>' if text else ""


def _asker(answerers: list[Answerer], labels: list[str]):
    """The Ask button's handler: (image, question, history, show maps) → (answers, asked, history, status,
    maps); a bad image or question is one sentence in the page and the app keeps serving."""
    import gradio as gr

    def ask(image_path, question, history, show_maps):
        try:
            if show_maps:
                explained = explain_all(answerers, image_path, question)
                rows = [row for row, _ in explained]
                maps = [(m, f"{r['model']}: {r['shown']}") for r, m in explained if m is not None]
            else:
                rows, maps = answer_all(answerers, image_path, question), []
        except PathVQAError as err:  # one sentence in the page; the app keeps serving
            return gr.skip(), gr.skip(), history, _status(str(err)), gr.skip()
        history = [*history, [" ".join(question.split()), *(r["shown"] for r in rows)]]
        shown = gr.update(value=maps or None, visible=bool(maps))
        return answers_html(rows), history_html(labels, history), history, "", shown

    return ask


def build_app(answerers: list[Answerer], examples: list[list[str]]):
    """The Gradio Blocks app (not launched)."""
    import gradio as gr

    labels = [a.label for a in answerers]
    max_pixels = min(a.cfg.data.max_pixels for a in answerers)

    def api(image_path, question):
        try:
            return answer_all(answerers, image_path, question)
        except PathVQAError as err:  # the API caller gets the sentence
            raise gr.Error(str(err), print_exception=False) from None

    def upload(image_path):
        """Check an upload with pathvqa's own rules before anything else reads it: (preview, status, image)."""
        if not image_path:
            return None, "", None
        try:
            check_image(read_upload(image_path), max_pixels)
        except PathVQAError as err:
            return None, _status(str(err)), None
        return image_path, "", image_path

    ask = _asker(answerers, labels)

    with gr.Blocks(title="pathvqa: ask the models") as app:
        gr.HTML(
            f"<h2>pathvqa — ask the models</h2><p>Upload a pathology image or pick an example, then ask a "
            f"question. Models: {html.escape(', '.join(labels))}.</p>"
        )
        history, current = gr.State([]), gr.State(None)
        with gr.Row():
            with gr.Column():
                # A plain file upload: pathvqa checks it (and says why it is refused) before any image
                # component would fail on it; the preview shows only what passed.
                file = gr.File(label="Image (PNG, JPEG, TIFF…)", type="filepath", elem_id="upload")
                preview = gr.Image(label="Image", interactive=False, height=260, elem_id="preview")
                question = gr.Textbox(label="Question", placeholder="what stain is used?", elem_id="question")
                show_maps = gr.Checkbox(
                    label="Show where each model looked (a map per answer: one more backward pass)",
                    value=False,
                    elem_id="show-maps",
                )
                ask_button = gr.Button("Ask", variant="primary", elem_id="ask")
                if examples:
                    gr.Examples(examples=examples, inputs=[file, question], label="Demo test images")
            with gr.Column():
                status = gr.HTML("", elem_id="status")
                answers = gr.HTML(
                    "<p><em>Ask a question to see every model's answer.</em></p>", elem_id="answers"
                )
                maps = gr.Gallery(
                    label="Where each model looked", visible=False, columns=2, height="auto", elem_id="maps"
                )
                asked = gr.HTML(history_html(labels, []), elem_id="asked")
        file.change(upload, file, [preview, status, current], api_visibility="private").then(
            lambda: (history_html(labels, []), []), None, [asked, history], api_visibility="private"
        )
        for trigger in (ask_button.click, question.submit):
            trigger(
                ask,
                [current, question, history, show_maps],
                [answers, asked, history, status, maps],
                api_visibility="private",
            )
        # The API endpoint takes the upload as a plain file too, so a file that is not an image reaches
        # pathvqa's own check (and its message).
        api_image, api_question = gr.File(visible=False), gr.Textbox(visible=False)
        api_out, api_button = gr.JSON(visible=False), gr.Button(visible=False)
        api_button.click(api, [api_image, api_question], api_out, api_name="answer")
    app.queue(default_concurrency_limit=CONCURRENT_REQUESTS, max_size=QUEUE_SIZE)
    return app


AUTH_ENV = "PATHVQA_AUTH"


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def read_credentials(auth_file: str | Path | None = None) -> list[tuple[str, str]]:
    """``user:password`` pairs from ``auth_file`` (one a line) or the ``PATHVQA_AUTH`` environment
    variable (comma-separated); never from the command line, where other users could read them."""
    if auth_file is not None:
        try:
            text = Path(auth_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise PathVQAError(
                f"--auth-file {auth_file}: cannot be read ({err.__class__.__name__})"
            ) from None
        entries, where = text.splitlines(), f"--auth-file {auth_file}"
    else:
        entries, where = os.environ.get(AUTH_ENV, "").split(","), AUTH_ENV
    pairs = [tuple(e.strip().split(":", 1)) for e in entries if e.strip()]
    if any(len(p) != 2 or not p[0] or not p[1] for p in pairs):
        raise PathVQAError(f"{where}: every entry must be user:password")
    return pairs  # type: ignore[return-value]


def access(host: str, auth_file: str | Path | None, allow_open: bool) -> list[tuple[str, str]] | None:
    """Who may use the app: None (anyone who reaches it) on loopback or with ``allow_open``, else the
    credentials, which must exist."""
    credentials = read_credentials(auth_file) if auth_file is not None or os.environ.get(AUTH_ENV) else []
    if credentials:
        return credentials
    if is_loopback(host) or allow_open:
        return None
    raise PathVQAError(
        f"--host {host} lets other machines in: give credentials ({AUTH_ENV}=user:password or --auth-file FILE), "
        "or pass --allow-open to serve without sign-in"
    )


def serve(
    checkpoints: list[str],
    host: str = "127.0.0.1",
    port: int = 7860,
    demo_dir: str | Path = "runs/demo",
    block: bool = True,
    auth_file: str | Path | None = None,
    allow_open: bool = False,
    abstain_below: float | None = None,
):
    """Load the models (``[LABEL=]PATH``: run, checkpoint or merged export; default: the demo's) and launch.
    A non-loopback ``host`` needs credentials (see :func:`access`) unless ``allow_open``. Each answer shows
    its confidence; under ``abstain_below``, "not sure"."""
    credentials = access(host, auth_file, allow_open)  # before any model loads
    demo_dir = Path(demo_dir)
    specs = checkpoints or _demo_models(demo_dir)
    answerers = [
        Answerer(path, label or None, abstain_below) for label, path in (_split(spec) for spec in specs)
    ]
    examples = demo_examples(demo_dir) if synthetic.holds_dataset(demo_dir / "data") else []
    app = build_app(answerers, examples)
    app.launch(
        server_name=host,
        server_port=port,
        max_file_size=MAX_UPLOAD,
        prevent_thread_lock=not block,
        quiet=True,
        auth=credentials,
        auth_message="pathvqa: sign in to ask the models." if credentials else None,
    )
    return app


def _split(spec: str) -> tuple[str, str]:
    label, sep, path = spec.partition("=")
    return (label, path) if sep else ("", spec)


def _demo_models(demo_dir: Path) -> list[str]:
    """The models ``make demo`` fine-tuned (its finished runs), labelled by run name."""
    runs = [p.parent for p in sorted(demo_dir.glob(f"*/{SUMMARY}"))]
    if not runs:
        raise PathVQAError(
            f"no trained models in {demo_dir}: run `make demo` first, or pass --checkpoint RUN"
        )
    return [f"{run.name.replace('_', '-')}={run}" for run in runs]
