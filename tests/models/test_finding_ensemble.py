"""A finding head of several members (model.findings.members): the mean of their logits (or probabilities)."""

import copy
import json

import pytest
import torch

from radgen.cli import main
from radgen.config import load_recipe
from radgen.errors import ConfigError
from radgen.models import ReportGenerator, build_model
from radgen.models.fast import prepare_for_inference
from radgen.models.findings import FindingEnsemble, FindingHead
from tests.models.conftest import pixels, tiny
from tests.train.imaging import write_studies


@pytest.fixture(scope="module")
def ensemble():
    torch.manual_seed(0)
    return tiny("radgen-small", "model.findings.tune_encoder_blocks=2", "model.findings.members=3").eval()


def test_the_logit_is_the_mean_of_the_members(ensemble):
    head = ensemble.findings
    assert isinstance(head, FindingEnsemble) and len(head.members) == 3 and head.mean == "logit"
    assert head.tail_blocks == 2 and len(head.tails()) == 3
    # members start from different weights (so they do not fit alike)
    assert not torch.equal(head.members[0].mlp[0].weight, head.members[1].mlp[0].weight)
    images = pixels(ensemble)
    head_input = ensemble.head_input(images)
    by_hand = torch.sigmoid(torch.stack([member(head_input) for member in head.members]).mean(0))
    probs, names = ensemble.predict_findings(pixel_values=images)
    torch.testing.assert_close(probs, by_hand)
    head.thresholds.fill_(0.5)
    assert names == [[n for n, p in zip(head.observations, row) if p >= 0.5] for row in by_hand.tolist()]


def test_member_mean_probability_averages_the_probabilities():
    torch.manual_seed(0)
    model = tiny("radgen-small", "model.findings.members=2", "model.findings.member_mean=probability").eval()
    head = model.findings
    images = pixels(model)
    head_input = model.head_input(images)
    by_hand = torch.stack([torch.sigmoid(member(head_input)) for member in head.members]).mean(0)
    torch.testing.assert_close(model.predict_findings(pixel_values=images)[0], by_hand)
    # the two means differ where members disagree: the test above would pass for either rule otherwise
    logit_mean = torch.sigmoid(torch.stack([member(head_input) for member in head.members]).mean(0))
    assert not torch.allclose(by_hand, logit_mean)
    with pytest.raises(ConfigError, match="member_mean: 'median' is not one of logit, probability"):
        tiny("radgen-small", "model.findings.member_mean=median")


def test_an_ensemble_saved_before_member_mean_keeps_the_probability_mean(ensemble, tmp_path):
    import yaml

    ensemble.save_pretrained(tmp_path / "m")
    config = tmp_path / "m" / "radgen_config.yaml"
    raw = yaml.safe_load(config.read_text())
    assert raw["model"]["findings"]["member_mean"] == "logit"
    del raw["model"]["findings"]["member_mean"]  # as an ensemble saved by an earlier radgen
    config.write_text(yaml.safe_dump(raw))
    assert ReportGenerator.from_pretrained(tmp_path / "m").findings.mean == "probability"


def test_a_unanimous_answer_stays_finite():
    members = [FindingHead(4, ["A"]) for _ in range(2)]
    for member in members:
        torch.nn.init.constant_(member.mlp[-1].bias, 200.0)  # sigmoid rounds to exactly 1 in fp32
    logits = FindingEnsemble(members)(torch.randn(2, 3, 4))
    assert torch.isfinite(logits).all() and (torch.sigmoid(logits) > 0.999).all()


def test_members_must_agree_and_be_at_least_two():
    with pytest.raises(ConfigError, match="at least 2"):
        FindingEnsemble([FindingHead(4, ["A"])])
    with pytest.raises(ConfigError, match="share observations"):
        FindingEnsemble([FindingHead(4, ["A"]), FindingHead(4, ["B"])])
    with pytest.raises(ConfigError, match="members must be >= 1"):
        tiny("radgen-small", "model.findings.members=0")


def test_save_load_and_inference_form_keep_every_member(ensemble, tmp_path):
    images = pixels(ensemble)
    model = copy.deepcopy(ensemble)
    with torch.no_grad():
        model.findings.members[2].tail[0].parameters().__next__().add_(0.1)  # the last member's blocks matter
    expected = model.predict_findings(pixel_values=images)[0]
    assert not torch.allclose(expected, ensemble.predict_findings(pixel_values=images)[0])
    model.save_pretrained(tmp_path / "m")
    loaded = ReportGenerator.from_pretrained(tmp_path / "m")
    assert loaded.recipe.model.findings.members == 3
    torch.testing.assert_close(loaded.predict_findings(pixel_values=images)[0], expected)
    # folded batch norms and channels-last tails: every member's, with the same answers
    prepare_for_inference(loaded, dtype="float32")
    assert all(not any(isinstance(m, torch.nn.BatchNorm2d) for m in tail.modules()) for tail in loaded.findings.tails())
    torch.testing.assert_close(loaded.predict_findings(pixel_values=images)[0], expected, rtol=1e-3, atol=1e-4)


def test_fit_findings_fits_each_member_and_tunes_thresholds_on_their_mean(tmp_path, capsys):
    manifest = write_studies(tmp_path / "studies", train=24, val=9)
    torch.manual_seed(0)
    build_model(load_recipe("radgen-small", size="tiny")).save_pretrained(tmp_path / "m")
    assert main(["fit-findings", str(tmp_path / "m"), "--data", str(manifest), "--members", "2", "--seed", "5",
                 "--max-epochs", "30", "--patience", "30", "--no-progress", "--feature-cache-dir", str(tmp_path / "cache"),
                 "--out", str(tmp_path / "out")]) == 0
    assert "finding head fitted" in capsys.readouterr().out
    report = json.loads((tmp_path / "out" / "finding_head_fit.json").read_text())
    assert [m["seed"] for m in report["members"]] == [5, 6]
    assert report["val_loss"] == pytest.approx(sum(m["val_loss"] for m in report["members"]) / 2)
    fitted = ReportGenerator.from_pretrained(tmp_path / "out")
    head = fitted.findings
    assert isinstance(head, FindingEnsemble) and fitted.recipe.model.findings.members == 2
    assert not torch.equal(head.members[0].mlp[0].weight, head.members[1].mlp[0].weight)
    assert [round(float(t), 4) for t in head.thresholds] == [report["thresholds"][n] for n in head.observations]
    # the saved thresholds are the best F1 on val for the members' mean (the mean is what predict thresholds)
    from radgen.models.findings import targets_from_labels
    from radgen.train.data import load_splits
    from radgen.train.evaluation import study_finding_labels

    fitted.recipe.data.manifest = str(manifest)
    _, val_set = load_splits(fitted.recipe, fitted.image_transform)
    images = torch.stack([val_set[i]["pixel_values"] for i in range(len(val_set))])
    lateral = torch.stack([val_set[i]["lateral_pixel_values"] for i in range(len(val_set))])
    mask = torch.tensor([bool(val_set[i]["has_lateral"]) for i in range(len(val_set))])
    probs = fitted.predict_findings(pixel_values=images, lateral_pixel_values=lateral, lateral_mask=mask)[0]
    val_y = targets_from_labels(*study_finding_labels(val_set), head.observations)[0]
    retuned = FindingHead(4, head.observations).set_thresholds(probs, val_y)
    assert retuned == pytest.approx(head.thresholds.tolist(), abs=2e-3)  # the fit read fp16-cached features


def test_joint_training_reaches_every_member(ensemble):
    model = copy.deepcopy(ensemble).train()
    head = model.findings
    head.set_class_balance(torch.tensor([[1.0] + [0.0] * 12, [0.0] * 13]), max_pos_weight=5.0)
    assert all(torch.equal(m.pos_weight, head.members[0].pos_weight) for m in head.members)
    logits = model.finding_logits(model.head_input(pixels(model)))
    head.loss(logits, torch.zeros_like(logits)).backward()
    assert all(m.mlp[0].weight.grad is not None and m.mlp[0].weight.grad.abs().sum() > 0 for m in head.members)
    # the members' own encoder blocks keep the encoder's batch-norm statistics in training, as one head's do
    assert not any(module.training for tail in head.tails() for module in tail.modules()
                   if isinstance(module, torch.nn.modules.batchnorm._BatchNorm))


@pytest.mark.parametrize("blocks", [0, 2])
def test_add_members_grows_a_fitted_head_into_the_head_one_fit_of_all_gives(tmp_path, capsys, blocks):
    manifest = write_studies(tmp_path / "studies", train=24, val=9)
    torch.manual_seed(0)
    build_model(load_recipe("radgen-small", size="tiny")).save_pretrained(tmp_path / "m")
    common = ["--data", str(manifest), "--max-epochs", "4", "--patience", "4", "--no-progress",
              "--feature-cache-dir", str(tmp_path / "cache"), "--tune-encoder-blocks", str(blocks)]
    assert main(["fit-findings", str(tmp_path / "m"), "--members", "2", "--seed", "5", "--out", str(tmp_path / "both"), *common]) == 0
    assert main(["fit-findings", str(tmp_path / "m"), "--members", "1", "--seed", "5", "--out", str(tmp_path / "one"), *common]) == 0
    assert main(["fit-findings", str(tmp_path / "one"), "--add-members", "1", "--seed", "6", "--out", str(tmp_path / "grown"),
                 *common]) == 0
    capsys.readouterr()
    both, one, grown = (ReportGenerator.from_pretrained(tmp_path / name) for name in ("both", "one", "grown"))
    assert isinstance(grown.findings, FindingEnsemble) and grown.recipe.model.findings.members == 2
    # the first member is the one-member head, untouched; the added one is what the joint fit's second member is
    for key, value in one.findings.state_dict().items():
        if key != "thresholds":
            assert torch.equal(grown.findings.members[0].state_dict()[key], value), key
    for key, value in both.findings.state_dict().items():
        torch.testing.assert_close(grown.findings.state_dict()[key], value, rtol=0, atol=1e-6, msg=key)
    grown_report = json.loads((tmp_path / "grown" / "finding_head_fit.json").read_text())
    both_report = json.loads((tmp_path / "both" / "finding_head_fit.json").read_text())
    assert [m["seed"] for m in grown_report["members"]] == [5, 6] and grown_report["members"][0]["kept"]
    assert grown_report["val_micro_f1"] == pytest.approx(both_report["val_micro_f1"])
    assert grown_report["val_loss"] == pytest.approx(both_report["val_loss"], abs=1e-5)


def test_add_members_refuses_what_would_change_the_kept_head(tmp_path, capsys):
    torch.manual_seed(0)
    build_model(load_recipe("radgen-small", size="tiny")).save_pretrained(tmp_path / "m")
    manifest = write_studies(tmp_path / "studies", train=4, val=2)
    for extra, message in ((["--members", "2"], "cannot be combined"), (["--image-size", "96"], "cannot be combined"),
                           (["--tune-encoder-blocks", "1"], "cannot be combined"), ([], "must be at least 1")):
        assert main(["fit-findings", str(tmp_path / "m"), "--data", str(manifest), "--out", str(tmp_path / "o"),
                     "--add-members", "0" if not extra else "1", *extra]) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("rule", ["logit", "probability"])
def test_thresholds_are_tuned_on_the_ensembles_own_rule(tmp_path, capsys, rule):
    """members that disagree (one sure, one unsure) score a study differently under the two means;
    `--thresholds-only` must tune on the mean the ensemble predicts with"""
    from radgen.models.findings import targets_from_labels
    from radgen.train.data import load_splits
    from radgen.train.evaluation import study_finding_labels

    manifest = write_studies(tmp_path / "studies", train=4, val=12)
    torch.manual_seed(0)
    model = tiny("radgen-small", "model.findings.members=2", f"model.findings.member_mean={rule}")
    with torch.no_grad():  # member 1 says "present" with conviction, member 2 leans "absent"
        model.findings.members[0].mlp[-1].bias.fill_(4.0)
        model.findings.members[0].mlp[-1].weight.mul_(20.0)
        model.findings.members[1].mlp[-1].bias.fill_(-1.0)
    model.save_pretrained(tmp_path / "m")
    assert main(["fit-findings", str(tmp_path / "m"), "--data", str(manifest), "--thresholds-only", "--no-progress",
                 "--feature-cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "out")]) == 0
    capsys.readouterr()
    tuned = ReportGenerator.from_pretrained(tmp_path / "out").eval()
    assert tuned.findings.mean == rule
    tuned.recipe.data.manifest = str(manifest)
    _, val_set = load_splits(tuned.recipe, tuned.image_transform)
    images = torch.stack([val_set[i]["pixel_values"] for i in range(len(val_set))])
    lateral = torch.stack([val_set[i]["lateral_pixel_values"] for i in range(len(val_set))])
    mask = torch.tensor([bool(val_set[i]["has_lateral"]) for i in range(len(val_set))])
    head_in, side_in = tuned.head_input(images), tuned.head_input(lateral)
    with torch.no_grad():
        member_logits = [member(head_in, side_in, mask).float() for member in tuned.findings.members]
    by_rule = {"logit": torch.sigmoid(torch.stack(member_logits).mean(0)),
               "probability": torch.sigmoid(torch.stack(member_logits)).mean(0)}
    val_y = targets_from_labels(*study_finding_labels(val_set), tuned.findings.observations)[0]
    expected = {r: FindingHead(4, tuned.findings.observations).set_thresholds(p, val_y) for r, p in by_rule.items()}
    other = "probability" if rule == "logit" else "logit"
    # the two rules put the thresholds in different places here, so this test tells them apart
    assert max(abs(a - b) for a, b in zip(expected[rule], expected[other])) > 0.02
    assert tuned.findings.thresholds.tolist() == pytest.approx(expected[rule], abs=2e-3)  # the fit read fp16-cached features
