"""CLI bodies for `dermvqa convert-dermlip`, `dermvqa convert-llava-original` and `dermvqa build` (heavy imports
happen inside)."""
from typing import Annotated

import typer


def convert_dermlip(
    src: Annotated[str, typer.Argument(help="open_clip DermLIP: 'hf-hub:redlessone/DermLIP_ViT-B-16', "
                                            "'hf-hub:redlessone/DermLIP_PanDerm-base-w-PubMed-256' or a folder "
                                            "with open_clip_config.json + weights")],
    out: Annotated[str, typer.Option(help="output folder (must not exist or be empty)")],
    allow_pickle: Annotated[bool, typer.Option(help="accept pickle .bin/.pt weights (files you trust)")] = False,
):
    """Convert DermLIP (open_clip) into a transformers vision tower + CLIPImageProcessor: CLIP for ViT-B/16, BEiT
    (plus its zero-shot head) for DermLIP-PanDerm."""
    from dermvqa.model.dermlip import convert_dermlip_cli

    convert_dermlip_cli(src, out, allow_pickle)


def convert_llava_original(
    src: Annotated[str, typer.Argument(help="a checkpoint folder in the original LLaVA code layout (LLaVA-Med v1.5, "
                                            "SkinVL, LLaVA-1.5): config.json with mm_projector_type mlp2x_gelu")],
    out: Annotated[str, typer.Option(help="output folder (must not exist or be empty)")],
    vision_tower: Annotated[str, typer.Option(help="CLIP vision tower folder or hub id when the checkpoint only "
                                                   "names it (default: its mm_vision_tower)")] = None,
    conv: Annotated[str, typer.Option(help="conversation format: mistral_instruct | vicuna_v1 (default: by the "
                                           "checkpoint's model_type)")] = None,
    allow_pickle: Annotated[bool, typer.Option(help="accept pickle .bin weights (files you trust)")] = False,
):
    """Convert an original-layout LLaVA checkpoint into a transformers LLaVA folder that hf: and llava: evaluate."""
    from dermvqa.model.convert_llava_original import convert_cli

    convert_cli(src, out, vision_tower, conv, allow_pickle)


def build(
    vision: Annotated[str, typer.Option(help="converted DermLIP folder, open_clip folder / hf-hub: id, or any "
                                             "HF CLIP/SigLIP (vision) model")],
    llm: Annotated[str, typer.Option(help="any HF causal LM folder or hub id (Qwen2.5, Llama-3, Mistral, Phi)")],
    out: Annotated[str, typer.Option(help="output folder for the LLaVA model + processor")],
    projector: Annotated[str, typer.Option(help="linear | mlp2x_gelu")] = "mlp2x_gelu",
    feature_layer: Annotated[int, typer.Option(help="vision hidden state fed to the projector")] = -2,
    dtype: Annotated[str, typer.Option(help="bfloat16 | float16 | float32")] = "bfloat16",
    chat_template: Annotated[str, typer.Option(help="own (the LLM's), chatml, or a .jinja file")] = "own",
    allow_pickle: Annotated[bool, typer.Option(help="accept pickle weights for an open_clip vision source")] = False,
    seed: Annotated[int, typer.Option(help="initialises the fresh projector (same seed: same weights)")] = 0,
):
    """Join a vision tower and an LLM with a fresh projector into a standard LLaVA folder."""
    from dermvqa.model.builder import build_cli

    build_cli(vision, llm, out, projector, feature_layer, dtype, chat_template, allow_pickle, seed)
