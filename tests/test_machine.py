"""`radgen env` and the hardware line benchmarks record: the CPU, its vector extensions, radgen's choices."""

import json
import platform

import torch

from radgen.cli import main
from radgen.machine import VECTOR_EXTENSIONS, _cpuinfo, _present_extensions, cpu_facts, cpu_summary, radgen_choices
from radgen.models.fast import NO_FAST_PATHS_ENV

CPUINFO = """processor	: 0
vendor_id	: AuthenticAMD
cpu family	: 25
model		: 1
model name	: AMD EPYC 7B13
flags		: fpu sse2 avx fma f16c avx2 sha_ni

processor	: 1
model name	: something else
flags		: avx512f
"""


def test_cpuinfo_reads_the_first_processor_only(tmp_path):
    path = tmp_path / "cpuinfo"
    path.write_text(CPUINFO)
    fields = _cpuinfo(path)
    assert fields["model name"] == "AMD EPYC 7B13" and fields["cpu family"] == "25" and fields["model"] == "1"
    assert "avx512f" not in fields["flags"]
    assert _cpuinfo(tmp_path / "missing") == {}


def test_extensions_from_the_kernels_flags_where_torch_cannot_tell(monkeypatch):
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {}, raising=False)
    # an AVX2-only Zen 3: the kernel spells fma and avx512f without torch's suffix/underscore
    assert _present_extensions({"flags": "fpu sse2 avx fma f16c avx2 sha_ni"}) == ["avx2", "fma3", "f16c"]
    assert _present_extensions({"flags": "avx2 avx512f avx512bw avx512_bf16 amx_tile"}) == [
        "avx2", "avx512_f", "avx512_bw", "avx512_bf16", "amx_tile"]
    assert _present_extensions({"Features": "fp asimd evtstrm sve bf16 i8mm"}) == ["asimd", "sve", "bf16", "i8mm"]  # aarch64
    assert _present_extensions({}) == []


def test_cpu_facts_name_this_machine():
    facts = cpu_facts()
    assert facts["architecture"] == platform.machine()
    assert set(facts["vector_extensions"]) <= set(VECTOR_EXTENSIONS)
    assert facts["cores_allowed"] >= 1
    name = _cpuinfo().get("model name")
    if name:
        assert facts["name"] == name
    line = cpu_summary(facts)
    assert line.startswith(facts["name"] + " (" + platform.machine()) and f"{facts['cores_allowed']} cores" in line


def test_summary_spells_out_family_extensions_and_caps():
    facts = {"name": "AMD EPYC", "architecture": "x86_64", "family_model": "25/1", "vector_extensions": ["avx2", "fma3"],
             "torch_kernels": "AVX2", "onednn_max_isa": "AVX2", "cores_allowed": 2, "logical_cores": 2}
    assert cpu_summary(facts) == "AMD EPYC (x86_64, family 25 model 1; avx2 fma3; torch kernels AVX2; ONEDNN_MAX_CPU_ISA=AVX2; 2 cores)"
    bare = dict(facts, family_model=None, vector_extensions=[], torch_kernels=None, onednn_max_isa=None, cores_allowed=1)
    assert cpu_summary(bare) == "AMD EPYC (x86_64; no listed vector extensions; 1 cores)"


def test_choices_follow_the_fast_path_switch(monkeypatch):
    monkeypatch.setenv(NO_FAST_PATHS_ENV, "1")
    off = radgen_choices(requested_threads=1)
    assert off["fast_paths_disabled"] and off["cpu_dtype_auto"] == "float32"
    assert not (off["native_bf16"] or off["packing_float32"] or off["packing_bfloat16"] or off["half_weights"] or off["int8"])
    assert (off["threads"], off["threads_from"]) == (1, "argument")
    assert off["switches"] == {NO_FAST_PATHS_ENV: "1"}
    monkeypatch.delenv(NO_FAST_PATHS_ENV)
    # oneDNN capped below AVX512-BF16: bf16 would be emulated, so auto is fp16 weights where fbgemm runs, else fp32
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    capped = radgen_choices()
    assert capped["cpu_dtype_auto"] == ("float16" if capped["half_weights"] else "float32") and not capped["native_bf16"]
    assert capped["fast_paths_disabled"] is False


def test_radgen_env_prints_text_and_json(monkeypatch, capsys):
    monkeypatch.setenv(NO_FAST_PATHS_ENV, "1")
    monkeypatch.delenv("RADGEN_NUM_THREADS", raising=False)
    assert main(["--threads", "1", "env"]) == 0
    text = capsys.readouterr().out
    assert f"CPU: {cpu_summary()}" in text
    assert "decoder dtype (auto) on CPU: float32 (the CPU fast paths are off" in text
    assert "threads: 1 (argument" in text and "weight packing (oneDNN) possible: fp32 no, bf16 no" in text
    assert main(["--threads", "1", "env", "--json"]) == 0
    env = json.loads(capsys.readouterr().out)
    assert env["torch"] == torch.__version__ and env["cpu"]["architecture"] == platform.machine()
    assert env["radgen_choices"]["threads"] == 1 and env["radgen_choices"]["cpu_dtype_auto"] == "float32"
