"""dermvqa: dermatology visual question answering on a LLaVA-style DermLIP + LLM stack.

Importing the package sets OMP_WAIT_POLICY=PASSIVE (unless the environment sets it) before torch is
loaded: torch's OpenMP threads otherwise spin at every barrier, and beside one other CPU-bound process a
spinning thread burns the core its partner needs, which slowed CPU training about 9x on two cores.
"""
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
