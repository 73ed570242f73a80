"""QA records -> chat turns -> token ids with labels on assistant turns only, images -> pixel tensors."""
