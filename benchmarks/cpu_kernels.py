"""The CPU kernels behind radgen's inference fast paths, each next to what it replaces, at the shapes
radgen-small decodes with (SmolLM2-135M: 9 query heads, 3 key/value heads of 64, a 49,152 x 576 LM
head; EfficientNet-Lite0 at 224², batch 32).

    PYTHONPATH=. python benchmarks/cpu_kernels.py [--threads 2] [--repeats 30] [--kernels int8,...] [--json cpu_kernels.json]

- attention: transformers' SDPA with `repeat_kv` copies vs `radgen.models.attention.grouped_query_sdpa`
  (prefill of 32 prompts, a drafted pass of 32 rows x 5 positions, re-scoring 14 texts), bf16;
- same-padding convolutions: timm's `Conv2dSame` (pad, then convolve) vs
  `radgen.models.same_padding.SameConv2d`, on the stride-2 layers of EfficientNet-Lite0, fp32 channels-last;
- token log-probabilities: `gather - logsumexp` vs `log_softmax` + gather (`radgen.models.fast.token_logprobs`),
  and for a re-scored batch's 1,060 positions one log-softmax pass vs row chunks;
- the LM head on 1, 6 and 16 positions (why small drafted passes run it on all positions at once);
- fp32 Linear vs the dynamic int8 Linear of `--dtype int8` (`radgen.models.int8`) at the decoder's
  shapes, on 1, 32 and 160 positions (a batch-1 step, a batch-32 step, a batch-32 drafted pass);
- fp32 packed Linears (oneDNN) vs fp16-weight Linears with fp32 arithmetic (`radgen.models.half_weights`,
  fbgemm) at the decoder's fused shapes and 1-1280 rows, streamed as `pack-hints` (`half-weights`);
- fp32 packed Linears laid out for one input row (`PackedLinear`'s layout before 2026-12-02) vs
  for `PACK_ROWS_HINT` rows (16), at the decoder's shapes and 1-160 rows, each through ~200 MB of
  distinct layers so the weights stream from memory as in a decoder pass (`pack-hints`; also 4 and 64
  rows in the "also" column of the JSON);
- a whole SmolLM2-135M-shaped decoder body (random weights, bf16, prepared as radgen prepares it) on
  padded batches: every position vs `radgen.models.padding_free` (MLPs and attention projections on
  the real positions only), for prefill, re-scoring and drafted-pass shapes with the share of real
  positions measured on 96 validation studies at batch 32.

Each row: milliseconds per call (median of `--repeats` after 3 warm-up calls) and the largest absolute
difference between the two outputs.
"""

from __future__ import annotations

import argparse
import statistics
import time
import types

import torch

from radgen.machine import cpu_summary


def _time(fn, repeats: int) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def attention_rows(repeats: int) -> list[dict]:
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    from radgen.models.attention import grouped_query_sdpa

    module = types.SimpleNamespace(num_key_value_groups=3, is_causal=True, training=False)
    rows = []
    for name, batch, queries, keys in [("prefill, 32 prompts", 32, 46, 46), ("drafted pass, 32 rows x 5", 32, 5, 100),
                                       ("re-scoring, 14 texts", 14, 62, 108), ("drafted pass, 1 row x 16", 1, 16, 120)]:
        torch.manual_seed(0)
        query = torch.randn(batch, 9, queries, 64, dtype=torch.bfloat16)
        key, value = (torch.randn(batch, 3, keys, 64, dtype=torch.bfloat16) for _ in range(2))
        mask = torch.ones(batch, 1, queries, keys, dtype=torch.bool).tril(keys - queries)
        plain = sdpa_attention_forward(module, query, key, value, mask, scaling=0.125)[0]
        grouped = grouped_query_sdpa(module, query, key, value, mask, scaling=0.125)[0]
        rows.append({"kernel": "attention", "shape": name,
                     "before_ms": _time(lambda: sdpa_attention_forward(module, query, key, value, mask, scaling=0.125), repeats),
                     "after_ms": _time(lambda: grouped_query_sdpa(module, query, key, value, mask, scaling=0.125), repeats),
                     "max_abs_diff": float((plain.float() - grouped.float()).abs().max())})
    return rows


def convolution_rows(repeats: int) -> list[dict]:
    from timm.layers.conv2d_same import Conv2dSame

    from radgen.models.same_padding import fold_same_padding

    rows = []
    for name, channels, size, kernel, groups in [("stem 3->32, 3x3, 224²", 3, 224, 3, 1), ("depthwise 96, 3x3, 112²", 96, 112, 3, 96),
                                                 ("depthwise 144, 5x5, 56²", 144, 56, 5, 144),
                                                 ("depthwise 240, 3x3, 28²", 240, 28, 3, 240)]:
        torch.manual_seed(0)
        out = 32 if groups == 1 else channels
        model = torch.nn.Sequential(Conv2dSame(channels, out, kernel, stride=2, groups=groups, bias=True)).eval()
        model.to(memory_format=torch.channels_last)
        x = torch.randn(32, channels, size, size).contiguous(memory_format=torch.channels_last)
        with torch.no_grad():
            timm_ms, want = _time(lambda: model(x), repeats), model(x)
            fold_same_padding(model)
            folded_ms, got = _time(lambda: model(x), repeats), model(x)
        rows.append({"kernel": "same-padding conv (batch 32)", "shape": name, "before_ms": timm_ms, "after_ms": folded_ms,
                     "max_abs_diff": float((want - got).abs().max())})
    return rows


def logprob_rows(repeats: int) -> list[dict]:
    from radgen.models.fast import token_logprobs

    rows = []
    for positions in (32, 160, 750):
        torch.manual_seed(0)
        logits = torch.randn(positions, 49152) * 5
        tokens = torch.randint(0, 49152, (positions,))
        old = lambda: logits.gather(1, tokens[:, None]).squeeze(1) - logits.logsumexp(-1)  # noqa: E731
        rows.append({"kernel": "token log-probs", "shape": f"{positions} positions", "before_ms": _time(old, repeats),
                     "after_ms": _time(lambda: token_logprobs(logits, tokens), repeats),
                     "max_abs_diff": float((old() - token_logprobs(logits, tokens)).abs().max())})
    # a batch of 32 re-scored reports: ~1,060 text positions, bf16 logits (the AVX-512 default);
    # before: one upcast + log-softmax over all rows, after: in row chunks (fast.LOGPROB_ROWS_CPU)
    logits = (torch.randn(1060, 49152) * 5).to(torch.bfloat16)
    tokens = torch.randint(0, 49152, (1060,))
    whole = lambda: logits.float().log_softmax(-1).gather(1, tokens[:, None]).squeeze(1)  # noqa: E731
    rows.append({"kernel": "token log-probs", "shape": "1060 positions, bf16 logits, one pass vs row chunks",
                 "before_ms": _time(whole, repeats), "after_ms": _time(lambda: token_logprobs(logits, tokens), repeats),
                 "max_abs_diff": float((whole() - token_logprobs(logits, tokens)).abs().max())})
    return rows


def head_rows(repeats: int) -> list[dict]:
    from radgen.models.fast import PackedLinear, packing_supported

    head = torch.nn.Linear(576, 49152, bias=False).to(torch.bfloat16)
    if packing_supported(torch.bfloat16):
        head = PackedLinear(head)
    rows = []
    with torch.no_grad():
        for positions in (1, 6, 16, 32, 160):
            hidden = torch.randn(positions, 576, dtype=torch.bfloat16)
            rows.append({"kernel": "LM head, bf16", "shape": f"{positions} positions", "before_ms": None,
                         "after_ms": _time(lambda: head(hidden), repeats), "max_abs_diff": None})
    return rows


def pack_hint_rows(repeats: int, stream_bytes: int = 200 * 2**20, rows_counts: tuple[int, ...] = (1, 5, 12, 17, 52, 160),
                   shapes: tuple[tuple[int, int], ...] = ((576, 576), (576, 192), (576, 3072), (1536, 576)),
                   also: tuple[int, ...] = (4, 64)) -> list[dict]:
    """fp32 PackedLinear laid out for 1 row vs for PACK_ROWS_HINT rows: ms a layer, through enough
    distinct layers of each (in, out) shape to fill `stream_bytes` (one layer timed again and again
    sits in the cache, where layouts hardly differ). `also`: other layouts, in the row's "also"."""
    from radgen.models.fast import PackedLinear, packing_supported
    from radgen.models.packed_linear import PACK_ROWS_HINT

    if not packing_supported(torch.float32):
        return []
    rows = []
    torch.manual_seed(0)
    with torch.no_grad():
        for in_features, out_features in shapes:
            layers = [torch.nn.Linear(in_features, out_features, bias=False) for _ in range(max(1, stream_bytes // (in_features * out_features * 4)))]
            layouts = {hint: [PackedLinear(layer, hint) for layer in layers] for hint in dict.fromkeys((1, PACK_ROWS_HINT, *also))}
            for count in rows_counts:
                x = torch.randn(count, in_features)
                ms = {hint: _time(lambda packed=packed: [layer.rows(x) for layer in packed], repeats) / len(layers)
                      for hint, packed in layouts.items()}
                diff = float((layouts[1][0].rows(x) - layouts[PACK_ROWS_HINT][0].rows(x)).abs().max())
                rows.append({"kernel": f"packed fp32 Linear, layout for 1 vs {PACK_ROWS_HINT} rows", "shape": f"{in_features}x{out_features}, {count} rows",
                             "before_ms": ms[1], "after_ms": ms[PACK_ROWS_HINT], "max_abs_diff": diff,
                             "also": {f"layout for {hint} rows": ms[hint] for hint in also}})
            del layouts, layers
    return rows


def half_weight_rows(repeats: int, stream_bytes: int = 200 * 2**20, rows_counts: tuple[int, ...] = (1, 12, 52, 85, 160, 640, 1280),
                     shapes: tuple[tuple[int, int], ...] = ((576, 960), (576, 576), (576, 3072), (1536, 576))) -> list[dict]:
    """fp32 PackedLinear (oneDNN, the fp32 default's layout) vs `HalfWeightLinear` (fbgemm: fp16
    weights, fp32 arithmetic) at the decoder's fused shapes (q/k/v, o, gate/up, down): ms a layer
    through enough distinct layers to fill `stream_bytes` (as `pack_hint_rows`); the difference is
    against the fp32 product of the same fp16-rounded weights."""
    from radgen.models.fast import PackedLinear, half_weights_supported, packing_supported
    from radgen.models.half_weights import HalfWeightLinear

    if not (packing_supported(torch.float32) and half_weights_supported()):
        return []
    rows = []
    torch.manual_seed(0)
    with torch.no_grad():
        for in_features, out_features in shapes:
            weights = [torch.randn(out_features, in_features) * 0.05
                       for _ in range(max(1, stream_bytes // (in_features * out_features * 4)))]
            packed = [PackedLinear.from_weight(w) for w in weights]
            half = [HalfWeightLinear(w) for w in weights]
            for count in rows_counts:
                x = torch.randn(count, in_features)
                before = _time(lambda: [layer.rows(x) for layer in packed], repeats) / len(weights)
                after = _time(lambda: [layer.rows(x) for layer in half], repeats) / len(weights)
                diff = float((half[0].rows(x) - x @ half[0].weight.T).abs().max())
                rows.append({"kernel": "Linear: packed fp32 (oneDNN) vs fp16 weights, fp32 arithmetic (fbgemm)",
                             "shape": f"{in_features}x{out_features}, {count} rows", "before_ms": before, "after_ms": after,
                             "max_abs_diff": diff})
            del packed, half, weights
    return rows


def int8_rows(repeats: int) -> list[dict]:
    """fp32 Linear vs the dynamic int8 Linear `radgen.models.int8` quantizes to (per-channel weights;
    the activation quantized on every call, which the timing includes), at the decoder's shapes."""
    from radgen.models.fast import int8_supported
    from radgen.models.int8 import quantize_decoder

    if not int8_supported():
        return []
    rows = []
    torch.manual_seed(0)
    for name, (inputs, outputs) in {"q_proj 576x576": (576, 576), "gate/up 576x1536": (576, 1536),
                                    "down 1536x576": (1536, 576), "LM head 576x49152": (576, 49152)}.items():
        linear = torch.nn.Linear(inputs, outputs, bias=False)
        quantized = quantize_decoder(torch.nn.Sequential(linear), None)  # as `--dtype int8` quantizes (no smoothing here)
        with torch.no_grad():
            for positions in (1, 32, 160):
                x = torch.randn(positions, inputs)
                rows.append({"kernel": "Linear fp32 vs dynamic int8", "shape": f"{name}, {positions} positions",
                             "before_ms": _time(lambda: linear(x), repeats), "after_ms": _time(lambda: quantized(x), repeats),
                             "max_abs_diff": float((linear(x) - quantized(x)).abs().max())})
    return rows


KERNELS = {"attention": attention_rows, "convolution": convolution_rows, "logprobs": logprob_rows, "head": head_rows,
           "int8": int8_rows, "pack-hints": lambda repeats: pack_hint_rows(max(5, repeats // 3)),
           "half-weights": lambda repeats: half_weight_rows(max(5, repeats // 3)),
           "padding": lambda repeats: padding_rows(max(3, repeats // 3))}  # a whole body call takes ~0.1-1 s


def _smollm_body(layers: int):
    from transformers import LlamaConfig, LlamaModel

    from radgen.models.attention import use_grouped_attention
    from radgen.models.fast import pack_linears, packing_pays

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=layers, num_attention_heads=9,
                         num_key_value_heads=3, attn_implementation="sdpa")
    body = LlamaModel(config).to(torch.bfloat16).eval()
    use_grouped_attention(body)
    if packing_pays(body):
        pack_linears(body)
    return body


def padding_rows(repeats: int, layers: int = 30) -> list[dict]:
    import copy

    from radgen.models.padding_free import use_padding_free_layers

    plain = _smollm_body(layers)
    compact = copy.deepcopy(plain)
    use_padding_free_layers(compact)
    rows = []
    # (name, rows, width, shortest real length, left padding?): real lengths spread evenly from the
    # shortest to the width, close to the real/total shares counted at batch 32 for prefill (1,163 of
    # 1,664) and re-scoring (1,018 of 1,458); the drafted pass is one with a fifth of it padding
    for name, batch, width, shortest, left in [("prefill, 32 prompts", 32, 52, 21, True), ("re-scoring, 18 texts", 18, 81, 32, False),
                                               ("drafted pass, 32 rows x 5", 32, 5, 3, False)]:
        lengths = torch.linspace(shortest, width, batch).round().long()
        mask = (torch.arange(width)[None] < lengths[:, None]).long()
        mask = mask.flip(1) if left else mask
        torch.manual_seed(1)
        embeds = torch.randn(batch, width, 576, dtype=torch.bfloat16)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        with torch.no_grad():
            def run(body):
                return body(inputs_embeds=embeds, attention_mask=mask, position_ids=positions, use_cache=False).last_hidden_state

            real = mask.bool()
            want, got = run(plain)[real].float(), run(compact)[real].float()
            # the largest value too: a bf16 rounding is relative (one step at 2-4 is 1/64), and which
            # one the products take depends on their row count on some CPUs (AMX)
            rows.append({"kernel": f"decoder body ({layers} layers), bf16", "shape": f"{name}, {int(mask.sum())} of {mask.numel()} real",
                         "before_ms": _time(lambda: run(plain), repeats), "after_ms": _time(lambda: run(compact), repeats),
                         "max_abs_diff": float((want - got).abs().max()), "max_abs_value": float(want.abs().max())})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--kernels", default=",".join(KERNELS), help=f"comma-separated groups (default all: {', '.join(KERNELS)})")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    chosen = [k for k in args.kernels.split(",") if k]
    if not chosen or set(chosen) - set(KERNELS):
        parser.error(f"--kernels takes {', '.join(KERNELS)}")
    rows = [row for kernel in chosen for row in KERNELS[kernel](args.repeats)]
    print("| kernel | shape | before (ms) | radgen (ms) | speed-up | max abs diff |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        before = f"{r['before_ms']:.2f}" if r["before_ms"] is not None else "–"
        ratio = f"{r['before_ms'] / r['after_ms']:.2f}x" if r["before_ms"] is not None else "–"
        diff = f"{r['max_abs_diff']:.1e}" if r["max_abs_diff"] is not None else "–"
        print(f"| {r['kernel']} | {r['shape']} | {before} | {r['after_ms']:.2f} | {ratio} | {diff} |")
    if args.json:
        from radgen.io import atomic_write_json

        atomic_write_json(args.json, {"threads": args.threads, "torch": torch.__version__, "cpu": cpu_summary(),
                                      "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "rows": rows})


if __name__ == "__main__":
    main()
