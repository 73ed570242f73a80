"""Gradio web chat: upload a lesion photo, talk about it with streamed answers, ask for a structured report.

The clinical disclaimer is a banner pinned to the top of the page. Uploads are capped in size and decoded
through dermvqa/serve/limits.py; a new photo starts a new conversation. Binds 127.0.0.1 unless told otherwise.
With the model's out-of-distribution summary, a photo unlike the training images gets a notice under the
photo and the notice instead of answers; with "Show where the model looked" ticked, the relevance overlay of
the last answer (dermvqa/infer/grounding.py) appears under the conversation.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home

import gradio as gr  # noqa: E402

from PIL import Image  # noqa: E402

from dermvqa.infer.chat import ChatSession  # noqa: E402
from dermvqa.infer.grounding import explain, render_overlay  # noqa: E402
from dermvqa.infer.report import DISCLAIMER, build_report, render_markdown  # noqa: E402
from dermvqa.serve.limits import ImageRejected, Limits, load_image_file  # noqa: E402

CSS = """
.gradio-container {overflow: visible !important;}  /* an overflow:hidden ancestor would stop the banner sticking */
#disclaimer {position: sticky; top: 0; z-index: 1000; background: #fff4e5; border: 1px solid #f0a04b;
             border-radius: 6px; padding: 8px 12px; color: #5a3200;}
#ood-notice .ood {background: #fdecea; border: 1px solid #d93025; border-radius: 6px; padding: 8px 12px;
                  color: #7a1c12;}
"""


def _view(turns: list[list[str]]) -> list[dict]:
    out = []
    for q, a in turns:
        out += [{"role": "user", "content": q}, {"role": "assistant", "content": a or "(empty answer)"}]
    return out


def build_app(model, processor, labels: dict | None, model_name: str, limits: Limits = Limits(),
              max_new_tokens: int = 256, families: list[str] | None = None, ood=None, alert: dict | None = None
              ) -> gr.Blocks:
    overlays = Path(tempfile.mkdtemp(prefix="dermvqa-explain-"))

    def judge(path):
        return ood.check(model, processor, photo(path)) if ood is not None and path else None

    def notice(path):
        verdict = judge(path)
        return f'<div class="ood">{verdict["message"]}</div>' if verdict and verdict["unlike_training"] else ""

    def photo(path: str | None):
        if not path:
            raise gr.Error("Upload a lesion photo first.")
        try:
            return load_image_file(path, limits)
        except ImageRejected as e:
            raise gr.Error(str(e)) from e

    def respond(path, question, turns, show):
        verdict = judge(path)
        if verdict and verdict["unlike_training"]:
            new = turns + [[question, verdict["message"]]]
            yield "", _view(new), new, None
            return
        session = ChatSession(model, processor, photo(path), max_new_tokens)
        session.turns = [tuple(t) for t in turns]
        try:
            stream = session.ask(question or "")
        except ValueError as e:
            raise gr.Error(str(e)) from e
        partial = ""
        for chunk in stream:
            partial += chunk
            yield "", _view(turns + [[question, partial]]), turns, None
        new = [list(t) for t in session.turns]
        yield "", _view(new), new, None
        if show and new and new[-1][1].strip():
            png = overlays / f"explain_{len(list(overlays.iterdir()))}.png"
            render_overlay(session.image, explain(model, processor, session.image, *new[-1]), processor, png)
            with Image.open(png) as im:
                yield "", _view(new), new, im.copy()

    def report(path):
        if labels is None:
            raise gr.Error("This model folder has no dermvqa_labels.json, which the report needs.")
        return render_markdown(build_report(model, processor, photo(path), labels, model_name=model_name,
                                            image_name=Path(path).name, families=families, ood=ood, alert=alert))

    with gr.Blocks(title="dermvqa chat") as demo:
        gr.HTML(f"<b>Disclaimer.</b> {DISCLAIMER}", elem_id="disclaimer")
        gr.Markdown(f"### dermvqa — {model_name}\nUpload a photo of a skin lesion, then ask about it.")
        turns = gr.State([])
        with gr.Row():
            with gr.Column(scale=2):
                image = gr.Image(type="filepath", image_mode=None, sources=["upload"], label="Lesion photo",
                                 elem_id="photo", height=320)
                ood_notice = gr.HTML(elem_id="ood-notice")
                report_button = gr.Button("Report", elem_id="report-button")
            with gr.Column(scale=3):
                chatbot = gr.Chatbot(label="Conversation", elem_id="chat", height=420, buttons=["copy"])
                question = gr.Textbox(label="Question", placeholder="e.g. What is the most likely diagnosis?",
                                      elem_id="question", lines=1)
                with gr.Row():
                    send = gr.Button("Send", variant="primary", elem_id="send")
                    reset = gr.Button("New conversation", elem_id="reset")
                show = gr.Checkbox(True, label="Show where the model looked", elem_id="explain-toggle")
                explanation = gr.Image(type="pil", label="Where the model looked (last answer)",
                                       elem_id="explanation", interactive=False, height=360)
        report_view = gr.Markdown(elem_id="report")
        chat_io = dict(fn=respond, inputs=[image, question, turns, show],
                       outputs=[question, chatbot, turns, explanation], concurrency_id="model")
        send.click(**chat_io)
        question.submit(**chat_io)
        image.change(lambda: ([], [], "", None), outputs=[chatbot, turns, report_view, explanation])
        image.change(notice, inputs=[image], outputs=[ood_notice], concurrency_id="model")
        reset.click(lambda: ([], []), outputs=[chatbot, turns])
        chatbot.clear(lambda: [], outputs=[turns])
        report_button.click(report, inputs=[image], outputs=[report_view], concurrency_id="model")
    return demo


def launch(demo: gr.Blocks, host: str = "127.0.0.1", port: int = 7860, limits: Limits = Limits(),
           block: bool = True) -> None:
    """One model on one worker: events queue and run one at a time."""
    demo.queue(default_concurrency_limit=1, max_size=64)
    demo.launch(server_name=host, server_port=port, max_file_size=limits.max_image_bytes, css=CSS,
                footer_links=[], prevent_thread_lock=not block, show_error=True, quiet=not block)


def serve_web(model_dir: str | Path, host: str = "127.0.0.1", port: int = 7860, max_new_tokens: int = 256,
              device: str | None = None) -> None:
    from dermvqa.infer.generate import load_model
    from dermvqa.infer.report import model_trust
    from dermvqa.model.labels import load_labels

    model, processor = load_model(model_dir, device=device)
    try:
        labels = load_labels(model_dir)
    except FileNotFoundError as e:
        print(f"note: {e}; the Report button is disabled")
        labels = None
    launch(build_app(model, processor, labels, Path(model_dir).resolve().name, max_new_tokens=max_new_tokens,
                     **model_trust(model_dir)), host, port)
