"""Chat template and LlavaProcessor assembly shared by the tiny builder and the real-LLM builder."""
from transformers import CLIPImageProcessor, LlavaProcessor

IMAGE_TOKEN = "<image>"

# ChatML, with an image content part rendered as the <image> placeholder on its own line.
CHATML_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<image>\n"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def clip_image_processor(image_size: int, mean=CLIP_MEAN, std=CLIP_STD) -> CLIPImageProcessor:
    """Resize the short side to image_size, centre-crop a square, normalise."""
    return CLIPImageProcessor(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size},
        do_center_crop=True, image_mean=list(mean), image_std=list(std), do_convert_rgb=True,
    )


def build_processor(image_processor, tokenizer, patch_size: int, chat_template: str,
                    strategy: str = "default", cls_token: bool = True) -> LlavaProcessor:
    """A processor whose `<image>` expands to exactly the number of features the tower emits."""
    if tokenizer.convert_tokens_to_ids(IMAGE_TOKEN) in (None, tokenizer.unk_token_id):
        raise ValueError(f"tokenizer has no {IMAGE_TOKEN} token; add it before building the processor")
    return LlavaProcessor(
        image_processor=image_processor, tokenizer=tokenizer, patch_size=patch_size,
        vision_feature_select_strategy=strategy, chat_template=chat_template,
        image_token=IMAGE_TOKEN, num_additional_image_tokens=1 if cls_token else 0,
    )


def tokens_per_image(processor) -> int:
    """How many image tokens one `<image>` of this LlavaProcessor stands for (training and chat expand it so)."""
    return image_seq_length(image_side(processor.image_processor), processor.patch_size,
                            processor.vision_feature_select_strategy, processor.num_additional_image_tokens > 0)


def image_side(image_processor) -> int:
    """Side of the square images a processor makes: its centre crop (CLIP) or, without one, its resize (SigLIP)."""
    size = image_processor.crop_size if getattr(image_processor, "do_center_crop", False) else image_processor.size
    height, width = size.get("height"), size.get("width")
    if height is None or height != width:
        raise ValueError(f"image processor makes no fixed square images: resize {image_processor.size}, "
                         f"centre crop {getattr(image_processor, 'crop_size', None) or 'none'}")
    return height


def image_seq_length(image_size: int, patch_size: int, strategy: str = "default", cls_token: bool = True) -> int:
    n = (image_size // patch_size) ** 2 + (1 if cls_token else 0)
    return n - 1 if strategy == "default" and cls_token else n
