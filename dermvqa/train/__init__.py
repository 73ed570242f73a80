"""Recipes and the training job: stage 0-2, LoRA/QLoRA, DeepSpeed, resume, export."""
