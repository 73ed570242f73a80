"""Vision tower (DermLIP conversion), projector and LLM joined into a standard LLaVA; the tiny test model."""
