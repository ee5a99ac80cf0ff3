"""``pathvqa serve``: a Gradio app where every loaded model answers questions about an image, side by side.

Upload an image (or pick a demo test image), ask; each model answers with its latency, and the
questions asked about the current image stay listed with every model's answers. The endpoint
``/answer`` takes (image, question) and returns every model's answer::

    from gradio_client import Client, handle_file
    Client("http://127.0.0.1:7860").predict(handle_file("tile.png"), "what stain is used?", api_name="/answer")

Bad uploads and empty questions show an error in the page and the app keeps serving. Uploads are
capped in size; the queue runs a bounded number of requests at once (each model generates one batch
at a time), so a burst waits in line instead of exhausting memory.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from pathvqa.errors import PathVQAError
from pathvqa.inference import Answerer

MAX_UPLOAD = "10mb"
CONCURRENT_REQUESTS = 4
QUEUE_SIZE = 256


def answer_all(answerers: list[Answerer], image_path: str | None, question: str) -> list[dict[str, Any]]:
    """Every model's answer to ``question`` about the image file at ``image_path``."""
    if not image_path:
        raise PathVQAError("no image: upload one or pick an example")
    try:
        image = Path(image_path).read_bytes()
    except OSError as err:
        raise PathVQAError(f"cannot read the upload ({err.__class__.__name__})") from None
    return [asdict(a.answer(image, [question])[0]) for a in answerers]


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


def answers_markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| model | answer | latency (ms) |", "|---|---|---:|"]
    lines += [f"| {r['model']} | {_cell(r['answer']) or '*(empty)*'} | {r['latency_ms']:.0f} |" for r in rows]
    return "\n".join(lines)


def history_markdown(labels: list[str], history: list[list[str]]) -> str:
    if not history:
        return "*No question asked about this image yet.*"
    lines = ["| question | " + " | ".join(labels) + " |", "|---" * (len(labels) + 1) + "|"]
    lines += ["| " + " | ".join(_cell(x) for x in row) + " |" for row in history]
    return "\n".join(lines)


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def build_app(answerers: list[Answerer], examples: list[list[str]]):
    """The Gradio Blocks app (not launched)."""
    import gradio as gr

    labels = [a.label for a in answerers]

    def api(image_path, question):
        try:
            return answer_all(answerers, image_path, question)
        except PathVQAError as err:  # shown in the page; the app keeps serving
            raise gr.Error(str(err)) from None

    def ask(image_path, question, history):
        rows = api(image_path, question)
        history = [*history, [question.strip(), *(r["answer"] for r in rows)]]
        return answers_markdown(rows), history_markdown(labels, history), history

    with gr.Blocks(title="pathvqa: ask the models") as app:
        gr.Markdown(
            f"## pathvqa — ask the models\nUpload a pathology image or pick an example, then ask a question. "
            f"Models: {', '.join(f'**{label}**' for label in labels)}."
        )
        history = gr.State([])
        with gr.Row():
            with gr.Column():
                image = gr.Image(type="filepath", label="Image", sources=["upload", "clipboard"], height=300)
                question = gr.Textbox(label="Question", placeholder="what stain is used?", elem_id="question")
                ask_button = gr.Button("Ask", variant="primary", elem_id="ask")
                if examples:
                    gr.Examples(examples=examples, inputs=[image, question], label="Demo test images")
            with gr.Column():
                answers = gr.Markdown("*Ask a question to see every model's answer.*", elem_id="answers")
                asked = gr.Markdown(history_markdown(labels, []), elem_id="asked")
        for trigger in (ask_button.click, question.submit):
            trigger(ask, [image, question, history], [answers, asked, history], api_visibility="private")
        image.change(
            lambda: (history_markdown(labels, []), []), None, [asked, history], api_visibility="private"
        )
        # The API endpoint takes the upload as a plain file, so that a file which is not an image reaches
        # pathvqa's own check (and its message) instead of failing inside the image component.
        api_image, api_question = gr.File(visible=False), gr.Textbox(visible=False)
        api_out, api_button = gr.JSON(visible=False), gr.Button(visible=False)
        api_button.click(api, [api_image, api_question], api_out, api_name="answer")
    app.queue(default_concurrency_limit=CONCURRENT_REQUESTS, max_size=QUEUE_SIZE)
    return app


def serve(
    checkpoints: list[str],
    host: str = "127.0.0.1",
    port: int = 7860,
    demo_dir: str | Path = "runs/demo",
    block: bool = True,
):
    """Load the models (``[LABEL=]PATH``: run, checkpoint or merged export; default: the demo's) and launch."""
    demo_dir = Path(demo_dir)
    specs = checkpoints or _demo_models(demo_dir)
    answerers = [Answerer(path, label or None) for label, path in (_split(spec) for spec in specs)]
    examples = demo_examples(demo_dir) if (demo_dir / "data" / "synth.json").is_file() else []
    app = build_app(answerers, examples)
    app.launch(
        server_name=host,
        server_port=port,
        max_file_size=MAX_UPLOAD,
        prevent_thread_lock=not block,
        quiet=True,
    )
    return app


def _split(spec: str) -> tuple[str, str]:
    label, sep, path = spec.partition("=")
    return (label, path) if sep else ("", spec)


def _demo_models(demo_dir: Path) -> list[str]:
    """The models ``make demo`` fine-tuned (its finished runs), labelled by run name."""
    runs = [p.parent for p in sorted(demo_dir.glob("*/train_summary.json"))]
    if not runs:
        raise PathVQAError(
            f"no trained models in {demo_dir}: run `make demo` first, or pass --checkpoint RUN"
        )
    return [f"{run.name.replace('_', '-')}={run}" for run in runs]
