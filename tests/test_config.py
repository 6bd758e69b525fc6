import pytest

from radgen.config import RecipeConfig, apply_overrides, from_dict, load_recipe, parse_override
from radgen.errors import ConfigError


def test_from_dict_builds_nested_sections():
    recipe = from_dict(RecipeConfig, {"name": "x", "model": {"decoder": {"name": "gpt2"}}, "stages": [{"name": "s1", "train": ["connector"]}]})
    assert recipe.model.decoder.name == "gpt2"
    assert recipe.stages[0].train == ["connector"]
    assert recipe.train.optim.lr == 1e-4  # default kept


def test_unknown_key_names_key_and_suggests():
    with pytest.raises(ConfigError, match=r"unknown key 'nme'.*did you mean 'name'"):
        from_dict(RecipeConfig, {"model": {"decoder": {"nme": "gpt2"}}})


def test_wrong_type_is_reported_with_path():
    with pytest.raises(ConfigError, match=r"config.train.batch_size: expected an integer"):
        from_dict(RecipeConfig, {"train": {"batch_size": "eight"}})


@pytest.mark.parametrize("text,key,value", [
    ("train.optim.lr=1e-4", ["train", "optim", "lr"], 1e-4),
    ("model.peft.r=8", ["model", "peft", "r"], 8),
    ("model.peft.target_modules=[q_proj, k_proj]", ["model", "peft", "target_modules"], ["q_proj", "k_proj"]),
    ("train.max_grad_norm=null", ["train", "max_grad_norm"], None),
])
def test_parse_override(text, key, value):
    assert parse_override(text) == (key, value)


def test_apply_overrides_checks_keys_and_indexes_lists():
    data = {"stages": [{"name": "a"}, {"name": "b"}]}
    out = apply_overrides(data, ["stages.1.lr=0.5", "train.optim.lr=3e-4"])
    assert out["stages"][1]["lr"] == 0.5 and out["train"]["optim"]["lr"] == 3e-4
    assert "lr" not in data["stages"][1]  # input untouched
    with pytest.raises(ConfigError, match="did you mean 'lr'"):
        apply_overrides(data, ["train.optim.lrr=1"])
    with pytest.raises(ConfigError, match="not an index"):
        apply_overrides(data, ["stages.5.lr=1"])
    with pytest.raises(ConfigError, match="not key=value"):
        apply_overrides(data, ["train.optim.lr"])


def test_load_recipe_from_path_with_size_and_variant(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(
        "name: r\nmodel:\n  decoder: {name: big}\n"
        "sizes:\n  tiny: {model.decoder.name: small}\n"
        "variants:\n  frozen: {stages: [{name: only, train: [connector]}]}\n"
    )
    assert load_recipe(path).model.decoder.name == "big"
    tiny = load_recipe(path, size="tiny", overrides=["train.batch_size=2"])
    assert tiny.model.decoder.name == "small" and tiny.train.batch_size == 2
    assert load_recipe(path, variant="frozen").stages[0].name == "only"
    with pytest.raises(ConfigError, match="unknown size 'huge'"):
        load_recipe(path, size="huge")
    with pytest.raises(ConfigError, match="unknown variant"):
        load_recipe(path, variant="nope")


def test_unknown_recipe_name():
    with pytest.raises(ConfigError, match="unknown recipe 'no-such-recipe'"):
        load_recipe("no-such-recipe")


def test_bad_yaml_is_one_line_error(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError) as info:
        load_recipe(path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)


def test_list_images_refused_at_load_naming_the_fix():
    # every encoder takes (B, C, H, W): data.images=list used to crash inside conv2d mid-run
    with pytest.raises(ConfigError, match=r"data\.images=list .*data\.images=stitch .*first_frontal") as err:
        load_recipe("radgen-small", size="tiny", overrides=["data.images=list"])
    assert "\n" not in str(err.value)
    for mode in ("stitch", "first_frontal"):
        assert load_recipe("llava-two-stage", size="tiny", overrides=[f"data.images={mode}"]).data.images == mode


def test_list_images_refused_at_build_for_recipes_made_in_python():
    from radgen.models import build_model

    recipe = load_recipe("llava-two-stage", size="tiny")
    recipe.data.images = "list"  # a recipe edited in Python (or read from a saved model) skips load_recipe
    with pytest.raises(ConfigError, match=r"data\.images=stitch"):
        build_model(recipe)
