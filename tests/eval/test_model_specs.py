"""`--model` specs that name no model dermvqa can run get one error naming what is wrong: an unknown backend
prefix is not taken for a missing folder, and a text-only LLM under hf: is not taken for an untested family."""
import pytest
from typer.testing import CliRunner

from dermvqa.cli import app
from dermvqa.eval.backends import split_spec


@pytest.mark.parametrize("spec", ["bogus:/models/x", "bogus://host/model", "my-backend:model", "bogus:"])
def test_an_unknown_backend_is_named(spec, qa_world, tmp_path):
    result = CliRunner().invoke(app, ["eval", "--model", spec, "--bench", f"qa:{qa_world}", "--out", str(tmp_path)])
    assert result.exit_code == 2 and f"unknown backend '{spec.partition(':')[0]}'" in result.stderr
    assert not (tmp_path / "run.json").exists()


def test_a_folder_whose_name_has_a_colon_is_still_a_folder(tmp_path):
    folder = tmp_path / "run:2"
    folder.mkdir()
    assert split_spec(str(folder)) == ("llava", str(folder))
    assert split_spec("C:\\models\\x") == ("llava", "C:\\models\\x")      # a Windows drive, not a backend


@pytest.mark.parametrize("allow_untested", [False, True])
def test_a_text_only_llm_under_hf_is_not_an_image_text_to_text_model(tmp_path, allow_untested):
    from transformers import LlamaConfig

    from dermvqa.eval.backends.hf import HFAdapter

    LlamaConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                vocab_size=64).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"not an image-text-to-text model \(model_type 'llama'"):
        HFAdapter(f"hf:{tmp_path}", device="cpu", allow_untested=allow_untested)
