"""What this machine offers radgen and what radgen picks on it: `radgen env`, and the hardware line
every benchmark records.

Why a command: radgen's CPU fast paths (bf16 or fp32 weight packing, int8, the bf16 decoder `auto`
picks) are probed, not assumed (`radgen.models.fast`), so two laptops can run the same command
differently. `radgen env` shows which paths this machine gets and why, before a user times anything
or files a bug. Why the vector extensions: "AMD EPYC" names both an AVX2-only Zen 3 and an AVX-512
Zen 5, which differ 2x in decoding speed (docs/benchmarks.md, Performance), so a benchmark JSON
that says only "x86_64" cannot be compared with another.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

# The CPU features radgen's speed depends on (oneDNN's fp32/bf16/int8 kernels and radgen's own
# probes), in torch's spelling (`torch.cpu.get_capabilities`); the rest of the flags do not move it.
VECTOR_EXTENSIONS = (
    "avx2", "fma3", "f16c", "avx_vnni", "avx_ne_convert",
    "avx512_f", "avx512_bw", "avx512_vl", "avx512_dq", "avx512_vnni", "avx512_bf16", "avx512_fp16",
    "amx_tile", "amx_bf16", "amx_int8", "avx10_1", "avx10_2",
    "asimd", "sve", "sve2", "bf16", "i8mm",  # aarch64 (/proc/cpuinfo "Features")
)
# /proc/cpuinfo spells a few differently from torch
_CPUINFO_ALIASES = {"fma": "fma3"}


def _cpuinfo(path: Path = Path("/proc/cpuinfo")) -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo ({} where there is none: macOS, Windows)."""
    fields: dict[str, str] = {}
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return fields
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break  # one processor is enough: they are the same on the machines radgen targets
            continue
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    return fields


def _present_extensions(cpuinfo: dict[str, str]) -> list[str]:
    """VECTOR_EXTENSIONS this CPU has, by torch's own detection (`torch.cpu.get_capabilities`, recent torch)
    or the kernel's flag list (older torch, or a flag torch does not name), the latter matched with
    underscores ignored (the kernel's avx512f is torch's avx512_f)."""
    import torch

    capabilities = getattr(torch.cpu, "get_capabilities", None)
    try:
        found = dict(capabilities()) if capabilities is not None else {}
    except (RuntimeError, AttributeError):
        found = {}
    flags = {_CPUINFO_ALIASES.get(f, f).replace("_", "") for f in (cpuinfo.get("flags") or cpuinfo.get("Features") or "").split()}
    return [name for name in VECTOR_EXTENSIONS if found.get(name) is True or name.replace("_", "") in flags]


def cpu_facts() -> dict[str, Any]:
    """The CPU as radgen's speed sees it: name, architecture, x86 family/model (which tells an AVX2 Zen 3
    from an AVX-512 Zen 5, both "AMD EPYC"), the vector extensions that matter, the level torch's own
    kernels were built and capped at (ATEN_CPU_CAPABILITY), oneDNN's cap (ONEDNN_MAX_CPU_ISA), cores."""
    import torch

    from radgen.threads import allowed_cores

    info = _cpuinfo()
    family, model = info.get("cpu family"), info.get("model")
    kernels = getattr(torch.backends.cpu, "get_cpu_capability", lambda: None)()
    return {
        "name": info.get("model name") or platform.processor() or platform.machine(),
        "architecture": platform.machine(),
        "family_model": f"{family}/{model}" if family and model else None,
        "vector_extensions": _present_extensions(info),
        "torch_kernels": str(kernels) if kernels else None,
        "onednn_max_isa": os.environ.get("ONEDNN_MAX_CPU_ISA") or None,
        "cores_allowed": allowed_cores(),
        "logical_cores": os.cpu_count(),
    }


def cpu_summary(facts: dict[str, Any] | None = None) -> str:
    """One line for a benchmark's JSON and output, e.g. 'AMD EPYC (x86_64, family 26 model 2; avx2 fma3
    ... avx512_bf16; torch kernels AVX512; 2 cores)'."""
    facts = cpu_facts() if facts is None else facts
    parts = [facts["architecture"] + (f", family {facts['family_model'].replace('/', ' model ')}" if facts["family_model"] else "")]
    parts.append(" ".join(facts["vector_extensions"]) or "no listed vector extensions")
    if facts["torch_kernels"]:
        parts.append(f"torch kernels {facts['torch_kernels']}")
    if facts["onednn_max_isa"]:
        parts.append(f"ONEDNN_MAX_CPU_ISA={facts['onednn_max_isa']}")
    parts.append(f"{facts['cores_allowed']} cores")
    return f"{facts['name']} ({'; '.join(parts)})"


def radgen_choices(requested_threads: int | None = None) -> dict[str, Any]:
    """What radgen does on this machine: threads, the decoder dtype `auto` gives on CPU (and GPU),
    which CPU fast paths the probes allow, and the switches that change them."""
    import torch

    from radgen.models import fast
    from radgen.threads import pick_threads

    threads, source = pick_threads(requested_threads)
    cpu = torch.device("cpu")
    choices: dict[str, Any] = {
        "threads": threads,
        "threads_from": source,
        "cpu_dtype_auto": fast.resolve_inference_dtype("auto", cpu),
        "native_bf16": fast.native_bf16_cpu(),
        "packing_float32": fast.packing_supported(torch.float32),
        "packing_bfloat16": fast.packing_supported(torch.bfloat16),
        "half_weights": fast.half_weights_supported(),
        "int8": fast.int8_supported(),
        "int8_engines": [e for e in torch.backends.quantized.supported_engines if e != "none"],
        "fast_paths_disabled": fast.fast_paths_disabled(),
        "switches": {name: os.environ.get(name) for name in (fast.NO_FAST_PATHS_ENV, fast.PACK_ENV, fast.LEAN_ENV)
                     if os.environ.get(name) not in (None, "")},
        "cuda": None,
    }
    if torch.cuda.is_available():
        choices["cuda"] = {"device": torch.cuda.get_device_name(), "count": torch.cuda.device_count(),
                           "dtype_auto": fast.resolve_inference_dtype("auto", torch.device("cuda"))}
    return choices


def environment(requested_threads: int | None = None) -> dict[str, Any]:
    """Versions, the CPU, and radgen's choices on it (`radgen env --json`)."""
    import torch
    import transformers

    from radgen import __version__

    return {"radgen": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "cpu": cpu_facts(), "radgen_choices": radgen_choices(requested_threads)}


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def format_environment(env: dict[str, Any]) -> str:
    cpu, chosen = env["cpu"], env["radgen_choices"]
    if chosen["fast_paths_disabled"]:
        why = "the CPU fast paths are off"
    elif chosen["native_bf16"]:
        why = "this CPU computes bf16 natively"
    elif {"avx512_bf16", "amx_bf16"} & set(cpu["vector_extensions"]):
        why = "the CPU has bf16 instructions, but torch's or oneDNN's kernels are capped below them"
    else:
        why = "no AVX512-BF16 or AMX here: bf16 would be emulated, slower than fp32"
    if chosen["cpu_dtype_auto"] == "float16":
        why += "; fp16 weights with fp32 arithmetic (fbgemm) instead"
    lines = [
        f"radgen {env['radgen']}, torch {env['torch']}, transformers {env['transformers']}, Python {env['python']}",
        f"CPU: {cpu_summary(cpu)}",
        f"threads: {chosen['threads']} ({chosen['threads_from']}; --threads N or RADGEN_NUM_THREADS to choose)",
        f"decoder dtype (auto) on CPU: {chosen['cpu_dtype_auto']} ({why}; --dtype to choose)",
        f"weight packing (oneDNN) possible: fp32 {_yes(chosen['packing_float32'])}, bf16 {_yes(chosen['packing_bfloat16'])} "
        "(used per layer where a timing at load says it pays; RADGEN_PACK_LINEARS=0/1 to choose)",
        f"fp16 weights, fp32 arithmetic (--dtype float16, fbgemm): {_yes(chosen['half_weights'])}",
        f"int8 (--dtype int8): {_yes(chosen['int8'])}" + (f" (engines: {', '.join(chosen['int8_engines'])})" if chosen["int8"] else ""),
        "CPU fast paths: " + ("off (RADGEN_NO_CPU_FAST_PATHS)" if chosen["fast_paths_disabled"] else "on (RADGEN_NO_CPU_FAST_PATHS=1 turns them off)"),
    ]
    if chosen["switches"]:
        lines.append("switches set: " + ", ".join(f"{k}={v}" for k, v in chosen["switches"].items()))
    gpu = chosen["cuda"]
    lines.append(f"GPU: {gpu['device']} x{gpu['count']}, decoder dtype (auto) {gpu['dtype_auto']}" if gpu else "GPU: none (CUDA not available)")
    return "\n".join(lines)


def _env(args: argparse.Namespace) -> int:
    env = environment(args.threads)
    sys.stdout.write((json.dumps(env, indent=2) if args.json else format_environment(env)) + "\n")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("env", help="this machine's CPU (vector extensions) and what radgen picks on it",
                                   description="Show the CPU, its vector extensions, and what radgen picks on it: threads, "
                                               "the decoder dtype `auto` gives, which CPU fast paths (packed weights, int8) the "
                                               "probes allow. Paste it into bug reports and next to benchmark numbers.")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser.set_defaults(func=_env)
