"""CE precision/recall/F1 against hand-computed values and (when installed) scikit-learn."""

import numpy as np
import pytest

from radgen.labels.observations import CHEXPERT_14
from radgen.metrics.clinical import binarize, ce_scores


def _row(**values):
    row = {name: None for name in CHEXPERT_14}
    row.update({k.replace("_", " "): v for k, v in values.items()})
    return row


PRED = [_row(Cardiomegaly=1, Edema=-1), _row(Cardiomegaly=0, Pneumothorax=1), _row(No_Finding=1), _row(Edema=1)]
REF = [_row(Cardiomegaly=1, Edema=1), _row(Cardiomegaly=1), _row(No_Finding=1), _row(Edema=-1)]


def test_conventions_never_mix():
    assert binarize([_row(Edema=-1)], "r2gen")[0, CHEXPERT_14.index("Edema")] == 0
    assert binarize([_row(Edema=-1)], "chexbert")[0, CHEXPERT_14.index("Edema")] == 1
    with pytest.raises(ValueError):
        binarize([_row()], "mixed")


def test_hand_computed_micro_and_example_scores():
    scores, _ = ce_scores(PRED, REF)
    # r2gen: pred positives {s0: Card, s1: PTX, s2: NF, s3: Edema}; ref {s0: Card, Edema; s1: Card; s2: NF}
    # TP = Card(s0) + NF(s2) = 2; FP = PTX(s1) + Edema(s3) = 2; FN = Edema(s0) + Card(s1) = 2
    assert scores["ce_r2gen_micro_p_14"] == pytest.approx(0.5)
    assert scores["ce_r2gen_micro_r_14"] == pytest.approx(0.5)
    assert scores["ce_r2gen_micro_f1_14"] == pytest.approx(0.5)
    # chexbert: s0 pred {Card, Edema} = ref; s3 Edema TP now. TP = 2 + 1 + 1 = 4, FP = 1 (PTX), FN = 1 (Card s1)
    assert scores["ce_chexbert_micro_p_14"] == pytest.approx(0.8)
    assert scores["ce_chexbert_micro_r_14"] == pytest.approx(0.8)
    # over the 5: r2gen TP = Card(s0); FP = Edema(s3); FN = Edema(s0), Card(s1)
    assert scores["ce_r2gen_micro_p_5"] == pytest.approx(0.5)
    assert scores["ce_r2gen_micro_r_5"] == pytest.approx(1 / 3)
    # example-based F1, r2gen: s0 2*1/(1+2)=2/3, s1 0, s2 1, s3 pred {Edema} vs ref {} -> 0
    assert scores["ce_r2gen_example_f1_14"] == pytest.approx((2 / 3 + 0 + 1 + 0) / 4)


def test_matches_sklearn_on_random_labels():
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    values = [1, 0, -1, None]
    pred = [{n: values[rng.integers(4)] for n in CHEXPERT_14} for _ in range(200)]
    ref = [{n: values[rng.integers(4)] for n in CHEXPERT_14} for _ in range(200)]
    scores, _ = ce_scores(pred, ref)
    five = [CHEXPERT_14.index(n) for n in ("Cardiomegaly", "Edema", "Consolidation", "Atelectasis", "Pleural Effusion")]
    for convention in ("r2gen", "chexbert"):
        p, r = binarize(pred, convention), binarize(ref, convention)
        for average in ("micro", "macro", "samples"):
            sp, sr, sf, _ = metrics.precision_recall_fscore_support(r, p, average=average, zero_division=0)
            name = "example" if average == "samples" else average
            assert scores[f"ce_{convention}_{name}_p_14"] == pytest.approx(sp)
            assert scores[f"ce_{convention}_{name}_r_14"] == pytest.approx(sr)
            if average != "macro":  # sklearn's macro F1 averages per-class F1 exactly like ours
                assert scores[f"ce_{convention}_{name}_f1_14"] == pytest.approx(sf)
        f1_macro = metrics.f1_score(r, p, average="macro", zero_division=0)
        assert scores[f"ce_{convention}_macro_f1_14"] == pytest.approx(f1_macro)
        assert scores[f"ce_{convention}_micro_f1_5"] == pytest.approx(metrics.f1_score(r[:, five], p[:, five], average="micro", zero_division=0))
