"""DermLIP conversion: open_clip ViT-B/16 (random weights) -> transformers CLIP tower, checked layer by layer."""
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

open_clip = pytest.importorskip("open_clip")

from dermvqa.model.dermlip import DermLIPError, convert_dermlip, save_converted  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
PAD_IMAGE = SHARED / "pad-ufes-20" / "examples" / "PAT_8_15_820.png"


def _open_clip_folder(tmp_path: Path, arch: str, preprocess_cfg: dict | None = None, seed: int = 0):
    """Random open_clip model saved like a hub checkpoint; every weight perturbed so no mapping hides."""
    torch.manual_seed(seed)
    model = open_clip.create_model(arch, pretrained=None).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    folder = tmp_path / arch
    folder.mkdir()
    save_file({k: v.contiguous().clone() for k, v in model.state_dict().items()},
              folder / "open_clip_model.safetensors")
    cfg = {"model_cfg": open_clip.get_model_config(arch), "preprocess_cfg": preprocess_cfg or {}}
    (folder / "open_clip_config.json").write_text(json.dumps(cfg))
    return model, folder


def _open_clip_states(model, pixels):
    """Embedding output (after ln_pre), every block's output, pooled (ln_post CLS) and the projected embedding."""
    visual, states = model.visual, []
    hooks = [visual.ln_pre.register_forward_hook(lambda m, i, o: states.append(o))]
    hooks += [b.register_forward_hook(lambda m, i, o: states.append(o)) for b in visual.transformer.resblocks]
    pooled = []
    hooks.append(visual.ln_post.register_forward_hook(lambda m, i, o: pooled.append(o[:, 0])))
    with torch.no_grad():
        embed = model.encode_image(pixels)
    for h in hooks:
        h.remove()
    return states, pooled[0], embed


@pytest.mark.parametrize("arch,act", [("ViT-B-16", "gelu"), ("ViT-B-16-quickgelu", "quick_gelu")])
def test_converted_tower_matches_open_clip(tmp_path, arch, act):
    model, folder = _open_clip_folder(tmp_path, arch)
    hf, processor = convert_dermlip(str(folder))
    assert hf.config.hidden_act == act
    assert (hf.config.image_size, hf.config.patch_size, hf.config.num_hidden_layers) == (224, 16, 12)
    pixels = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    ref_states, ref_pooled, ref_embed = _open_clip_states(model, pixels)
    with torch.no_grad():
        tower = hf.vision_model(pixel_values=pixels, output_hidden_states=True)
        embed = hf(pixel_values=pixels).image_embeds
    assert len(tower.hidden_states) == len(ref_states) == 13
    for i, (ours, ref) in enumerate(zip(tower.hidden_states, ref_states)):
        assert (ours - ref).abs().max().item() < 1e-4, f"hidden state {i} differs"
    assert (tower.pooler_output - ref_pooled).abs().max().item() < 1e-4
    assert (embed - ref_embed).abs().max().item() < 1e-4
    # the perturbation makes a wrong mapping visible: layers really differ from each other
    assert (tower.hidden_states[5] - tower.hidden_states[6]).abs().max().item() > 1e-2


def test_wrong_activation_would_be_caught(tmp_path):
    """Guard that the check above has teeth: forcing GELU on a QuickGELU checkpoint breaks equivalence."""
    model, folder = _open_clip_folder(tmp_path, "ViT-B-16-quickgelu")
    cfg = json.loads((folder / "open_clip_config.json").read_text())
    cfg["model_cfg"]["quick_gelu"] = False
    (folder / "open_clip_config.json").write_text(json.dumps(cfg))
    hf, _ = convert_dermlip(str(folder))
    pixels = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(2))
    _, ref_pooled, _ = _open_clip_states(model, pixels)
    with torch.no_grad():
        pooled = hf.vision_model(pixel_values=pixels).pooler_output
    assert (pooled - ref_pooled).abs().max().item() > 1e-3


def test_processor_and_save_roundtrip(tmp_path):
    from PIL import Image
    from transformers import AutoImageProcessor, CLIPVisionModel

    mean, std = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]
    model, folder = _open_clip_folder(tmp_path, "ViT-B-16", {"mean": mean, "std": std})
    hf, processor = convert_dermlip(str(folder))
    assert list(processor.image_mean) == mean and list(processor.image_std) == std
    out = save_converted(hf, processor, tmp_path / "converted", str(folder))
    assert (out / "model.safetensors").is_file() and not list(out.glob("*.bin"))
    tower = CLIPVisionModel.from_pretrained(out).eval()
    proc = AutoImageProcessor.from_pretrained(out)
    image = Image.open(PAD_IMAGE).convert("RGB")
    ours = proc(images=image, return_tensors="pt")["pixel_values"]
    _, _, transform = open_clip.create_model_and_transforms("ViT-B-16", pretrained=None, image_mean=mean,
                                                            image_std=std)
    ref = transform(image).unsqueeze(0)
    assert ours.shape == ref.shape == (1, 3, 224, 224)
    # PIL (open_clip) and torchvision (transformers) bicubic resamplers differ slightly at edges
    assert (ours - ref).abs().mean().item() < 0.02
    _, ref_pooled, _ = _open_clip_states(model, ref)
    with torch.no_grad():
        pooled = tower(pixel_values=ref).pooler_output
    assert (pooled - ref_pooled).abs().max().item() < 1e-4


def _folder_with(tmp_path, vision_cfg_extra=None, weights=True, weights_name="open_clip_model.safetensors"):
    folder = tmp_path / "src"
    folder.mkdir(exist_ok=True)
    cfg = {"embed_dim": 8, "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 16,
                                          **(vision_cfg_extra or {})}}
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg, "preprocess_cfg": {}}))
    if weights:
        torch.save({"visual.conv1.weight": torch.zeros(64, 3, 16, 16)}, folder / weights_name) \
            if weights_name.endswith(".bin") else save_file({"visual.conv1.weight": torch.zeros(64, 3, 16, 16)},
                                                            folder / weights_name)
    return folder


def test_bad_sources_give_clear_errors(tmp_path):
    with pytest.raises(DermLIPError, match="Derm1M repository's fork"):
        convert_dermlip(str(_folder_with(tmp_path, {"pretrain_path": "data/panderm-base-vit.pth"})))
    with pytest.raises(DermLIPError, match="ls_init_value"):
        convert_dermlip(str(_folder_with(tmp_path, {"ls_init_value": 0.1})))
    with pytest.raises(DermLIPError, match="missing weight visual.class_embedding"):
        convert_dermlip(str(_folder_with(tmp_path)))
    with pytest.raises(DermLIPError, match="no open_clip_config.json"):
        convert_dermlip(str(tmp_path))
    with pytest.raises(DermLIPError, match="not a folder"):
        convert_dermlip(str(tmp_path / "nope"))


def test_pickle_refused_unless_allowed(tmp_path):
    folder = _folder_with(tmp_path, weights_name="open_clip_pytorch_model.bin")
    with pytest.raises(DermLIPError, match="pickle weights"):
        convert_dermlip(str(folder))
    with pytest.raises(DermLIPError, match="missing weight"):  # loaded (weights_only) once allowed
        convert_dermlip(str(folder), allow_pickle=True)


def test_hub_source_downloads_config_and_safetensors_only(tmp_path, monkeypatch):
    import huggingface_hub

    _, folder = _open_clip_folder(tmp_path, "ViT-B-16")
    (folder / "open_clip_pytorch_model.bin").write_bytes(b"not used")
    fetched = []

    def download(repo, name):
        fetched.append((repo, name))
        return str(folder / name)

    monkeypatch.setattr(huggingface_hub, "list_repo_files", lambda repo: [p.name for p in folder.iterdir()])
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    hf, _ = convert_dermlip("hf-hub:redlessone/DermLIP_ViT-B-16")
    assert fetched == [("redlessone/DermLIP_ViT-B-16", "open_clip_config.json"),
                       ("redlessone/DermLIP_ViT-B-16", "open_clip_model.safetensors")]
    assert hf.config.num_hidden_layers == 12


def test_golden_check_script_runs_on_a_local_folder(tmp_path):
    """On random weights the reference cannot match (exit 1), but our tower must agree with open_clip's."""
    import subprocess
    import sys

    _, folder = _open_clip_folder(tmp_path, "ViT-B-16")
    run = subprocess.run([sys.executable, "-m", "dermvqa.bench.check_dermlip_golden", str(folder)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 1, run.stdout + run.stderr
    rows = [line.split() for line in run.stdout.splitlines() if line.split() and line.split()[-1][:1] in "0123456789"
            and len(line.split()) >= 4 and not line.startswith("max")]
    assert len(rows) == 6
    for row in rows:
        assert abs(float(row[-1]) - float(row[-2])) < 0.02  # ours vs open_clip's own tower
