"""`radgen sweep`: grid parsing, one run per grid point, ranking by val loss, reuse of finished trials."""

import csv

import pytest

from radgen.config import recipe_to_yaml
from radgen.errors import ConfigError
from radgen.train.sweep import parse_grid, run_sweep, trial_overrides
from tests.train.fakes import FakeStudies, TinyReportGenerator, fake_recipe


def test_parse_grid_and_product():
    grid = parse_grid(["model.peft.r=4,8,16", "train.optim.lr=1e-4,3e-4"])
    assert grid == [("model.peft.r", [4, 8, 16]), ("train.optim.lr", [1e-4, 3e-4])]
    trials = trial_overrides(grid)
    assert len(trials) == 6 and trials[0] == {"model.peft.r": 4, "train.optim.lr": 1e-4} and trials[-1] == {"model.peft.r": 16, "train.optim.lr": 3e-4}
    with pytest.raises(ConfigError, match="is not KEY=V1,V2"):
        parse_grid(["model.peft.r"])


def test_sweep_ranks_trials_by_val_loss_and_reuses_finished_ones(tmp_path, fake_collate):
    config = tmp_path / "fake.yaml"
    config.write_text(recipe_to_yaml(fake_recipe(**{"stages": [{"name": "s", "train": ["connector", "decoder"], "max_steps": 50}]})))
    calls = []

    def factory(recipe):
        calls.append(recipe.train.optim.lr)
        return TinyReportGenerator(recipe)

    kwargs = dict(model_factory=factory, train_dataset=FakeStudies(12), val_dataset=FakeStudies(6, seed=1, prefix="v"), collate=fake_collate)
    table = run_sweep(str(config), ["train.optim.lr=0.0,3e-3", "train.max_grad_norm=1.0"], steps=4, output_dir=tmp_path / "sweep", progress=False, **kwargs)
    assert calls == [0.0, 3e-3]
    with open(tmp_path / "sweep" / "sweep.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["trial"] for r in rows] == ["trial-001", "trial-000"]  # lr 3e-3 learns, lr 0 cannot: ranked first
    assert float(rows[0]["val_loss"]) < float(rows[1]["val_loss"]) and rows[0]["steps"] == "4"
    assert table.read_text().startswith("| rank | trial | train.optim.lr")
    assert (tmp_path / "sweep" / "sweep.png").stat().st_size > 1000
    run_sweep(str(config), ["train.optim.lr=0.0,3e-3", "train.max_grad_norm=1.0"], steps=4, output_dir=tmp_path / "sweep", progress=False, **kwargs)
    assert len(calls) == 2  # both trials finished before: nothing retrained
    with pytest.raises(ConfigError, match="unknown key"):
        run_sweep(str(config), ["train.optim.lrr=1,2"], steps=4, output_dir=tmp_path / "bad", progress=False, **kwargs)
