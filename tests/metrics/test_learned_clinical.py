"""CheXbert checkpoint loading (tiny random model in the official format) and RadGraph rewards."""


import pytest
import torch

from radgen.errors import WeightsError
from radgen.io import write_jsonl
from radgen.metrics.radgraph import radgraph_scores, reward

WORDS = "no pleural effusion small left right heart is enlarged cardiomegaly pneumothorax".split()


@pytest.fixture(scope="module")
def tiny_chexbert(tmp_path_factory):
    from transformers import BertConfig, BertTokenizer

    from radgen.metrics.chexbert import CheXbertModel

    folder = tmp_path_factory.mktemp("chexbert")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizer(str(folder / "vocab.txt")).save_pretrained(str(folder / "tokenizer"))
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(vocab), hidden_size=64, num_hidden_layers=2, num_attention_heads=1, intermediate_size=32, max_position_embeddings=40)
    model = CheXbertModel(config).eval()
    # The official file: torch.save({"model_state_dict": DataParallel(model).state_dict()}) -> "module." keys.
    state = {f"module.{k}": v for k, v in model.state_dict().items()}
    torch.save({"model_state_dict": state, "epoch": 3}, folder / "chexbert.pth")
    return folder, model


def test_chexbert_checkpoint_loads_and_labels_like_the_original_model(tiny_chexbert):
    from radgen.metrics.chexbert import CHEXBERT_CONDITIONS, CLASS_TO_LABEL, CheXbertLabeler

    folder, model = tiny_chexbert
    labeler = CheXbertLabeler.load(folder, tokenizer=folder / "tokenizer")  # a folder finds chexbert.pth
    texts = ["small left pleural effusion", "no pneumothorax heart is enlarged"]
    labels = labeler.label(texts)
    tok = labeler.tokenizer
    for text, got in zip(texts, labels):
        enc = tok(text, return_tensors="pt")
        with torch.no_grad():
            heads = model(enc["input_ids"], enc["attention_mask"])
        expected = {name: CLASS_TO_LABEL[int(h.argmax())] for name, h in zip(CHEXBERT_CONDITIONS, heads)}
        assert got == expected
    assert set(labels[0]) == set(CHEXBERT_CONDITIONS) and len(CHEXBERT_CONDITIONS) == 14


def test_chexbert_missing_or_bad_weights(tmp_path):
    from radgen.metrics.chexbert import CheXbertLabeler

    with pytest.raises(WeightsError, match="chexbert.pth"):
        CheXbertLabeler.load(tmp_path / "nowhere" / "chexbert.pth")
    with pytest.raises(WeightsError, match="--chexbert-weights"):
        CheXbertLabeler.load(None)
    torch.save({"model_state_dict": {"module.foo": torch.zeros(1)}}, tmp_path / "bad.pth")
    with pytest.raises(WeightsError, match="not a CheXbert"):
        CheXbertLabeler.load(tmp_path / "bad.pth")


def _ann(*entities):
    """entities: (tokens, label, [(relation, target_index)])"""
    return {"entities": {str(i + 1): {"tokens": t, "label": l, "relations": [[r, str(j + 1)] for r, j in rels]} for i, (t, l, rels) in enumerate(entities)}}


REF = _ann(("effusion", "OBS-DP", [("located_at", 1)]), ("pleural", "ANAT-DP", []), ("heart", "ANAT-DP", []))
HYP = _ann(("effusion", "OBS-DP", [("located_at", 1)]), ("left", "ANAT-DP", []), ("heart", "ANAT-DP", []), ("enlarged", "OBS-DP", []))


def test_radgraph_reward_levels_by_hand():
    # simple: hyp {effusion, left, heart, enlarged} vs ref {effusion, pleural, heart}: 2 common -> P 2/4, R 2/3
    assert reward(HYP, REF, "simple") == pytest.approx((2 * 0.5 * (2 / 3) / (0.5 + 2 / 3), 0.5, 2 / 3))
    # partial: effusion has a relation in both -> (effusion, OBS-DP, True) matches; same counts
    assert reward(HYP, REF, "partial")[0] == pytest.approx(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3))
    # complete: relation targets differ (left vs pleural) -> only heart matches: P 1/4, R 1/3
    assert reward(HYP, REF, "complete") == pytest.approx((2 * 0.25 * (1 / 3) / (0.25 + 1 / 3), 0.25, 1 / 3))
    assert reward({"entities": {}}, REF, "simple") == (0.0, 0.0, 0.0)
    assert reward(REF, REF, "complete")[0] == 1.0


def test_radgraph_scores_from_annotations_and_weights_errors(tmp_path):
    path = tmp_path / "radgraph.jsonl"
    write_jsonl(path, [{"study_id": "a", "pred": HYP, "ref": REF}, {"study_id": "b", "pred": REF, "ref": REF}])
    scores = radgraph_scores(["a", "b"], ["", ""], ["", ""], annotations=path)
    assert scores["radgraph_complete"][1] == 1.0 and scores["radgraph_simple"][0] == pytest.approx(4 / 7)
    with pytest.raises(Exception, match="no RadGraph annotation for 1 studies"):
        radgraph_scores(["a", "c"], ["", ""], ["", ""], annotations=path)
    with pytest.raises(WeightsError, match="not found"):
        radgraph_scores(["a"], ["x"], ["y"], weights=tmp_path / "radgraph.tar.gz")


# A stand-in for the `radgraph` package (the real one needs transformers<5, so it cannot be installed
# beside radgen): same constructor and call signature, entities = the words of the text, relations
# from each "effusion" to the word before it. It lets the tests check radgen's side of the bridge:
# the subprocess protocol, the text <-> study mapping, empty texts, and the error messages.
FAKE_RADGRAPH = """
class RadGraph:
    def __init__(self, model_type=None, model_cache_dir=None, cuda=None):
        assert model_type == "radgraph" and cuda == -1, (model_type, cuda)
    def __call__(self, texts):
        out = {}
        for i, text in enumerate(texts):
            words = text.lower().replace(".", " ").split()
            entities = {}
            for j, word in enumerate(words):
                relations = [["located_at", str(j)]] if word == "effusion" and j > 0 else []
                entities[str(j + 1)] = {"tokens": word, "label": "ANAT-DP" if word in ("left", "pleural") else "OBS-DP",
                                        "start_ix": j, "end_ix": j, "relations": relations}
            out[str(i)] = {"text": text, "entities": entities, "data_source": None, "data_split": "inference"}
        return out
"""


@pytest.fixture()
def fake_radgraph(tmp_path, monkeypatch):
    package = tmp_path / "site" / "radgraph"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(FAKE_RADGRAPH)
    monkeypatch.setenv("PYTHONPATH", str(package.parent))
    checkpoint = tmp_path / "cache" / "radgraph"
    (checkpoint / "vocabulary").mkdir(parents=True)
    (checkpoint / "config.json").write_text("{}")
    (checkpoint / "weights.th").write_bytes(b"")
    return checkpoint


def test_radgraph_from_weights_runs_the_package_and_scores_like_annotations(fake_radgraph, tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("fake_radgraph", fake_radgraph.parents[1] / "site" / "radgraph" / "__init__.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    hyps = ["Small left pleural effusion.", "", "Heart normal."]
    refs = ["Left pleural effusion.", "No effusion.", "Heart normal."]
    scores = radgraph_scores(["a", "b", "c"], hyps, refs, weights=fake_radgraph)
    annotate = module.RadGraph(model_type="radgraph", cuda=-1)
    rows = [{"study_id": sid, "pred": {"entities": annotate([h])["0"]["entities"]} if h else {},
             "ref": {"entities": annotate([r])["0"]["entities"]}} for sid, h, r in zip("abc", hyps, refs)]
    write_jsonl(tmp_path / "ann.jsonl", rows)
    expected = radgraph_scores(["a", "b", "c"], hyps, refs, annotations=tmp_path / "ann.jsonl")
    for level in ("simple", "partial", "complete"):
        assert scores[f"radgraph_{level}"].tolist() == pytest.approx(expected[f"radgraph_{level}"].tolist())
    assert scores["radgraph_complete"][2] == 1.0 and scores["radgraph_simple"][1] == 0.0  # identical / empty prediction
    assert 0 < scores["radgraph_simple"][0] < 1


def test_radgraph_weights_errors_name_the_fix(fake_radgraph, tmp_path, monkeypatch):
    renamed = fake_radgraph.parent / "my-checkpoint"
    renamed.mkdir()
    for name in ("config.json", "weights.th"):
        (renamed / name).write_bytes((fake_radgraph / name).read_bytes())
    (renamed / "vocabulary").mkdir()
    with pytest.raises(WeightsError, match="must be named one of radgraph"):
        radgraph_scores(["a"], ["x"], ["y"], weights=renamed)
    (fake_radgraph / "weights.th").unlink()
    with pytest.raises(WeightsError, match="missing weights.th"):
        radgraph_scores(["a"], ["x"], ["y"], weights=fake_radgraph)
    (fake_radgraph / "weights.th").write_bytes(b"")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path / "nowhere"))  # this environment has no radgraph package
    with pytest.raises(WeightsError, match="cannot import radgraph.*--radgraph-python"):
        radgraph_scores(["a"], ["x"], ["y"], weights=fake_radgraph)
    with pytest.raises(WeightsError, match="--radgraph-python /no/such/python: cannot run it"):
        radgraph_scores(["a"], ["x"], ["y"], weights=fake_radgraph, python="/no/such/python")


def test_evaluate_with_chexbert_and_radgraph(tiny_chexbert, tmp_path):
    from radgen.data.study import Study
    from radgen.metrics import evaluate

    folder, _ = tiny_chexbert
    studies = [Study(study_id="a", sections={"findings": "Small left pleural effusion."}), Study(study_id="b", sections={"findings": "Heart is enlarged."})]
    preds = [{"study_id": "a", "findings": "no pleural effusion"}, {"study_id": "b", "findings": "cardiomegaly"}]
    annotations = tmp_path / "rg.jsonl"
    write_jsonl(annotations, [{"study_id": "a", "pred": HYP, "ref": REF}, {"study_id": "b", "pred": REF, "ref": REF}])
    result = evaluate(preds, studies, metrics=["chexbert", "radgraph"], chexbert_weights=folder / "chexbert.pth", chexbert_tokenizer=folder / "tokenizer", radgraph_annotations=annotations, bootstrap=50)
    assert "f1chexbert_r2gen_micro_f1_14" in result["corpus"] and "f1chexbert_chexbert_micro_f1_5" in result["corpus"]
    assert result["corpus"]["radgraph_complete"] == pytest.approx((reward(HYP, REF, "complete")[0] + 1.0) / 2)
    assert "radgraph_simple" in result["ci95"]
    with pytest.raises(WeightsError, match="chexbert.pth"):
        evaluate(preds, studies, metrics=["chexbert"], chexbert_weights=tmp_path / "missing.pth")
