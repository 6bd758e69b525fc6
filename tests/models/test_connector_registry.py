"""A new connector kind is one file: this one defines, registers and uses `pooled_linear` here alone.

`PooledLinear` and `build_pooled_linear` below are the example in docs/recipes.md ("Adding a
connector"); nothing in radgen/ knows the kind. The tests build radgen-small at tiny size with
`model.connector.kind=pooled_linear`, train a step, generate, save and reload it.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest
import torch
from torch import nn

from radgen.config import ConnectorConfig
from radgen.errors import ConfigError
from radgen.models import ReportGenerator
from radgen.models.connectors import CONNECTORS, Connector, ConnectorWidths, build_connector, register_connector
from radgen.models.sources import SourceCache
from tests.models.conftest import REPORTS, pixels, tiny


# --- the whole new kind (docs/recipes.md shows this code) ---------------------------------------
class PooledLinear(Connector):
    """Average-pool the encoder tokens into `num_tokens` groups, then one linear map to the decoder width."""

    def __init__(self, in_width: int, out_width: int, num_tokens: int):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool1d(num_tokens)
        self.proj = nn.Linear(in_width, out_width)

    def num_tokens(self, encoder_tokens: int) -> int:
        return self.pool.output_size

    def forward(self, features: torch.Tensor) -> torch.Tensor:  # (B, N, D) -> (B, num_tokens, H)
        pooled = self.pool(features.to(self.proj.weight.dtype).transpose(1, 2)).transpose(1, 2)
        return self.proj(pooled)


@register_connector("pooled_linear")
def build_pooled_linear(cfg: ConnectorConfig, widths: ConnectorWidths, sources: SourceCache) -> PooledLinear:
    return PooledLinear(widths.encoder, widths.decoder, cfg.num_tokens)
# -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pooled():
    return tiny("radgen-small", "model.connector.kind=pooled_linear", "model.connector.num_tokens=3")


def test_recipe_builds_the_registered_kind(pooled):
    assert type(pooled.connector) is PooledLinear
    assert pooled.num_visual_tokens == 3
    assert pooled.connector.proj.in_features == pooled.encoder.hidden_size
    assert pooled.connector.proj.out_features == pooled.decoder.get_input_embeddings().embedding_dim


def test_its_tokens_feed_the_loss_and_train(pooled):
    """The decoder reads the new connector's output: its weights get gradients and changing them moves the logits."""
    pooled.set_trainable(pooled.recipe.stages[0].train)  # radgen-small's stage trains `connector`
    batch = pooled.tokenize_reports(REPORTS)
    px = pixels(pooled)
    pooled.train()
    out = pooled(**batch, pixel_values=px)
    assert out.logits.shape[1] == 3 + batch["input_ids"].shape[1]
    pooled.zero_grad()
    out.loss.backward()
    grad = pooled.connector.proj.weight.grad
    assert grad is not None and grad.abs().sum() > 0
    pooled.zero_grad()
    pooled.eval()
    with torch.no_grad():
        before = pooled(**batch, pixel_values=px).logits
        saved = pooled.connector.proj.bias.clone()
        pooled.connector.proj.bias.add_(1.0)
        after = pooled(**batch, pixel_values=px).logits
        pooled.connector.proj.bias.copy_(saved)
    text = slice(pooled.num_visual_tokens, None)  # report positions: they see the visual tokens
    assert not torch.allclose(before[:, text], after[:, text])


def test_it_generates(pooled):
    reports = pooled.generate(pixel_values=pixels(pooled), num_beams=1, max_new_tokens=4)
    assert len(reports) == 2 and all(len(r.token_ids) <= 4 for r in reports)


def test_save_and_reload_keep_its_weights(pooled, tmp_path):
    pooled.save_pretrained(str(tmp_path / "model"))
    loaded = ReportGenerator.from_pretrained(str(tmp_path / "model"))
    assert type(loaded.connector) is PooledLinear
    assert torch.equal(loaded.connector.proj.weight, pooled.connector.proj.weight)


def test_unknown_kind_lists_the_registered_ones():
    with pytest.raises(ConfigError) as err:
        build_connector(ConnectorConfig(kind="no_such_kind"), 8, 8, None, SourceCache())
    message = str(err.value)
    assert "\n" not in message and "model.connector.kind 'no_such_kind' is unknown" in message
    assert message.endswith(", ".join(CONNECTORS.kinds()))
    for kind in ("qformer", "mlp", "mapping_layer", "prefix_mapper", "cross_attention", "pooled_linear"):
        assert kind in CONNECTORS.kinds()


def test_a_kind_name_cannot_be_taken_twice():
    register_connector("pooled_linear")(build_pooled_linear)  # the same builder again is harmless
    with pytest.raises(ValueError, match="already registered by .*build_pooled_linear"):
        register_connector("pooled_linear")(lambda cfg, widths, sources: PooledLinear(1, 1, 1))


def test_unregistered_kind_is_unknown_again():
    register_connector("short_lived")(build_pooled_linear)
    assert "short_lived" in CONNECTORS
    CONNECTORS.unregister("short_lived")
    assert "short_lived" not in CONNECTORS.kinds()
    with pytest.raises(ConfigError, match="'short_lived' is unknown"):
        build_connector(ConnectorConfig(kind="short_lived"), 8, 8, None, SourceCache())


def test_docs_show_this_code():
    """docs/recipes.md's "Adding a connector" example is this file's code, so the two cannot drift."""
    doc = (Path(__file__).resolve().parents[2] / "docs" / "recipes.md").read_text()
    section = doc.split("## Adding a connector", 1)[1].split("\n## ", 1)[0]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert inspect.getsource(PooledLinear) in code
    assert inspect.getsource(build_pooled_linear) in code
    exec(compile(code.replace('"pooled_linear"', '"pooled_linear_from_docs"'), "recipes.md", "exec"), {})  # it runs as shown
    try:
        assert "pooled_linear_from_docs" in CONNECTORS
    finally:
        CONNECTORS.unregister("pooled_linear_from_docs")
