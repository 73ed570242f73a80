"""dermvqa: dermatology visual question answering on a LLaVA-style DermLIP + LLM stack."""

__version__ = "0.1.0"
