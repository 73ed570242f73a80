"""Interactive terminal chat: answers stream token by token; /image, /report, /reset and /quit steer it."""
from __future__ import annotations

import sys

from dermvqa.infer.chat import ChatSession
from dermvqa.serve.limits import ImageRejected, load_image_file

HELP = "Commands: /image PATH (new photo, new conversation), /report, /reset, /quit"


def chat_loop(session: ChatSession, report_fn=None, read=input, out=sys.stdout) -> int:
    """Run until /quit or end of input; return how many questions were answered.

    `report_fn(image) -> str` renders a report for /report (None: the model folder has no label vocabulary).
    """
    out.write(HELP + "\n")
    answered = 0
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
            except ImageRejected as e:
                out.write(f"error: {e}\n")
        elif command == "/report":
            if session.image is None:
                out.write("error: no image loaded; use /image PATH first\n")
            elif report_fn is None:
                out.write("error: this model folder has no dermvqa_labels.json, which the report needs\n")
            else:
                out.write(report_fn(session.image))
        elif command.startswith("/"):
            out.write(f"unknown command {command}. {HELP}\n")
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
