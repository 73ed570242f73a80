"""Serving a model on this machine: gradio web chat, OpenAI-compatible API, terminal chat."""
