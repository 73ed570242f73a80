import pytest
import torch

from data_gen.synthetic_world import CONDITIONS, render
from dermvqa.infer.generate import load_model
from dermvqa.train.tower_pretrain import pretrain_tower, sampling_weights


def _records(tmp_path, n=16, n_classes=2):
    recs = []
    for i in range(n):
        c = CONDITIONS[i % n_classes]
        render(c, 2, 64, seed=i).save(tmp_path / f"{i}.png")
        recs.append({"image": f"{i}.png", "family": "diagnosis", "label": c.label})
    return recs


def test_tower_learns_to_separate_conditions_and_only_the_tower_changes(tiny_model_dir, tmp_path):
    model, processor = load_model(tiny_model_dir, device="cpu")
    before_llm = model.model.language_model.layers[0].mlp.up_proj.weight.clone()
    before_tower = model.model.vision_tower.embeddings.patch_embedding.weight.clone()
    losses = pretrain_tower(model, processor, _records(tmp_path), tmp_path, steps=40, lr=2e-3, batch_size=8)
    assert sum(losses[-5:]) / 5 < 0.5 * losses[0]
    assert torch.equal(before_llm, model.model.language_model.layers[0].mlp.up_proj.weight)
    assert not torch.equal(before_tower, model.model.vision_tower.embeddings.patch_embedding.weight)


def test_one_label_is_an_error(tiny_model_dir, tmp_path):
    model, processor = load_model(tiny_model_dir, device="cpu")
    with pytest.raises(ValueError, match="at least two labels"):
        pretrain_tower(model, processor, _records(tmp_path, 4, 1), tmp_path, steps=1, lr=1e-3)


def test_skin_type_balance_gives_every_type_the_same_share_and_keeps_class_balance():
    classes = torch.tensor([0, 0, 0, 0, 0, 0, 1, 1])
    types = torch.tensor([1, 1, 1, 1, 2, 5, 5, 0])   # 0 = unknown, one group of its own
    w = sampling_weights(classes, types, balance=0.0, skin_type_balance=1.0)
    share = {int(t): float(w[types == t].sum() / w.sum()) for t in types.unique()}
    assert share == pytest.approx({0: 0.25, 1: 0.25, 2: 0.25, 5: 0.25})
    both = sampling_weights(classes, types, balance=1.0, skin_type_balance=1.0)
    assert both[0] == pytest.approx(1 / 6 / 4) and both[7] == pytest.approx(1 / 2 / 1)
    assert torch.equal(sampling_weights(classes, types, 0.0, 0.0), torch.ones(8))
