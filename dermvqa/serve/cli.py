"""Commands `dermvqa chat`, `dermvqa report` and `dermvqa serve web|api`; heavy imports stay inside each command."""
from __future__ import annotations

import ipaddress
from pathlib import Path

import typer

MODEL = typer.Option(..., "--model", help="exported model folder, or a LoRA adapter folder on its base model")
DEVICE = typer.Option(None, "--device", help="cpu, cuda, cuda:1, ... (default: cuda when available)")


def _open_image(path: Path):
    from dermvqa.serve.limits import ImageRejected, load_image_file

    try:
        return load_image_file(path)
    except ImageRejected as e:
        raise typer.BadParameter(str(e), param_hint="--image") from e


def _report_fn(model, processor, model_dir: Path):
    """A renderer for /report, or None when the folder has no label vocabulary."""
    from dermvqa.infer.report import build_report, load_labels, render_markdown

    try:
        labels = load_labels(model_dir)
    except FileNotFoundError:
        return None
    return lambda image: render_markdown(build_report(model, processor, image, labels, model_name=model_dir.name))


def chat(model: Path = MODEL,
         image: Path = typer.Option(None, "--image", help="lesion photo to talk about"),
         question: str = typer.Option(None, "--question", help="answer this one question and exit"),
         max_new_tokens: int = typer.Option(256, help="longest answer in tokens"),
         device: str = DEVICE):
    """Chat about a lesion photo in the terminal (streamed answers; /image, /report, /reset, /quit)."""
    from dermvqa.infer.chat import ChatSession, PromptTooLong
    from dermvqa.infer.generate import load_model
    from dermvqa.serve.terminal import chat_loop

    if question is not None and image is None:
        raise typer.BadParameter("--question needs --image", param_hint="--question")
    photo = _open_image(image) if image is not None else None
    m, processor = load_model(model, device=device)
    session = ChatSession(m, processor, photo, max_new_tokens)
    if question is None:
        chat_loop(session, _report_fn(m, processor, model.resolve()))
        return
    try:
        for chunk in session.ask(question):
            typer.echo(chunk, nl=False)
    except PromptTooLong as e:
        raise typer.BadParameter(str(e), param_hint="--question") from e
    typer.echo()


def report(model: Path = MODEL,
           image: Path = typer.Option(..., "--image", help="lesion photo"),
           fmt: str = typer.Option("md", "--format", help="md, or json (dermvqa/infer/report_schema.json)"),
           top_k: int = typer.Option(5, help="diagnoses in the differential"),
           min_confidence: float = typer.Option(0.5, help="below this top score the report names no diagnosis"),
           out: Path = typer.Option(None, help="write the report here instead of printing it"),
           device: str = DEVICE):
    """Structured caption report of one lesion photo: morphology, colour, diagnosis, differential, next step."""
    import json

    from data_gen.records import write_text_atomic
    from dermvqa.infer.generate import load_model
    from dermvqa.infer.report import build_report, load_labels, render_markdown

    if fmt not in ("md", "json"):
        raise typer.BadParameter(f"must be md or json, not {fmt!r}", param_hint="--format")
    photo = _open_image(image)
    labels = load_labels(model)
    m, processor = load_model(model, device=device)
    result = build_report(m, processor, photo, labels, top_k=top_k, min_confidence=min_confidence,
                          model_name=model.resolve().name, image_name=image.name)
    text = json.dumps(result, indent=1) + "\n" if fmt == "json" else render_markdown(result)
    if out is None:
        typer.echo(text, nl=False)
        return
    write_text_atomic(out, text)
    typer.echo(f"report written to {out}")


serve_app = typer.Typer(help="Serve a model on this machine: web chat or an OpenAI-compatible API.",
                        no_args_is_help=True)


def _warn_if_exposed(host: str, api_key: str | None) -> None:
    try:
        local = ipaddress.ip_address(host).is_loopback
    except ValueError:
        local = host == "localhost"
    if not local:
        typer.echo(f"warning: binding {host} exposes the server beyond this machine"
                   + ("" if api_key else " without an API key"), err=True)


@serve_app.command("web")
def web(model: Path = MODEL,
        host: str = typer.Option("127.0.0.1", help="address to bind (default: this machine only)"),
        port: int = typer.Option(7860),
        max_new_tokens: int = typer.Option(256, help="longest answer in tokens"),
        device: str = DEVICE):
    """Gradio web chat: upload a photo, chat, get a report; the disclaimer stays visible."""
    from dermvqa.serve.web import serve_web

    _warn_if_exposed(host, None)
    serve_web(model, host, port, max_new_tokens, device)


@serve_app.command("api")
def api(model: Path = MODEL,
        host: str = typer.Option("127.0.0.1", help="address to bind (default: this machine only)"),
        port: int = typer.Option(8000),
        api_key: str = typer.Option(None, "--api-key", envvar="DERMVQA_API_KEY",
                                    help="require 'Authorization: Bearer KEY' (or set DERMVQA_API_KEY)"),
        allow_dir: Path = typer.Option(None, "--allow-dir", help="folder whose images may be named by path"),
        max_batch: int = typer.Option(8, help="most requests generated together (1 = one at a time)"),
        batch_wait_ms: float = typer.Option(5.0, help="how long a free worker waits for more requests to batch"),
        max_request_mb: float = typer.Option(32, help="largest request body, MiB"),
        device: str = DEVICE):
    """OpenAI-compatible API: /v1/chat/completions (streaming or not), /v1/models, /health."""
    from dermvqa.serve.api import run_api
    from dermvqa.serve.limits import Limits, MiB

    _warn_if_exposed(host, api_key)
    run_api(model, host, port, api_key, allow_dir, max_batch, batch_wait_ms / 1000,
            Limits(max_request_bytes=int(max_request_mb * MiB)), device)
