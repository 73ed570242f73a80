"""Torch dataset over QA records: loads the image and tokenizes the conversation for one record."""
from __future__ import annotations

from pathlib import Path

from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from dermvqa.data.conversation import record_messages, tokenize_chat
from dermvqa.model.processor import image_seq_length, image_side


class QADataset(Dataset):
    """`records` are QARecord dicts; `image_root` joins with each record's relative `image`.

    With `cache=True` pixel tensors (per image) and token ids (per record id) are kept in memory
    after first use: right for small corpora trained over several epochs, wrong for Derm1M-scale.
    """

    def __init__(self, records: list[dict], image_root: str | Path, processor, max_length: int = 512,
                 cache: bool = False):
        self.records, self.image_root, self.max_length = records, Path(image_root), max_length
        self.cache = {} if cache else None
        self.tokenizer = processor.tokenizer
        self.image_processor = processor.image_processor
        self.chat_template = processor.chat_template
        self.image_token = processor.image_token
        self.n_image = _image_seq_length(processor)

    def __len__(self):
        return len(self.records)

    def load_image(self, rec: dict) -> Image.Image:
        path = self.image_root / rec["image"]
        try:
            with Image.open(path) as im:
                return im.convert("RGB")
        except FileNotFoundError:
            raise FileNotFoundError(f"record {rec['id']}: image file not found: {path}") from None
        except (UnidentifiedImageError, OSError) as e:
            raise ValueError(f"record {rec['id']}: image file {path} is not a readable image ({e})") from None

    def __getitem__(self, i: int) -> dict:
        rec = self.records[i]
        tokens = self._cached(("tokens", rec["id"]), lambda: self._tokens(rec))
        pixels = self._cached(("pixels", rec["image"]), lambda: self._pixels(rec))
        return {**tokens, "pixel_values": pixels}

    def _cached(self, key, make):
        if self.cache is None:
            return make()
        if key not in self.cache:
            self.cache[key] = make()
        return self.cache[key]

    def _tokens(self, rec: dict) -> dict:
        ids, labels = tokenize_chat(record_messages(rec), self.tokenizer, self.chat_template,
                                    self.image_token, self.n_image, self.max_length)
        return {"input_ids": ids, "labels": labels}

    def _pixels(self, rec: dict):
        return self.image_processor(images=self.load_image(rec), return_tensors="pt")["pixel_values"][0]


def _image_seq_length(processor) -> int:
    return image_seq_length(image_side(processor.image_processor), processor.patch_size,
                            processor.vision_feature_select_strategy, processor.num_additional_image_tokens > 0)
