"""Where the default decoding's time goes, and the least time the same work can take on this CPU.

    PYTHONPATH=. python benchmarks/decoding_phases.py --manifest data/iu-phantom/manifest.jsonl \
        [--model radgen/assets/default_model] [--split test] [--limit 64] [--batch-sizes 1,32]
        [--threads 2] [--plain] [--ops] [--json decoding_phases.json]

Why: drafted decoding (`radgen.models.speculative`) feeds the decoder fewer positions than plain
greedy only at batch 1; at batch 32 both feed about as many (plain: prompt + one position a token;
drafted: prompt + kept and rejected drafts + edited reports scored again), so its speed-up there is
how much faster it runs the same products, and the CPU's matrix-product rate caps it. This script
measures both sides of that argument in one process:

- the default decoding (`radgen generate`'s model preparation and greedy settings, the shipped
  draft table, reset per batch size) over the split's studies, with the wall time split into
  phases: `image` (encoder, finding head, connector), `prefill` (visual tokens + prompt + the first
  draft), `passes` (drafted passes), `pick scoring` (the whole LM head over the picks, for their
  log-probabilities and the shortlist's check, `radgen.models.shortlist`), `re-scoring` (findings-
  edited reports scored on the decoding's caches, `radgen.models.rescoring`) and `other` (Python:
  drafting, the accept walk, the edits, tokenizing); each phase's real (unpadded) decoder positions
  and LM-head positions;
- this CPU's best fp32 matrix-product rate (`F.linear` at the decoder's weight shapes, large row
  counts: GFLOP/s) and its memory read rate (GB/s), and from them each decoder phase's floor: the
  larger of its positions' multiply-adds at that rate and one read of the weights per call.
  Attention (a few percent of the products at these lengths), the image side (counted as
  measured) and everything that is neither a product nor a weight read are left out, so the floor
  is below anything reachable;
- with `--plain`, plain HF + peft greedy (`drafted_decoding.py`'s `plain-peft`) over the same
  batches, and the speed-up the floor would give over it;
- with `--ops`, each batch size's first batch decoded once more under torch's profiler: the CPU
  time of its matrix products, convolutions, attention and every other op, and the rate its matrix
  products ran at (the decoder positions' and LM-head rows' multiply-adds over the products' time),
  next to the best fp32 rate above. A product rate near that best says the products cannot get
  faster on this CPU at this precision, only fewer. (The LM head's shortlist products count as time,
  not as work, so the rate is a slight underestimate; the profiler's own cost lands in "outside ops".)

Shares and floors are per report. The phase clock charges each moment to the innermost phase
running, so the phases add up to the wall time.
"""

from __future__ import annotations

import copy
import json
import os
import time
from collections import defaultdict
from collections.abc import Callable

import torch
import torch.nn.functional as F

from drafted_decoding import greedy_settings, run, study_parser
from radgen.data.dataset import lateral_inputs
from radgen.data.study import read_manifest
from radgen.generate.decode import generation_dataset, load_model, study_batches
from radgen.machine import cpu_summary
from radgen.models import report_decoding, speculative
from radgen.models.fast import base_model, decoder_precision, lm_body_and_head
from radgen.models.padding_free import new_positions_mask
from radgen.models.shortlist import SCORE_CHUNK

PHASES = ("image", "prefill", "passes", "pick scoring", "re-scoring", "other")


class PhaseClock:
    """Exclusive wall time per phase: entering a phase pauses the one it interrupts."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.positions: dict[str, int] = defaultdict(int)  # decoder body, real positions
        self.head_positions: dict[str, int] = defaultdict(int)  # whole LM head rows
        self.calls: dict[str, int] = defaultdict(int)  # decoder body calls
        self.head_calls: dict[str, int] = defaultdict(int)  # whole LM head products
        self.redecoded_rows = 0
        self._stack: list[str] = []
        self._mark = 0.0
        self._prefill_due: list[bool] = []  # per drafted_greedy call in flight: its first body call is the prefill

    def reset(self) -> None:
        self.seconds.clear()
        self.positions.clear()
        self.head_positions.clear()
        self.calls.clear()
        self.head_calls.clear()
        self.redecoded_rows = 0

    @property
    def current(self) -> str | None:
        return self._stack[-1] if self._stack else None

    def enter(self, phase: str) -> None:
        now = time.perf_counter()
        if self._stack:
            self.seconds[self._stack[-1]] += now - self._mark
        self._stack.append(phase)
        self._mark = now

    def leave(self) -> None:
        now = time.perf_counter()
        self.seconds[self._stack.pop()] += now - self._mark
        self._mark = now

    def wrap(self, function: Callable, phase: str, drafting: bool = False) -> Callable:
        def timed(*args, **kwargs):
            self.enter(phase)
            if drafting:
                self._prefill_due.append(True)
            try:
                return function(*args, **kwargs)
            finally:
                if drafting:
                    self._prefill_due.pop()
                self.leave()
        return timed


def instrument(model, clock: PhaseClock) -> None:
    """Charge the model's work to the clock's phases (wrapping the functions and modules each runs in)."""
    model.generate = clock.wrap(model.generate, "other")
    model.features_and_head_input = clock.wrap(model.features_and_head_input, "image")
    model.finding_logits = clock.wrap(model.finding_logits, "image")
    model.connector.forward = clock.wrap(model.connector.forward, "image")
    # module globals, looked up when called (report_decoding imports these by name, _decode_again calls drafted_greedy in speculative)
    report_decoding.drafted_greedy = clock.wrap(speculative.drafted_greedy, "passes", drafting=True)
    speculative.drafted_greedy = report_decoding.drafted_greedy
    picks = speculative.score_picks

    def scored_picks(head, short, hidden, chosen, greedy, *args, **kwargs):
        rows = sum(len(row) for row in chosen)
        clock.head_positions["pick scoring"] += rows
        clock.head_calls["pick scoring"] += -(-rows // SCORE_CHUNK)
        return picks(head, short, hidden, chosen, greedy, *args, **kwargs)
    speculative.score_picks = clock.wrap(scored_picks, "pick scoring")
    for name in ("score_tails", "score_continuations", "label_position_logprobs"):
        setattr(report_decoding, name, clock.wrap(getattr(report_decoding, name), "re-scoring"))
    again = speculative._decode_again

    def decode_again(out, rows, *args, **kwargs):
        clock.redecoded_rows += len(rows)
        return again(out, rows, *args, **kwargs)
    speculative._decode_again = decode_again

    body = lm_body_and_head(model.decoder)[0]

    def before(_module, _args, kwargs) -> None:
        phase = clock.current
        if phase == "passes" and clock._prefill_due and clock._prefill_due[-1]:
            clock._prefill_due[-1] = False
            phase = "prefill"
        clock.enter(phase or "other")
        new = new_positions_mask(kwargs)
        real = int(new.sum()) if new is not None else 0
        clock.positions[phase or "other"] += real
        clock.calls[phase or "other"] += 1
        if phase == "re-scoring":  # its LM head runs on every fed position
            clock.head_positions[phase] += real
            clock.head_calls[phase] += 1

    body.register_forward_pre_hook(before, with_kwargs=True)
    body.register_forward_hook(lambda *_: clock.leave())


def product_flops(model) -> tuple[float, float, list[tuple[int, int]]]:
    """Multiply-adds x 2 per position of the decoder body's linear layers and of its LM head, and
    the body's distinct weight shapes (in, out), from the model as stored (`load_model(prepare=False)`)."""
    body, head = lm_body_and_head(model.decoder)
    embedding = base_model(model.decoder).get_input_embeddings().weight
    shapes, body_flops = set(), 0.0
    for name, module in body.named_modules():
        if isinstance(module, torch.nn.Linear) and "lora_" not in name:
            shapes.add((module.in_features, module.out_features))
            body_flops += 2.0 * module.in_features * module.out_features
    if not body_flops:
        raise SystemExit("decoding_phases.py: the decoder body has no nn.Linear layers to count (only HF Linear decoders are supported)")
    head_weight = head.weight if hasattr(head, "weight") else embedding
    return body_flops, 2.0 * head_weight.shape[0] * head_weight.shape[1], sorted(shapes)


def product_rate(shapes: list[tuple[int, int]], rows: tuple[int, ...] = (512, 2048), repeats: int = 10) -> float:
    """This CPU's best fp32 F.linear rate over the body's weight shapes and large row counts, GFLOP/s (median of `repeats`)."""
    best = 0.0
    for in_features, out_features in shapes:
        weight = torch.randn(out_features, in_features)
        for m in rows:
            x = torch.randn(m, in_features)
            for _ in range(2):
                F.linear(x, weight)
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                F.linear(x, weight)
                times.append(time.perf_counter() - start)
            best = max(best, 2.0 * m * in_features * out_features / sorted(times)[len(times) // 2] / 1e9)
    return best


def read_rate(megabytes: int = 512, repeats: int = 5) -> float:
    """This CPU's rate of streaming fp32 memory through a reduction, GB/s (median of `repeats`): a
    pass at batch 1 reads every weight once, whatever its few positions compute."""
    x = torch.ones(megabytes * 2**20 // 4)
    x.sum()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        x.sum()
        times.append(time.perf_counter() - start)
    return x.numel() * 4 / sorted(times)[len(times) // 2] / 1e9


# torch op names (profiler keys) by kind; anything else is "other ops"
OP_KINDS = {
    "matrix products": ("linear_dynamic_fp16", "linear_dynamic", "_linear_pointwise", "aten::addmm", "aten::mm", "aten::bmm",
                        "aten::matmul", "aten::linear", "qlinear"),
    "convolutions": ("convolution",),
    "attention": ("scaled_dot_product",),
}


def op_kind(name: str) -> str:
    for kind, keys in OP_KINDS.items():
        if any(key in name for key in keys):
            return kind
    return "other ops"


def op_profile(model, batch, draft_tokens: int, settings: dict, clock: PhaseClock, body_flops: float, head_flops: float) -> dict:
    """One batch decoded under torch's profiler: CPU seconds a report by op kind (self time, so nested ops
    are not counted twice), the rest of the wall time as "outside ops" (Python, the profiler's own cost),
    and the matrix products' rate in GFLOP/s."""
    from torch.profiler import ProfilerActivity, profile

    clock.reset()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        timed = run(model, [batch], draft_tokens, {}, settings)
    reports = timed["reports"]
    seconds: dict[str, float] = defaultdict(float)
    for event in prof.key_averages():
        seconds[op_kind(event.key)] += event.self_cpu_time_total / 1e6
    inside = sum(seconds.values())
    kinds = {kind: seconds.get(kind, 0.0) / reports for kind in (*OP_KINDS, "other ops")}
    kinds["outside ops"] = max(0.0, timed["seconds"] - inside) / reports
    work = sum(clock.positions.values()) * body_flops + sum(clock.head_positions.values()) * head_flops
    products = seconds.get("matrix products", 0.0)
    return {"reports": reports, "s_per_report": timed["seconds"] / reports, "kinds_s_per_report": kinds,
            "product_gflops": work / products / 1e9 if products else 0.0}


def main() -> None:
    parser = study_parser(__doc__.splitlines()[0], split="test", batch_sizes="1,32")
    parser.add_argument("--plain", action="store_true", help="also time plain HF + peft greedy over the same batches")
    parser.add_argument("--ops", action="store_true", help="also profile one batch a batch size: time by op kind, the products' rate")
    parser.set_defaults(limit=64)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    stored = load_model(args.model, prepare=False)
    body_flops, head_flops, shapes = product_flops(stored)
    plain = stored if args.plain else None
    model = load_model(args.model)
    settings, draft_tokens = greedy_settings(model)
    shipped_table = copy.deepcopy(model.report_draft)
    clock = PhaseClock()
    instrument(model, clock)
    studies = read_manifest(args.manifest)
    root = os.path.dirname(os.path.abspath(args.manifest))
    chosen = [s for s in studies if s.split == args.split][: args.limit]
    dataset = generation_dataset(model, chosen, root, "findings")
    warm = next(study_batches(generation_dataset(model, [s for s in studies if s.split == "train"][:2], root, "findings"), 2))
    for each in [model] + ([plain] if plain is not None else []):
        each.generate(pixel_values=warm["pixel_values"], contexts=warm.get("contexts"), **lateral_inputs(warm), num_beams=1,
                      draft_tokens=draft_tokens if each is model else 0, max_new_tokens=8)
    rate, bandwidth = product_rate(shapes), read_rate()
    width = next(model.decoder.parameters()).element_size()  # bytes a weight, as decoding reads it
    body_bytes, head_bytes = body_flops / 2 * width, head_flops / 2 * width
    print(f"fp32 matrix products: best {rate:.0f} GFLOP/s over the body's shapes; memory read {bandwidth:.1f} GB/s; "
          f"{body_flops / 1e6:.0f} MFLOP a body position ({body_bytes / 1e6:.0f} MB of weights), "
          f"{head_flops / 1e6:.0f} MFLOP an LM-head row ({head_bytes / 1e6:.0f} MB)", flush=True)

    rows = []
    for batch_size in [int(b) for b in args.batch_sizes.split(",")]:
        batches = list(study_batches(dataset, batch_size))
        model.report_draft = copy.deepcopy(shipped_table)  # no batch size drafts from the reports another wrote for these studies
        clock.reset()
        # drafted_decoding's loop, exactly what `radgen generate` passes (its pass counter unused here)
        timed = run(model, batches, draft_tokens, {}, settings)
        seconds, reports, tokens = timed["seconds"], timed["reports"], timed["tokens"]
        phases = {}
        for phase in PHASES:
            # both must happen and may overlap: the floor is the larger of the products at the best rate
            # and one read of the weights per call
            work = clock.positions[phase] * body_flops + clock.head_positions[phase] * head_flops
            reads = clock.calls[phase] * body_bytes + clock.head_calls[phase] * head_bytes
            phases[phase] = {"s_per_report": clock.seconds[phase] / reports, "share": clock.seconds[phase] / seconds,
                             "positions_per_report": clock.positions[phase] / reports,
                             "head_positions_per_report": clock.head_positions[phase] / reports,
                             "calls_per_report": clock.calls[phase] / reports,
                             "floor_s_per_report": max(work / (rate * 1e9), reads / (bandwidth * 1e9)) / reports}
        floor = sum(p["floor_s_per_report"] for p in phases.values())
        row = {"batch_size": batch_size, "reports": reports, "tokens_per_report": tokens / reports, "s_per_report": seconds / reports,
               "redecoded_rows": clock.redecoded_rows, "phases": phases, "floor_s_per_report": floor,
               "floor_with_image_s_per_report": floor + phases["image"]["s_per_report"]}
        if plain is not None:
            timed = run(plain, batches, 0, {}, settings)
            plain_seconds, plain_tokens = timed["seconds"], timed["tokens"]
            row.update(plain_s_per_report=plain_seconds / reports, plain_tokens_per_report=plain_tokens / reports,
                       speedup_vs_plain=plain_seconds / seconds, ceiling_vs_plain=plain_seconds / reports / row["floor_with_image_s_per_report"])
        if args.ops:
            model.report_draft = copy.deepcopy(shipped_table)
            row["ops"] = op_profile(model, batches[0], draft_tokens, settings, clock, body_flops, head_flops)
        rows.append(row)
        print(json.dumps(row), flush=True)

    print("\n| batch | phase | s per report | share | decoder calls | decoder positions | LM-head rows | floor |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        for phase, p in row["phases"].items():
            print(f"| {row['batch_size']} | {phase} | {p['s_per_report']:.3f} | {p['share']:.0%} | {p['calls_per_report']:.2f} "
                  f"| {p['positions_per_report']:.1f} "
                  f"| {p['head_positions_per_report']:.1f} | {p['floor_s_per_report']:.3f} |")
        line = (f"| {row['batch_size']} | **all** | **{row['s_per_report']:.3f}** | | | | | {row['floor_s_per_report']:.3f} "
                f"(+ image as measured: {row['floor_with_image_s_per_report']:.3f}) |")
        print(line)
        if "plain_s_per_report" in row:
            print(f"\nbatch {row['batch_size']}: plain HF + peft {row['plain_s_per_report']:.3f} s a report; the default {row['speedup_vs_plain']:.2f}x; "
                  f"at the floor (image as measured, the decoder's products at {rate:.0f} GFLOP/s or its weight reads at "
                  f"{bandwidth:.1f} GB/s, nothing else) {row['ceiling_vs_plain']:.2f}x")
    for row in rows:
        if "ops" in row:
            ops = row["ops"]
            shares = ", ".join(f"{kind} {t:.3f}" for kind, t in ops["kinds_s_per_report"].items())
            print(f"\nbatch {row['batch_size']}, one batch of {ops['reports']} under the profiler ({ops['s_per_report']:.3f} s a report): "
                  f"{shares} s a report; matrix products at {ops['product_gflops']:.0f} GFLOP/s (best fp32 rate {rate:.0f})")
    info = {"model": args.model, "split": args.split, "studies": len(chosen), "threads": args.threads, "draft_tokens": draft_tokens,
            "settings": settings, "decoder_dtype": decoder_precision(model.decoder),
            "product_rate_gflops": rate, "read_rate_gb_s": bandwidth, "body_mflop_per_position": body_flops / 1e6,
            "head_mflop_per_row": head_flops / 1e6, "torch": torch.__version__, "cpu": cpu_summary(),
            "loadavg_after": os.getloadavg(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "rows": rows}
    if args.json:
        from radgen.io import atomic_write_json

        atomic_write_json(args.json, info)


if __name__ == "__main__":
    main()
