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


def _report_fn(model, processor, model_dir: Path, trust: dict):
    """A renderer for /report, or None when the folder has no label vocabulary."""
    from dermvqa.infer.report import build_report, render_markdown
    from dermvqa.model.labels import load_labels

    try:
        labels = load_labels(model_dir)
    except FileNotFoundError:
        return None
    return lambda image: render_markdown(build_report(model, processor, image, labels, model_name=model_dir.name,
                                                      **trust))


def _explain_fn(model, processor):
    """/explain: ground the last answer, write explain_N.png/.json in the working directory, say where."""
    from dermvqa.infer.grounding import explain, write_explanation

    count = [0]

    def run(image, question, answer):
        count[0] += 1
        info = write_explanation(image, explain(model, processor, image, question, answer), processor,
                                 Path(f"explain_{count[0]}"))
        return (f"(where the model looked for \"{answer[:60]}\": {info['png']} (overlay), {info['json']} (grid); "
                f"hottest patch row {info['peak'][0]}, column {info['peak'][1]}; {info['seconds']:.2f} s)")
    return run


def chat(model: Path = MODEL,
         image: Path = typer.Option(None, "--image", help="lesion photo to talk about"),
         question: str = typer.Option(None, "--question", help="answer this one question and exit"),
         max_new_tokens: int = typer.Option(256, help="longest answer in tokens"),
         device: str = DEVICE):
    """Chat about a lesion photo in the terminal (streamed answers; /image, /report, /explain, /reset, /quit)."""
    from dermvqa.infer.chat import ChatSession, PromptTooLong
    from dermvqa.infer.generate import load_model
    from dermvqa.infer.report import model_trust
    from dermvqa.serve.terminal import chat_loop

    if question is not None and image is None:
        raise typer.BadParameter("--question needs --image", param_hint="--question")
    photo = _open_image(image) if image is not None else None
    m, processor = load_model(model, device=device)
    session = ChatSession(m, processor, photo, max_new_tokens)
    trust = model_trust(model)
    ood = trust["ood"]
    ood_fn = (lambda im: ood.check(m, processor, im)) if ood is not None else None
    if question is None:
        chat_loop(session, _report_fn(m, processor, model.resolve(), trust), ood_fn=ood_fn,
                  explain_fn=_explain_fn(m, processor))
        return
    verdict = ood_fn(photo) if ood_fn else None
    if verdict and verdict["unlike_training"]:
        typer.echo(verdict["message"])
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
           explain: bool = typer.Option(False, "--explain", help="also write where the model looked for its top "
                                        "diagnosis: OUT_explain.png (overlay) and OUT_explain.json (grid), or "
                                        "IMAGE_explain.* in the working directory without --out"),
           device: str = DEVICE):
    """Structured caption report of one lesion photo: morphology, colour, diagnosis, differential, next step."""
    import json

    from atomic_files import write_text_atomic
    from dermvqa.infer.generate import load_model
    from dermvqa.infer.report import build_report, model_trust, render_markdown
    from dermvqa.model.labels import load_labels

    if fmt not in ("md", "json"):
        raise typer.BadParameter(f"must be md or json, not {fmt!r}", param_hint="--format")
    photo = _open_image(image)
    labels = load_labels(model)
    m, processor = load_model(model, device=device)
    result = build_report(m, processor, photo, labels, top_k=top_k, min_confidence=min_confidence,
                          model_name=model.resolve().name, image_name=image.name, **model_trust(model),
                          explain_to=(Path(f"{out.with_suffix('')}_explain") if out else Path(f"{image.stem}_explain"))
                          if explain else None)
    text = (json.dumps(result, indent=1) + "\n" if fmt == "json"
            else render_markdown(result, out.parent if out else None))  # links relative to where the file lies
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
        ood: bool = typer.Option(True, "--ood/--no-ood", help="answer photos unlike the training images with the "
                                                              "out-of-distribution notice (--no-ood: always answer, "
                                                              "e.g. for an eval that compares backends)"),
        device: str = DEVICE):
    """OpenAI-compatible API: /v1/chat/completions (streaming or not), /v1/models, /health."""
    from dermvqa.serve.api import run_api
    from dermvqa.serve.limits import Limits, MiB

    _warn_if_exposed(host, api_key)
    run_api(model, host, port, api_key, allow_dir, max_batch, batch_wait_ms / 1000,
            Limits(max_request_bytes=int(max_request_mb * MiB)), device, ood)
