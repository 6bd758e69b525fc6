"""`radgen fit-findings`: the finding head alone, fitted on cached features, early-stopped, thresholds tuned."""

import json

import torch

from radgen.cli import main
from radgen.config import load_recipe
from radgen.models import ReportGenerator, build_model
from radgen.train.data import load_splits
from radgen.train.finding_head import fit_finding_head
from tests.train.imaging import write_studies


def test_fit_trains_only_the_head_and_lowers_its_validation_loss(tmp_path, monkeypatch):
    rebalanced = []  # the thread count may follow the load between epochs (radgen.threads.rebalance_threads)
    monkeypatch.setattr("radgen.train.finding_head.rebalance_threads", lambda: rebalanced.append(1))
    monkeypatch.setattr("radgen.train.feature_cache.rebalance_threads", lambda: rebalanced.append(1))
    manifest = write_studies(tmp_path / "studies", train=24, val=9)
    torch.manual_seed(0)
    recipe = load_recipe("radgen-small", size="tiny", overrides=[f"data.manifest={manifest}"])
    model = build_model(recipe)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    train_set, val_set = load_splits(recipe, model.image_transform)
    fit = fit_finding_head(model, train_set, val_set, tmp_path / "cache", max_epochs=60, patience=60, progress=False)
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("findings.") for k in changed)
    assert "findings.thresholds" in changed and "findings.pos_weight" in changed
    # the cases: a third cardiomegaly, a third effusion (tests/train/imaging.py): both have val positives
    assert set(fit.val_auroc) == {"Cardiomegaly", "Pleural Effusion"}
    head = model.findings
    def pooled(item):  # radgen-small's head reads the lateral view too (zeros + flag 0 when there is none)
        lateral = model.encode_images(item["lateral_pixel_values"][None])
        return head.pool(model.encode_images(item["pixel_values"][None]), lateral, torch.tensor([item["has_lateral"]]))

    val_x = torch.cat([pooled(val_set[i]) for i in range(len(val_set))])
    from radgen.models.findings import targets_from_labels
    from radgen.train.evaluation import study_finding_labels

    val_y = targets_from_labels(*study_finding_labels(val_set), head.observations)[0]
    with torch.no_grad():
        fitted = float(head.loss(head.classify(val_x), val_y))
        model.findings.load_state_dict({k.split(".", 1)[1]: v for k, v in before.items() if k.startswith("findings.")})
        model.findings.pos_weight.copy_(after["findings.pos_weight"])
        initial = float(head.loss(head.classify(val_x), val_y))
    assert abs(fitted - fit.val_loss) < 1e-3  # the kept weights are the best epoch's (cache in fp16: small drift)
    assert fitted < initial
    assert len(rebalanced) >= fit.epochs + 1  # every epoch, and the cache's encoding batches


def test_cli_fits_a_saved_model_in_place(tmp_path, capsys):
    manifest = write_studies(tmp_path / "studies", train=12, val=6)
    torch.manual_seed(0)
    model = build_model(load_recipe("radgen-small", size="tiny"))
    model.save_pretrained(tmp_path / "m")
    assert main(["fit-findings", str(tmp_path / "m"), "--data", str(manifest), "--max-epochs", "5", "--no-progress",
                 "--feature-cache-dir", str(tmp_path / "cache")]) == 0
    assert "finding head fitted" in capsys.readouterr().out
    report = json.loads((tmp_path / "m" / "finding_head_fit.json").read_text())
    loaded = ReportGenerator.from_pretrained(tmp_path / "m")
    assert [round(float(t), 4) for t in loaded.findings.thresholds] == [report["thresholds"][n] for n in loaded.findings.observations]


def test_fit_with_encoder_blocks_trains_the_tail_on_cached_trunk_maps(tmp_path, capsys):
    manifest = write_studies(tmp_path / "studies", train=24, val=9)
    torch.manual_seed(0)
    model = build_model(load_recipe("radgen-small", size="tiny"))
    model.save_pretrained(tmp_path / "m")
    encoder_before = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    assert main(["fit-findings", str(tmp_path / "m"), "--data", str(manifest), "--tune-encoder-blocks", "2", "--max-epochs", "6",
                 "--patience", "6", "--no-progress", "--feature-cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "out")]) == 0
    assert "finding head fitted" in capsys.readouterr().out
    fitted = ReportGenerator.from_pretrained(tmp_path / "out")
    assert fitted.recipe.model.findings.tune_encoder_blocks == 2
    # the encoder the decoder reads is untouched; the head's copy of its last blocks has moved
    assert all(torch.equal(v, encoder_before[k]) for k, v in fitted.encoder.state_dict().items())
    moved = [not torch.equal(a, b) for a, b in zip(fitted.findings.tail.parameters(), list(model.encoder.model.blocks[-2:].parameters())
                                                   + list(model.encoder.model.conv_head.parameters()) + list(model.encoder.model.bn2.parameters()))]
    assert any(moved)
    # trunk maps were cached under their own identity, beside nothing else
    cached = [p.name for p in (tmp_path / "cache").iterdir()]
    assert len(cached) == 1 and cached[0].endswith("-trunk2")
    report = json.loads((tmp_path / "out" / "finding_head_fit.json").read_text())
    assert report["best_epoch"] >= 1 and set(report["val_auroc"]) == {"Cardiomegaly", "Pleural Effusion"}
    # the saved model still loads the original (in place) without a tail
    assert ReportGenerator.from_pretrained(tmp_path / "m").findings.tail_blocks == 0


def _renders_of(studies_dir, out, seed: int, splits=("train",)):
    """The studies of studies_dir/manifest.jsonl in `splits`, rendered again from another seed into `out`."""
    from radgen.data.phantom.render import render_study
    from radgen.data.study import read_manifest, write_manifest

    source = [s for s in read_manifest(studies_dir / "manifest.jsonl") if s.split in splits]
    write_manifest(out / "manifest.jsonl", [render_study(s, out, seed=seed, size=64) for s in source])
    return out / "manifest.jsonl"


def test_extra_training_manifests_join_the_train_split_only(tmp_path):
    from radgen.data.dataset import StudyDataset

    manifest = write_studies(tmp_path / "studies", train=3, val=2)
    extra = _renders_of(tmp_path / "studies", tmp_path / "elsewhere" / "seed1", seed=1, splits=("train", "val"))
    model = build_model(load_recipe("radgen-small", size="tiny"))
    recipe = load_recipe("radgen-small", size="tiny", overrides=[f"data.manifest={manifest}"])
    train_set, val_set = load_splits(recipe, model.image_transform, extra_train=[extra])
    assert len(train_set) == 6 and len(val_set) == 2  # the extra manifest's val studies are not added
    own = StudyDataset(extra, model.image_transform, lateral=True)  # its paths, resolved against its own folder
    for index in range(3):
        added, expected = train_set[3 + index], own[index]
        assert added["study_id"] == expected["study_id"] == train_set[index]["study_id"]
        assert added["image_key"] == expected["image_key"] != train_set[index]["image_key"]  # another render
        assert torch.equal(added["pixel_values"], expected["pixel_values"])
        assert torch.equal(added["lateral_pixel_values"], expected["lateral_pixel_values"])


def test_extra_training_manifest_errors_name_the_file(tmp_path):
    from radgen.errors import DataError

    manifest = write_studies(tmp_path / "studies", train=2, val=1)
    val_only = _renders_of(tmp_path / "studies", tmp_path / "val_only", seed=1, splits=("val",))
    model = build_model(load_recipe("radgen-small", size="tiny"))
    recipe = load_recipe("radgen-small", size="tiny", overrides=[f"data.manifest={manifest}"])
    for path, message in [(tmp_path / "missing.jsonl", "extra training manifest not found"), (val_only, "no study has split 'train'")]:
        try:
            load_splits(recipe, model.image_transform, extra_train=[path])
        except DataError as error:
            assert str(path) in str(error) and message in str(error)
        else:
            raise AssertionError(f"{path}: no error")


def test_cli_fits_on_extra_training_renders(tmp_path, capsys):
    manifest = write_studies(tmp_path / "studies", train=6, val=3)
    extra = _renders_of(tmp_path / "studies", tmp_path / "seed1", seed=1)
    torch.manual_seed(0)
    build_model(load_recipe("radgen-small", size="tiny")).save_pretrained(tmp_path / "m")
    args = ["fit-findings", str(tmp_path / "m"), "--data", str(manifest), "--max-epochs", "2", "--no-progress"]
    assert main(args + ["--feature-cache-dir", str(tmp_path / "plain"), "--out", str(tmp_path / "plain_out")]) == 0
    assert main(args + ["--extra-train", str(extra), "--feature-cache-dir", str(tmp_path / "more"),
                        "--out", str(tmp_path / "more_out")]) == 0
    def cached(cache_dir):  # images in the feature cache: what the fit read (2 views a study)
        return sum(len(json.loads(index.read_text())) for index in cache_dir.glob("*/index.json"))
    assert cached(tmp_path / "plain") == 2 * 9 and cached(tmp_path / "more") == 2 * (9 + 6)
    plain = ReportGenerator.from_pretrained(tmp_path / "plain_out").findings.state_dict()
    more = ReportGenerator.from_pretrained(tmp_path / "more_out").findings.state_dict()
    assert not torch.equal(plain["pos_weight"], more["pos_weight"]) or any(
        not torch.equal(plain[k], more[k]) for k in plain if k not in {"thresholds", "pos_weight"})
    # the fit record says what each fit trained on
    def trained_on(out):
        record = json.loads((tmp_path / out / "finding_head_fit.json").read_text())
        return record["train_studies"], record["extra_train"]
    assert trained_on("plain_out") == (6, []) and trained_on("more_out") == (12, [str(extra)])
    # a member added on more renders says so; the kept one keeps its own record
    assert main(["fit-findings", str(tmp_path / "plain_out"), "--data", str(manifest), "--max-epochs", "2",
                "--no-progress", "--add-members", "1", "--seed", "3", "--extra-train", str(extra),
                "--feature-cache-dir", str(tmp_path / "more"), "--out", str(tmp_path / "grown")]) == 0
    kept, added = json.loads((tmp_path / "grown" / "finding_head_fit.json").read_text())["members"]
    assert kept["kept"] and (kept["train_studies"], kept["extra_train"]) == (6, [])
    assert (added["seed"], added["train_studies"], added["extra_train"]) == (3, 12, [str(extra)])


def test_cli_retunes_only_the_thresholds(tmp_path, capsys):
    manifest = write_studies(tmp_path / "studies", train=12, val=9)  # 3 val positives each of cardiomegaly and effusion: tuned
    torch.manual_seed(0)
    build_model(load_recipe("radgen-small", size="tiny")).save_pretrained(tmp_path / "m")
    cache = ["--feature-cache-dir", str(tmp_path / "cache"), "--no-progress"]
    assert main(["fit-findings", str(tmp_path / "m"), "--data", str(manifest), "--max-epochs", "5", *cache]) == 0
    fitted = ReportGenerator.from_pretrained(tmp_path / "m")
    tuned = fitted.findings.thresholds.clone()
    fitted.findings.thresholds.fill_(0.5)  # thresholds from elsewhere (another site, an older rule)
    fitted.save_pretrained(tmp_path / "edited", base_weights=False)
    (tmp_path / "edited" / "finding_head_fit.json").write_text((tmp_path / "m" / "finding_head_fit.json").read_text())
    capsys.readouterr()
    assert main(["fit-findings", str(tmp_path / "edited"), "--data", str(manifest), "--thresholds-only", "--out", str(tmp_path / "out"),
                 *cache]) == 0
    assert "thresholds re-tuned on 9 val studies" in capsys.readouterr().out
    out = ReportGenerator.from_pretrained(tmp_path / "out")
    # the fit's own tuning, on the same val studies, is what the re-tune must find again
    assert not torch.equal(tuned, torch.full_like(tuned, 0.5))
    assert torch.allclose(out.findings.thresholds, tuned, atol=1e-4)
    before, after = fitted.state_dict(), out.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if k != "findings.thresholds")
    record = json.loads((tmp_path / "out" / "finding_head_fit.json").read_text())
    assert record["thresholds_retuned_on"] == "manifest.jsonl, 9 val studies" and "best_epoch" in record  # the fit's record kept
    assert [record["thresholds"][n] for n in out.findings.observations] == [round(float(t), 4) for t in out.findings.thresholds]
    assert main(["fit-findings", str(tmp_path / "m"), "--data", str(manifest), "--thresholds-only", "--members", "2"]) == 2
    assert "--thresholds-only keeps the head as it is; drop --members" in capsys.readouterr().err
    no_val = write_studies(tmp_path / "train_only", train=6, val=0)
    assert main(["fit-findings", str(tmp_path / "m"), "--data", str(no_val), "--thresholds-only", *cache]) == 2
    assert f"{no_val}: no study has split 'val'" in capsys.readouterr().err
