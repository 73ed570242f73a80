"""dermvqa.eval: benchmark runner with stratified, reproducible reports (`run_eval`, `dermvqa eval`)."""
from dermvqa.eval.runner import run_eval

__all__ = ["run_eval"]
