"""BERTScore and embedding cosine against a hand computation with a tiny random BERT."""

import math

import pytest
import torch

from radgen.errors import WeightsError
from radgen.metrics.semantic import Encoder, semantic_scores

WORDS = "the heart is normal in size no pleural effusion small left right lung clear pneumothorax mild cardiomegaly".split()


@pytest.fixture(scope="module")
def tiny_encoder(tmp_path_factory):
    from transformers import BertConfig, BertModel, BertTokenizer

    folder = tmp_path_factory.mktemp("tiny-bert")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizer(str(folder / "vocab.txt")).save_pretrained(str(folder))
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64, max_position_embeddings=64)
    BertModel(config).eval().save_pretrained(str(folder))
    return Encoder.load(folder)


def _by_hand(encoder, hyp, ref, layer, idf=None):
    """Greedy matching written out: per-text forward pass (no padding), explicit loops."""

    def states(text):
        enc = encoder.tokenizer(text, return_tensors="pt")
        with torch.no_grad():
            hidden = encoder.model(**enc, output_hidden_states=True).hidden_states[layer][0]
        ids = enc["input_ids"][0].tolist()
        vectors = [h / h.norm() for h in hidden]
        return ids, vectors

    special = {encoder.tokenizer.cls_token_id, encoder.tokenizer.sep_token_id}
    h_ids, h_vec = states(hyp)
    r_ids, r_vec = states(ref)
    weight = (lambda t: idf.get(t, idf[-1])) if idf else (lambda t: 1.0)
    num = den = 0.0
    for t, v in zip(h_ids, h_vec):
        if t in special:
            continue
        num += weight(t) * max(float(v @ u) for u in r_vec)
        den += weight(t)
    precision = num / den
    num = den = 0.0
    for t, u in zip(r_ids, r_vec):
        if t in special:
            continue
        num += weight(t) * max(float(u @ v) for v in h_vec)
        den += weight(t)
    recall = num / den
    return precision, recall, 2 * precision * recall / (precision + recall)


HYPS = ["the heart is normal in size", "small left pleural effusion", "no pneumothorax"]
REFS = ["the heart is normal in size no pleural effusion", "mild cardiomegaly small right pleural effusion", "lung clear no pneumothorax"]


@pytest.mark.parametrize("layer", [1, 3])
def test_bertscore_equals_hand_computed_greedy_matching(tiny_encoder, layer):
    scores = semantic_scores(HYPS, REFS, tiny_encoder, layer=layer, batch_size=2)
    for i, (h, r) in enumerate(zip(HYPS, REFS)):
        assert tuple(scores.bertscore[i]) == pytest.approx(_by_hand(tiny_encoder, h, r, layer), abs=1e-5)
    assert scores.protocol["bertscore_layer"] == layer and scores.protocol["bertscore_idf"] is False


def test_bertscore_idf_and_rescaling(tiny_encoder):
    tok = tiny_encoder.tokenizer
    m = len(REFS)
    df = {}
    for ref in REFS:
        for t in set(tok(ref)["input_ids"]):
            df[t] = df.get(t, 0) + 1
    idf = {t: math.log((m + 1) / (c + 1)) for t, c in df.items()} | {-1: math.log(m + 1)}
    scores = semantic_scores(HYPS, REFS, tiny_encoder, layer=2, idf=True)
    for i, (h, r) in enumerate(zip(HYPS, REFS)):
        assert tuple(scores.bertscore[i]) == pytest.approx(_by_hand(tiny_encoder, h, r, 2, idf), abs=1e-5)
    plain = semantic_scores(HYPS, REFS, tiny_encoder, layer=2)
    rescaled = semantic_scores(HYPS, REFS, tiny_encoder, layer=2, baseline=(0.5, 0.4, 0.45))
    assert rescaled.bertscore[0, 0] == pytest.approx((plain.bertscore[0, 0] - 0.5) / 0.5)
    assert rescaled.bertscore[0, 2] == pytest.approx((plain.bertscore[0, 2] - 0.45) / 0.55)


def test_embedding_cosine_and_identical_texts(tiny_encoder):
    scores = semantic_scores(REFS, REFS, tiny_encoder)
    assert scores.bertscore[:, 2] == pytest.approx([1.0, 1.0, 1.0], abs=1e-5)
    assert scores.embed_cos == pytest.approx([1.0, 1.0, 1.0], abs=1e-5)
    other = semantic_scores(["", "no pneumothorax"], ["no pneumothorax", "the heart is normal in size"], tiny_encoder)
    assert other.embed_cos[0] == 0.0 and tuple(other.bertscore[0]) == (0.0, 0.0, 0.0)
    assert -1.0 <= other.embed_cos[1] < 1.0


def test_missing_model_folder_is_a_weights_error(tmp_path):
    with pytest.raises(WeightsError, match="config.json"):
        Encoder.load(tmp_path)


def test_length_batches_cover_every_text_once_within_the_token_budget():
    from radgen.metrics.semantic import length_batches

    lengths = [5, 300, 12, 12, 7, 2000, 40, 3, 3, 64]
    batches = length_batches(lengths, max_tokens=100, max_rows=3)
    assert sorted(i for batch in batches for i in batch) == list(range(len(lengths)))
    for batch in batches:
        assert len(batch) <= 3
        # padded size = rows x longest; a text longer than the budget goes alone
        assert len(batch) * max(lengths[i] for i in batch) <= 100 or len(batch) == 1
    # sorted by length: every batch's texts are no longer than the next batch's shortest
    flat = [lengths[i] for batch in batches for i in batch]
    assert flat == sorted(flat)
    assert [len(b) for b in batches] == [3, 3, 1, 1, 1, 1]


def test_encode_of_no_texts_is_empty(tiny_encoder):
    from radgen.metrics.semantic import encode

    states = encode(tiny_encoder, [], 1)
    assert states.tokens == [] and states.sentence == []
