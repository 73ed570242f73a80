"""Benchmarks and manual checks, one module each, run as `python -m dermvqa.bench.NAME` (`--help` says what it
measures); each prints its table. They read the real samples in ../shared/data beside the checkout (SHARED_DATA)
unless told other paths."""
from pathlib import Path

SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
