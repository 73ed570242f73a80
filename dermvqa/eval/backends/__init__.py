"""`load_adapter(spec)`: the model backend a `--model` SPEC names.

`llava:DIR` (a LLaVA folder dermvqa built; a bare folder path means this), `hf:ID_OR_DIR` (a transformers
image-text-to-text model), `openai:MODEL@URL` (an OpenAI-compatible chat endpoint). Each backend takes only
its own options (ADAPTER_OPTIONS); the others are not passed to it. A spec that starts like a backend name
(`name:`) and is no existing path names an unknown backend, not a folder.
"""
from __future__ import annotations

import importlib
import re
from pathlib import Path

from dermvqa.eval.backends.base import ModelAdapter

ADAPTERS = {"llava": ("dermvqa.eval.backends.llava", "LlavaAdapter"),
            "hf": ("dermvqa.eval.backends.hf", "HFAdapter"),
            "openai": ("dermvqa.eval.backends.openai_chat", "OpenAIChatAdapter")}
ADAPTER_OPTIONS = {"llava": ("device", "batch_size"),
                   "hf": ("device", "trust_remote_code", "allow_untested"),
                   "openai": ("api_key_env", "concurrency", "cache_dir", "timeout", "max_retries", "blank_rgb",
                              "max_tokens_param", "send_temperature", "extra_body")}
SPEC_FORMS = "llava:DIR (or a bare folder), hf:ID_OR_DIR, openai:MODEL@URL"
BACKEND_NAME = re.compile(r"[A-Za-z][\w.+-]+")  # two characters at least: `C:` is a Windows drive


def split_spec(spec: str) -> tuple[str, str]:
    """(kind, target) of a model SPEC; a spec without a known prefix is a llava folder path."""
    kind, sep, target = str(spec).partition(":")
    if sep and kind in ADAPTERS:
        if not target:
            raise ValueError(f"--model {spec!r}: nothing after {kind}:; expected {SPEC_FORMS}")
        return kind, target
    if sep and BACKEND_NAME.fullmatch(kind) and not Path(spec).exists():
        raise ValueError(f"--model {spec!r}: unknown backend {kind!r}; accepted: {SPEC_FORMS}")
    return "llava", str(spec)


def normalize_spec(spec: str) -> str:
    """The spec with its backend prefix: `runs/x/model` -> `llava:runs/x/model`."""
    kind, target = split_spec(spec)
    return f"{kind}:{target}"


def load_adapter(spec: str, **opts) -> ModelAdapter:
    """The backend SPEC names, given the options it takes (None values are left to its defaults)."""
    kind, target = split_spec(spec)
    module_name, class_name = ADAPTERS[kind]
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"--model {spec!r}: the {kind}: backend is not available ({module_name}.{class_name}: "
                         f"{e})") from None
    kwargs = {k: v for k, v in opts.items() if k in ADAPTER_OPTIONS[kind] and v is not None}
    return cls(target, **kwargs) if kind == "llava" else cls(f"{kind}:{target}", **kwargs)
