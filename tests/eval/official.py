"""Benchmark files written in their authors' released schema, with the traps of the real releases, at the
official item counts (content is synthetic: the real SLAKE, VQA-RAD and MM-Skin files are not in ../shared)."""
import csv
import json
from pathlib import Path

from PIL import Image


def image(path: Path, colour=(150, 90, 70)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (24, 20), colour).save(path)
    return path


def write_csv(path: Path, header: list[str], rows: list[list]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


SLAKE_EN = [("Is this a CT image?", "Yes", "CLOSED", "Modality"), ("Does the picture contain liver?", "No", "CLOSED",
            "Organ"), ("Which is the biggest in this image, lung, liver or heart?", "Liver", "CLOSED", "Size"),
            ("Which organ is abnormal?", "Lung", "CLOSED", "Organ"), ("What modality is used?", "CT", "OPEN",
            "Modality"), ("Where is the liver?", "Left", "OPEN", "Position")]
SLAKE_ZH = [("这是CT图像吗?", "是", "CLOSED", "Modality"), ("图中有肝脏吗?", "没有", "CLOSED", "Organ"),
            ("哪个最大，肺、肝还是心脏？", "肝", "CLOSED", "Size"), ("这是什么模态?", "CT", "OPEN", "Modality")]


def slake(root: Path, n_en: int = 1061, n_zh: int = 1033, n_images: int = 8) -> Path:
    """Slake1.0/test.json (fields as released) + imgs/xmlabN/source.jpg for the first n_images image ids."""
    entries = []
    for qid in range(n_en + n_zh):
        lang = "en" if qid < n_en else "zh"
        q, a, kind, content = (SLAKE_EN if lang == "en" else SLAKE_ZH)[qid % (6 if lang == "en" else 4)]
        img_id = qid % 96
        entries.append({"img_id": img_id, "img_name": f"xmlab{img_id}/source.jpg", "question": q, "answer": a,
                        "q_lang": lang, "location": "Abdomen", "modality": "CT", "answer_type": kind,
                        "base_type": "vqa", "content_type": content, "triple": ["vhead", "_", "_"], "qid": qid})
    root.mkdir(parents=True, exist_ok=True)
    (root / "test.json").write_text(json.dumps(entries, ensure_ascii=False), encoding="utf-8")
    for i in range(n_images):
        image(root / "imgs" / f"xmlab{i}" / "source.jpg")
    return root / "test.json"


def vqa_rad(root: Path, n: int = 2248, n_test: int = 451) -> Path:
    """`VQA_RAD Dataset Public.json`: phrase_type splits, integer answers, "CLOSED " with a trailing space."""
    entries = []
    for qid in range(n):
        phrase = ("test_freeform" if qid % 2 else "test_para") if qid < n_test else ("freeform" if qid % 2 else "para")
        kind, q, a = [("CLOSED", "Is there a fracture?", "No"), ("OPEN", "How many lesions are there?", 2),
                      ("CLOSED", "Is the mass on the left or right?", "Left"),
                      ("OPEN", "What organ is shown?", "Brain")][qid % 4]
        entries.append({"qid": qid, "phrase_type": phrase, "qid_linked_id": f"03f451ca-{qid}",
                        "image_case_url": "https://medpix.nlm.nih.gov/case?id=x", "image_name": f"synpic{qid % 40}.jpg",
                        "image_organ": "HEAD", "evaluation": "not evaluated", "question": q,
                        "question_rephrase": "NULL", "question_relation": "NULL", "question_frame": "NULL",
                        "question_type": "PRES", "answer": a, "answer_type": kind})
    for qid in (2156, 2157):
        if qid < n:
            entries[qid]["answer_type"] = "CLOSED "
    root.mkdir(parents=True, exist_ok=True)
    (root / "VQA_RAD Dataset Public.json").write_text(json.dumps(entries), encoding="utf-8")
    for i in range(4):
        image(root / "VQA_RAD Image Folder" / f"synpic{i}.jpg")
    return root / "VQA_RAD Dataset Public.json"


def mmskin(root: Path, n: int = 5452, n_yes_no: int = 1323) -> Path:
    """MM-Skin_test.csv (image,question,answer) with `dataset/` image paths, yes/no-led and free-text answers."""
    rows = []
    for i in range(n):
        img = f"dataset/SCIN/images/img{i % 30}.png"
        if i < n_yes_no:
            rows.append([img, "Is there any scaling on the lesion?",
                         ("Yes, fine white scale covers" if i % 2 else "No, the surface is smooth over") +
                         " the plaque."])
        else:
            rows.append([img, "Describe the lesion.", "An erythematous plaque with a raised border on the forearm."])
    for i in range(5):
        image(root / "dataset" / "SCIN" / "images" / f"img{i}.png")
    return write_csv(root / "MM-Skin_test.csv", ["image", "question", "answer"], rows)


def reddit(root: Path) -> Path:
    """A DermaVQA reddit file as released: encounters whose query and responses are left empty."""
    entries = [{"encounter_id": f"ENC0{i}", "author_id": "", "image_ids": [f"IMG_ENC0{i}_00001.jpg"],
                "query_title_en": "", "query_content_en": "", "responses": [{"author_id": "", "content_en": ""}]}
               for i in range(3)]
    (root / "reddit").mkdir(parents=True, exist_ok=True)
    (root / "reddit" / "valid.json").write_text(json.dumps(entries), encoding="utf-8")
    return root / "reddit" / "valid.json"
