"""Stage-3 DPO with TRL: the loss equals a hand computation from policy and reference log-probabilities, and the
trained adapter exports to a folder plain transformers loads and that answers as dermvqa does."""
import json
import signal
import time

import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from transformers import AutoProcessor, LlavaForConditionalGeneration

from data_gen.synthetic_world import CONDITIONS, render
from dermvqa.train.checkpoints import MARKER
from dermvqa.train.dpo import build_trainer, run_dpo
from dermvqa.train.recipe import load_recipe
from tests.conftest import REPO
from tests.train.tiny_run import cli, losses

QUESTION = "What is the most likely diagnosis?"
LN2 = 0.6931472  # the DPO loss while the policy equals the reference (LoRA B starts at zero)
SIGMOID = ("train.dpo.loss_type=sigmoid", "train.dpo.loss_weights=null")  # plain DPO (the recipes add the sft term)


@pytest.fixture(scope="module")
def pairs_world(tmp_path_factory):
    """Six images of three conditions, each with one pair: its own name chosen, the next condition's rejected."""
    root = tmp_path_factory.mktemp("dpo_world")
    (root / "images").mkdir()
    lines = []
    for i in range(6):
        c, other = CONDITIONS[i % 3], CONDITIONS[(i + 1) % 3]
        render(c, 3, 32, seed=i).save(root / "images" / f"{i}.png")
        lines.append({"id": f"p{i}", "image": f"{i}.png", "rule": "ontology_cousin",
                      "prompt": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": QUESTION}]}],
                      "chosen": [{"role": "assistant", "content": c.label}],
                      "rejected": [{"role": "assistant", "content": other.label}]})
    (root / "pairs.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    return root


def dpo_recipe(world, model_dir, out, *extra):
    return load_recipe(REPO / "configs" / "tiny_cpu_dpo.yaml", [
        f"model.path={model_dir}", f"data.pairs={world / 'pairs.jsonl'}", f"data.image_root={world / 'images'}",
        f"train.output_dir={out}", "train.batch_size=2", "train.logging_steps=1", "train.save_steps=1000", *extra])


def sequence_logp(model, processor, image, answer):
    """log p(answer + end of turn | image, question), from the prompt length the processor gives on its own."""
    user = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": QUESTION}]}]
    prompt = processor.apply_chat_template(user, add_generation_prompt=True, tokenize=False)
    full = processor.apply_chat_template(user + [{"role": "assistant", "content": answer}], tokenize=False)
    p_ids = processor(images=image, text=prompt, add_special_tokens=False, return_tensors="pt")["input_ids"][0]
    batch = processor(images=image, text=full, add_special_tokens=False, return_tensors="pt")
    ids = batch["input_ids"][0]
    assert torch.equal(ids[:len(p_ids)], p_ids)
    logits = model(**batch).logits[0].float()
    logp = F.log_softmax(logits[:-1], dim=-1).gather(1, ids[1:, None])[:, 0]
    return logp[len(p_ids) - 1:].sum(), len(ids) - len(p_ids)


@pytest.mark.parametrize("with_sft", [False, True], ids=["sigmoid", "sigmoid+sft"])
def test_dpo_loss_equals_hand_computation(pairs_world, tiny_model_dir, tmp_path, with_sft):
    """DPO's sigmoid loss; with `loss_type: [sigmoid, sft]` (RPO) plus the mean NLL of the chosen answers' tokens."""
    extra = ["train.dpo.loss_type=[sigmoid, sft]", "train.dpo.loss_weights=[1.0, 0.5]"] if with_sft else list(SIGMOID)
    trainer, counts = build_trainer(dpo_recipe(pairs_world, tiny_model_dir, tmp_path / "run", *extra))
    assert counts["pairs_used"] == 6 and counts["pairs_skipped"]["count"] == 0
    model = trainer.model
    torch.manual_seed(0)
    with torch.no_grad():  # LoRA B starts at zero (policy == reference); move the policy away from it
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.2)
    model.eval()
    rows = [trainer.train_dataset[i] for i in range(2)]
    batch = trainer.data_collator(rows)
    with torch.no_grad():
        loss = trainer.compute_loss(model, batch)
    processor = trainer.processing_class
    image_id = processor.tokenizer.convert_tokens_to_ids(processor.image_token)
    assert not (batch["completion_mask"].bool() & (batch["input_ids"] == image_id)).any()
    answers = {json.loads(x)["id"]: json.loads(x) for x in (pairs_world / "pairs.jsonl").read_text().splitlines()}
    margins, chosen_logp, chosen_tokens = [], 0.0, 0
    with torch.no_grad():
        for k, row in enumerate(rows):
            pair = answers[row["id"]]
            image = Image.open(pairs_world / "images" / pair["image"]).convert("RGB")
            (pc, nc), (pr, nr) = (sequence_logp(model, processor, image, pair[s][0]["content"])
                                  for s in ("chosen", "rejected"))
            assert batch["completion_mask"][k].sum() == nc and batch["completion_mask"][2 + k].sum() == nr
            chosen_logp, chosen_tokens = chosen_logp + pc, chosen_tokens + nc
            with model.disable_adapter():  # the reference policy: the same weights without the adapter
                (rc, _), (rr, _) = (sequence_logp(model, processor, image, pair[s][0]["content"])
                                    for s in ("chosen", "rejected"))
            margins.append((pc - rc) - (pr - rr))
    expected = torch.stack([-F.logsigmoid(0.1 * m) for m in margins]).mean()
    assert abs(expected.item() - LN2) > 1e-3  # the policy really differs
    if with_sft:
        expected = expected + 0.5 * (-chosen_logp / chosen_tokens)
    assert loss.item() == pytest.approx(expected.item(), abs=1e-5)


def test_trained_adapter_exports_to_plain_llava_that_answers_as_dermvqa(pairs_world, tiny_model_dir, tmp_path):
    from dermvqa.infer.generate import answer_batch, load_model
    from dermvqa.train.export import export

    out = tmp_path / "run"
    final = run_dpo(dpo_recipe(pairs_world, tiny_model_dir, out, "train.max_steps=3", "train.lr=0.05"))
    log = json.loads((out / "train_log.json").read_text())
    assert [e["step"] for e in log if "loss" in e] == [1, 2, 3]
    assert (final / "adapter_config.json").is_file() and not list(final.glob("*.bin"))
    exported = export(final, tmp_path / "export")
    model = LlavaForConditionalGeneration.from_pretrained(exported).eval()
    processor = AutoProcessor.from_pretrained(exported)
    stage2 = LlavaForConditionalGeneration.from_pretrained(tiny_model_dir)
    changed = [n for n, p in model.named_parameters() if not torch.equal(p, stage2.get_parameter(n))]
    assert changed and all("language_model" in n for n in changed)  # LoRA on the LLM only, merged
    images = [Image.open(pairs_world / "images" / f"{i}.png").convert("RGB") for i in range(3)]
    plain = []
    for image in images:
        text = processor.apply_chat_template([{"role": "user", "content": [{"type": "image"},
                                                                           {"type": "text", "text": QUESTION}]}],
                                             add_generation_prompt=True, tokenize=False)
        batch = processor(images=image, text=text, add_special_tokens=False, return_tensors="pt")
        ids = model.generate(**batch, max_new_tokens=8, do_sample=False)
        plain.append(processor.decode(ids[0, batch["input_ids"].shape[1]:], skip_special_tokens=True).strip())
    dermvqa_model, dermvqa_processor = load_model(final, device="cpu")  # the adapter folder, merged on load
    assert answer_batch(dermvqa_model, dermvqa_processor, images, [QUESTION] * 3, max_new_tokens=8) == plain


def _dpo_cli(world, model_dir, out, *extra, resume=False):
    args = ["train", str(REPO / "configs" / "tiny_cpu_dpo.yaml"), f"model.path={model_dir}",
            f"data.pairs={world / 'pairs.jsonl'}", f"data.image_root={world / 'images'}", f"train.output_dir={out}",
            "train.batch_size=2", "train.logging_steps=1", "train.lr=0.05", *extra]
    return cli(args + (["--resume"] if resume else []))


def test_kill9_then_resume_gives_the_same_curve(pairs_world, tiny_model_dir, tmp_path):
    extra = ("train.epochs=6", "train.save_steps=4", "train.save_total_limit=3", *SIGMOID)  # 3 steps an epoch: 18
    victim = _dpo_cli(pairs_world, tiny_model_dir, tmp_path / "victim", *extra)
    marker = tmp_path / "victim" / "checkpoints" / "checkpoint-8" / MARKER
    deadline = time.time() + 300
    while not marker.exists():
        assert victim.poll() is None, "run ended before it could be killed:\n" + victim.communicate()[0][-3000:]
        assert time.time() < deadline, "no complete checkpoint-8 within 300 s"
        time.sleep(0.01)
    victim.send_signal(signal.SIGKILL)
    victim.communicate(timeout=60)
    ref = _dpo_cli(pairs_world, tiny_model_dir, tmp_path / "ref", *extra)
    assert ref.wait(timeout=600) == 0, ref.communicate()[0][-3000:]
    assert not (tmp_path / "victim" / "model").exists()
    resumed = _dpo_cli(pairs_world, tiny_model_dir, tmp_path / "victim", *extra, resume=True)
    out = resumed.communicate(timeout=600)[0]
    assert resumed.returncode == 0 and "resuming from" in out, out[-3000:]
    ref_curve, got = (losses(json.loads((tmp_path / n / "train_log.json").read_text())) for n in ("ref", "victim"))
    assert sorted(got) == sorted(ref_curve) == list(range(1, 19))
    assert all(abs(ref_curve[k] - LN2) > 1e-3 for k in range(3, 19)), ref_curve  # step 2: warm-up lr 0
    for step, loss in ref_curve.items():
        assert abs(got[step] - loss) < 1e-5, (step, got[step], loss)


def test_zero2_in_one_process_matches_plain(pairs_world, tiny_model_dir, tmp_path):
    curves = {}
    for name, ds in (("plain", "null"), ("zero2", str(REPO / "configs" / "deepspeed" / "zero2.json"))):
        run = _dpo_cli(pairs_world, tiny_model_dir, tmp_path / name, "train.epochs=2", "train.save_steps=3",
                       f"train.deepspeed={ds}")
        out = run.communicate(timeout=600)[0]
        assert run.returncode == 0, out[-3000:]
        curves[name] = losses(json.loads((tmp_path / name / "train_log.json").read_text()))
    assert sorted(curves["plain"]) == sorted(curves["zero2"]) == list(range(1, 7))
    assert curves["plain"][6] < curves["plain"][1], curves  # the policy moved (the recipe's loss: sigmoid + sft)
    for step, loss in curves["plain"].items():
        assert abs(curves["zero2"][step] - loss) < 1e-4, (step, curves["zero2"][step], loss)
    assert (tmp_path / "zero2" / "checkpoints" / "checkpoint-3" / "global_step3").is_dir()  # through the engine


def test_two_ranks_under_zero2_match_one_process(pairs_world, tiny_model_dir, tmp_path):
    """torchrun, 2 ranks x 1 pair (gloo on the CPU) against 1 process x 2 pairs, both in DeepSpeed ZeRO-2: the
    same loss at every step and the same adapter (rank 0 alone writes it). Plain sigmoid: the recipes' sft term is
    averaged over each rank's own chosen tokens, which two ranks split differently from one process."""
    from tests.train.test_multiprocess import adapter, torchrun

    zero2 = f"train.deepspeed={REPO / 'configs' / 'deepspeed' / 'zero2.json'}"
    one = _dpo_cli(pairs_world, tiny_model_dir, tmp_path / "one", "train.epochs=2", "train.save_steps=100", zero2,
                   *SIGMOID)
    out = one.communicate(timeout=600)[0]
    assert one.returncode == 0, out[-3000:]
    args = ["train", str(REPO / "configs" / "tiny_cpu_dpo.yaml"), f"model.path={tiny_model_dir}",
            f"data.pairs={pairs_world / 'pairs.jsonl'}", f"data.image_root={pairs_world / 'images'}",
            f"train.output_dir={tmp_path / 'two'}", "train.batch_size=1", "train.logging_steps=1", "train.lr=0.05",
            "train.epochs=2", "train.save_steps=100", zero2, *SIGMOID]
    assert torchrun(args).count("DPO from") == 1  # rank 0 alone reports
    ref, two = (losses(json.loads((tmp_path / n / "train_log.json").read_text())) for n in ("one", "two"))
    assert sorted(ref) == sorted(two) == list(range(1, 7))
    assert all(abs(ref[k] - LN2) > 1e-3 for k in range(3, 7)), ref  # the policy moved
    assert all(abs(ref[k] - two[k]) < 1e-4 for k in ref), (ref, two)
    a, b = adapter(tmp_path / "one"), adapter(tmp_path / "two")
    assert a.keys() == b.keys()
    # the ranks' all-reduce sums the gradient in another order; Adam at lr 0.05 turns that rounding into ~1e-4
    # absolute differences after 6 steps, so the weights agree to 1e-3 of their size (the losses to 1e-4)
    size = max(a[k].abs().max().item() for k in a)
    assert size > 0.01 and max((a[k] - b[k]).abs().max().item() for k in a) < 1e-3 * size
