"""Gradio web chat: upload a lesion photo, talk about it with streamed answers, ask for a structured report.

The clinical disclaimer is a banner pinned to the top of the page. Uploads are capped in size and decoded
through dermvqa/serve/limits.py; a new photo starts a new conversation. Binds 127.0.0.1 unless told otherwise.
"""
from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home

import gradio as gr  # noqa: E402

from dermvqa.infer.chat import ChatSession  # noqa: E402
from dermvqa.infer.report import DISCLAIMER, build_report, render_markdown  # noqa: E402
from dermvqa.serve.limits import ImageRejected, Limits, load_image_file  # noqa: E402

CSS = """
.gradio-container {overflow: visible !important;}  /* an overflow:hidden ancestor would stop the banner sticking */
#disclaimer {position: sticky; top: 0; z-index: 1000; background: #fff4e5; border: 1px solid #f0a04b;
             border-radius: 6px; padding: 8px 12px; color: #5a3200;}
"""


def _view(turns: list[list[str]]) -> list[dict]:
    out = []
    for q, a in turns:
        out += [{"role": "user", "content": q}, {"role": "assistant", "content": a or "(empty answer)"}]
    return out


def build_app(model, processor, labels: dict | None, model_name: str, limits: Limits = Limits(),
              max_new_tokens: int = 256) -> gr.Blocks:
    def photo(path: str | None):
        if not path:
            raise gr.Error("Upload a lesion photo first.")
        try:
            return load_image_file(path, limits)
        except ImageRejected as e:
            raise gr.Error(str(e)) from e

    def respond(path, question, turns):
        session = ChatSession(model, processor, photo(path), max_new_tokens)
        session.turns = [tuple(t) for t in turns]
        try:
            stream = session.ask(question or "")
        except ValueError as e:
            raise gr.Error(str(e)) from e
        partial = ""
        for chunk in stream:
            partial += chunk
            yield "", _view(turns + [[question, partial]]), turns
        new = [list(t) for t in session.turns]
        yield "", _view(new), new

    def report(path):
        if labels is None:
            raise gr.Error("This model folder has no dermvqa_labels.json, which the report needs.")
        return render_markdown(build_report(model, processor, photo(path), labels, model_name=model_name,
                                            image_name=Path(path).name))

    with gr.Blocks(title="dermvqa chat") as demo:
        gr.HTML(f"<b>Disclaimer.</b> {DISCLAIMER}", elem_id="disclaimer")
        gr.Markdown(f"### dermvqa — {model_name}\nUpload a photo of a skin lesion, then ask about it.")
        turns = gr.State([])
        with gr.Row():
            with gr.Column(scale=2):
                image = gr.Image(type="filepath", image_mode=None, sources=["upload"], label="Lesion photo",
                                 elem_id="photo", height=320)
                report_button = gr.Button("Report", elem_id="report-button")
            with gr.Column(scale=3):
                chatbot = gr.Chatbot(label="Conversation", elem_id="chat", height=420, buttons=["copy"])
                question = gr.Textbox(label="Question", placeholder="e.g. What is the most likely diagnosis?",
                                      elem_id="question", lines=1)
                with gr.Row():
                    send = gr.Button("Send", variant="primary", elem_id="send")
                    reset = gr.Button("New conversation", elem_id="reset")
        report_view = gr.Markdown(elem_id="report")
        chat_io = dict(fn=respond, inputs=[image, question, turns], outputs=[question, chatbot, turns],
                       concurrency_id="model")
        send.click(**chat_io)
        question.submit(**chat_io)
        image.change(lambda: ([], [], ""), outputs=[chatbot, turns, report_view])
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
    from dermvqa.infer.report import load_labels

    model, processor = load_model(model_dir, device=device)
    try:
        labels = load_labels(model_dir)
    except FileNotFoundError as e:
        print(f"note: {e}; the Report button is disabled")
        labels = None
    launch(build_app(model, processor, labels, Path(model_dir).resolve().name, max_new_tokens=max_new_tokens),
           host, port)
