"""How far two prediction files of the same studies agree, token by token (e.g. fp32 vs int8 decoding).

    PYTHONPATH=. python benchmarks/prediction_agreement.py fp32.jsonl int8.jsonl [--section findings]

For every study in both files: is the generated text identical; the share of the reference file's
tokens before the first different token; position-wise token agreement. `radgen compare` gives the
metric deltas with confidence intervals; this gives how often the decoding itself changed.
"""

from __future__ import annotations

import argparse
import json

from radgen.io import read_jsonl


def agreement(reference: list[dict], candidate: list[dict], section: str = "findings") -> dict:
    by_id = {str(row["study_id"]): row for row in candidate}
    same_text, prefix_shares, agree, positions, studies = 0, [], 0, 0, 0
    for row in reference:
        other = by_id.get(str(row["study_id"]))
        if other is None:
            continue
        studies += 1
        same_text += row.get(section, "") == other.get(section, "")
        a, b = row.get("tokens") or [], other.get("tokens") or []
        first_diff = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
        prefix_shares.append(1.0 if a == b else first_diff / max(1, len(a)))
        agree += sum(x == y for x, y in zip(a, b))
        positions += max(len(a), len(b))
    if studies == 0:
        raise SystemExit("the two files share no study_id")
    return {"studies": studies, "identical_text": same_text, "identical_share": same_text / studies,
            "mean_share_before_first_divergence": sum(prefix_shares) / studies,
            "positionwise_token_agreement": agree / max(1, positions)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("reference")
    parser.add_argument("candidate")
    parser.add_argument("--section", default="findings")
    args = parser.parse_args()
    print(json.dumps(agreement(read_jsonl(args.reference), read_jsonl(args.candidate), args.section), indent=2))


if __name__ == "__main__":
    main()
