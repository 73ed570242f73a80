"""Interactive terminal chat: answers stream token by token; /image, /report, /explain, /reset and /quit steer it.

With an out-of-distribution check (`ood_fn`), a photo unlike the training images is announced when it is
loaded and every question about it gets that notice instead of an answer."""
from __future__ import annotations

import sys

from dermvqa.infer.chat import ChatSession
from dermvqa.serve.limits import ImageRejected, load_image_file

HELP = "Commands: /image PATH (new photo, new conversation), /report, /explain (where the last answer looked), /reset, /quit"


def chat_loop(session: ChatSession, report_fn=None, read=input, out=sys.stdout, ood_fn=None, explain_fn=None) -> int:
    """Run until /quit or end of input; return how many questions were answered.

    `report_fn(image) -> str` renders a report for /report (None: the model folder has no label vocabulary);
    `ood_fn(image) -> dict | None` judges a photo (dermvqa/trust/ood.py); `explain_fn(image, question, answer)
    -> str` grounds the last answer for /explain and says where the overlay went.
    """
    out.write(HELP + "\n")
    answered = 0
    unlike = _judge(ood_fn, session.image, out)
    while True:
        try:
            line = read("you> ").strip()
        except (EOFError, KeyboardInterrupt):
            out.write("\n")
            return answered
        if not line:
            continue
        command, _, rest = line.partition(" ")
        if command in ("/quit", "/exit"):
            return answered
        if command == "/reset":
            session.reset()
            out.write("(conversation cleared)\n")
        elif command == "/image":
            path = rest.strip().strip("'\"")
            try:
                session.load_image(load_image_file(path))
                out.write(f"(loaded {path}; new conversation)\n")
                unlike = _judge(ood_fn, session.image, out)
            except ImageRejected as e:
                out.write(f"error: {e}\n")
        elif command == "/report":
            if session.image is None:
                out.write("error: no image loaded; use /image PATH first\n")
            elif report_fn is None:
                out.write("error: this model folder has no dermvqa_labels.json, which the report needs\n")
            else:
                out.write(report_fn(session.image))
        elif command == "/explain":
            if not session.turns:
                out.write("error: nothing to explain yet; ask a question first\n")
            elif explain_fn is None:
                out.write("error: explanations are not available here\n")
            else:
                out.write(explain_fn(session.image, *session.turns[-1]) + "\n")
        elif command.startswith("/"):
            out.write(f"unknown command {command}. {HELP}\n")
        elif unlike:
            out.write(f"model> {unlike}\n")
        else:
            try:
                stream = session.ask(line)
            except ValueError as e:
                out.write(f"error: {e}\n")
                continue
            out.write("model> ")
            try:
                for chunk in stream:
                    out.write(chunk)
                    out.flush()
            except Exception as e:  # noqa: BLE001 - say what failed and keep the session going
                out.write(f"\nerror: generation failed: {e}\n")
                continue
            out.write("\n" if stream.reply.text else "(empty answer)\n")
            if session.dropped_turns:
                out.write(f"(the {session.dropped_turns} oldest turn(s) no longer fit the model's context and "
                          "were left out)\n")
            answered += 1


def _judge(ood_fn, image, out) -> str:
    """The abstention notice for a photo unlike the training images ("" when it is like them or unchecked)."""
    if ood_fn is None or image is None:
        return ""
    verdict = ood_fn(image)
    if verdict and verdict["unlike_training"]:
        out.write(f"(notice: {verdict['message']})\n")
        return verdict["message"]
    return ""
