"""Torch dataset over QA records: loads the image and tokenizes the conversation for one record.

A record that cannot be a training example (an unreadable image, a conversation longer than
max_length) is logged through a `SkipLog` and replaced by the next usable record, so batches keep
their size and a resumed run makes the same substitutions.
"""
from __future__ import annotations

from pathlib import Path

from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from dermvqa.data.conversation import TooLong, record_messages, tokenize_chat
from dermvqa.data.skips import SkipLog
from dermvqa.model.processor import tokens_per_image


class UnreadableImage(ValueError):
    """An image file that exists but does not decode."""


class QADataset(Dataset):
    """`records` are QARecord dicts; `image_root` joins with each record's relative `image`.

    With `cache=True` pixel tensors (per image) and token ids (per record id) are kept in memory
    after first use: right for small corpora trained over several epochs, wrong for Derm1M-scale.
    """

    def __init__(self, records: list[dict], image_root: str | Path, processor, max_length: int = 512,
                 cache: bool = False, skip_log: SkipLog | None = None):
        self.records, self.image_root, self.max_length = records, Path(image_root), max_length
        self.skip_log = skip_log or SkipLog(None, len(records))  # without a log the first bad record is an error
        self.cache = {} if cache else None
        self.tokenizer = processor.tokenizer
        self.image_processor = processor.image_processor
        self.chat_template = processor.chat_template
        self.image_token = processor.image_token
        self.n_image = tokens_per_image(processor)

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
            raise UnreadableImage(f"record {rec['id']}: image file {path} is not a readable image ({e})") from None

    def __getitem__(self, i: int) -> dict:
        for k in range(len(self.records)):  # an unusable record is logged and replaced by the next one
            rec = self.records[(i + k) % len(self.records)]
            try:
                tokens = self._cached(("tokens", rec["id"]), lambda: self._tokens(rec))
                pixels = self._cached(("pixels", rec["image"]), lambda: self._pixels(rec))
                return {**tokens, "pixel_values": pixels}
            except (TooLong, UnreadableImage, FileNotFoundError) as e:
                kind = "too long" if isinstance(e, TooLong) else "unreadable image"
                self.skip_log.add(rec, f"{kind}: {e}")
        raise RuntimeError("no record of this dataset can be used")

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
