"""Hardware detection: the parsers on real-shaped system text, and detection on this machine."""

from __future__ import annotations

import os
import stat

import pytest

from hearth.runtime import hardware
from hearth.runtime.hardware import (GpuInfo, cgroup_memory_room, parse_cgroup_cpu_max, parse_cpuinfo,
                                     parse_nvidia_smi_csv, simd_features, usable_cores)

MIB = 1024**2

# Two sockets, one core each, two hardware threads per core (trimmed /proc/cpuinfo of a Xeon VM).
XEON_CPUINFO = """\
processor	: 0
vendor_id	: GenuineIntel
cpu family	: 6
model		: 85
model name	: Intel(R) Xeon(R) Platinum 8259CL CPU @ 2.50GHz
physical id	: 0
siblings	: 2
core id		: 0
cpu cores	: 1
flags		: fpu vme sse sse2 ht syscall nx lm pni pclmulqdq ssse3 fma cx16 sse4_1 sse4_2 avx f16c bmi1 avx2 bmi2 avx512f avx512dq avx512cd avx512bw avx512vl avx512_vnni

processor	: 1
vendor_id	: GenuineIntel
model name	: Intel(R) Xeon(R) Platinum 8259CL CPU @ 2.50GHz
physical id	: 0
siblings	: 2
core id		: 0
cpu cores	: 1
flags		: fpu vme sse sse2 ht syscall nx lm pni pclmulqdq ssse3 fma cx16 sse4_1 sse4_2 avx f16c bmi1 avx2 bmi2 avx512f avx512dq avx512cd avx512bw avx512vl avx512_vnni

processor	: 2
vendor_id	: GenuineIntel
model name	: Intel(R) Xeon(R) Platinum 8259CL CPU @ 2.50GHz
physical id	: 1
siblings	: 2
core id		: 0
cpu cores	: 1
flags		: fpu vme sse sse2 ht syscall nx lm pni pclmulqdq ssse3 fma cx16 sse4_1 sse4_2 avx f16c bmi1 avx2 bmi2 avx512f avx512dq avx512cd avx512bw avx512vl avx512_vnni

processor	: 3
vendor_id	: GenuineIntel
model name	: Intel(R) Xeon(R) Platinum 8259CL CPU @ 2.50GHz
physical id	: 1
siblings	: 2
core id		: 0
cpu cores	: 1
flags		: fpu vme sse sse2 ht syscall nx lm pni pclmulqdq ssse3 fma cx16 sse4_1 sse4_2 avx f16c bmi1 avx2 bmi2 avx512f avx512dq avx512cd avx512bw avx512vl avx512_vnni
"""

# AWS Graviton3 (Neoverse V1): ARM kernels list neither a model name nor core ids.
GRAVITON_CPUINFO = """\
processor	: 0
BogoMIPS	: 2100.00
Features	: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm jscvt fcma lrcpc dcpop sha3 sm3 sm4 asimddp sha512 sve asimdfhm dit uscat ilrcpc flagm ssbs paca pacg dcpodp svei8mm svebf16 i8mm bf16 dgh rng
CPU implementer	: 0x41
CPU architecture: 8
CPU variant	: 0x1
CPU part	: 0xd40
CPU revision	: 1

processor	: 1
BogoMIPS	: 2100.00
Features	: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm jscvt fcma lrcpc dcpop sha3 sm3 sm4 asimddp sha512 sve asimdfhm dit uscat ilrcpc flagm ssbs paca pacg dcpodp svei8mm svebf16 i8mm bf16 dgh rng
CPU implementer	: 0x41
CPU architecture: 8
CPU variant	: 0x1
CPU part	: 0xd40
CPU revision	: 1
"""

# Raspberry Pi 4 (32-bit kernel): the model is on a trailing "Hardware" line, NEON is "neon".
RPI_CPUINFO = """\
processor	: 0
model name	: ARMv7 Processor rev 3 (v7l)
BogoMIPS	: 108.00
Features	: half thumb fastmult vfp edsp neon vfpv3 tls vfpv4 idiva idivt vfpd32 lpae evtstrm crc32
CPU implementer	: 0x41

Hardware	: BCM2711
Revision	: c03111
"""

# `nvidia-smi --query-gpu=name,memory.total,memory.free --format=csv,noheader,nounits`
NVIDIA_SMI_CSV = """\
NVIDIA H100 80GB HBM3, 81559, 81008
NVIDIA GeForce RTX 4090, 24564, 23216
GRID A100D-4C, [N/A], [N/A]
"""


def test_parse_cpuinfo_counts_distinct_cores_not_hardware_threads():
    info = parse_cpuinfo(XEON_CPUINFO)
    assert info.model == "Intel(R) Xeon(R) Platinum 8259CL CPU @ 2.50GHz"
    assert (info.physical_cores, info.logical_cores) == (2, 4)
    assert simd_features(info.flags) == ["SSE3", "SSSE3", "AVX", "AVX2", "F16C", "FMA", "BMI2",
                                         "AVX512", "AVX512_VNNI"]


def test_simd_features_of_a_zen4_flags_line():
    # an AMD EPYC (Zen 4) flags line, trimmed; names as llama.cpp's system-info line prints them
    flags = ("fpu sse sse2 pni pclmulqdq ssse3 fma sse4_1 sse4_2 avx f16c bmi1 avx2 bmi2 avx512f avx512dq "
             "avx512ifma avx512cd avx512bw avx512vl avx512_bf16 avx512vbmi avx512_vbmi2 avx512_vnni")
    assert simd_features(set(flags.split())) == ["SSE3", "SSSE3", "AVX", "AVX2", "F16C", "FMA", "BMI2", "AVX512",
                                                 "AVX512_VBMI", "AVX512_VNNI", "AVX512_BF16"]


def test_parse_cpuinfo_arm_without_core_ids_counts_each_processor_as_a_core():
    info = parse_cpuinfo(GRAVITON_CPUINFO)
    assert info.model == ""
    assert (info.physical_cores, info.logical_cores) == (2, 2)
    assert simd_features(info.flags) == ["NEON", "FP16_VA", "DOTPROD", "MATMUL_INT8", "SVE", "BF16"]


def test_parse_cpuinfo_32bit_arm():
    info = parse_cpuinfo(RPI_CPUINFO)
    assert info.model == "ARMv7 Processor rev 3 (v7l)"
    assert info.logical_cores == 1
    # 32-bit kernels call NEON "neon", not "asimd"
    assert simd_features(info.flags) == ["NEON"]


def test_parse_cpuinfo_empty_text():
    info = parse_cpuinfo("")
    assert (info.model, info.physical_cores, info.logical_cores) == ("", 0, 0)


@pytest.mark.parametrize(
    "physical, logical, usable, expected",
    [
        (2, 2, 2, (2, 2)),  # all cores usable
        (8, 16, 16, (8, 16)),  # hyper-threaded host
        (8, 16, 4, (2, 4)),  # affinity to 4 hardware threads = 2 cores
        (64, 64, 2, (2, 2)),  # container limited to 2 CPUs
        (8, 16, 1, (1, 1)),  # never below one
        (4, 2, 2, (2, 2)),  # physical never above logical
        (2, 2, 99, (2, 2)),  # usable never above the host
    ],
)
def test_usable_cores(physical, logical, usable, expected):
    assert usable_cores(physical, logical, usable) == expected


@pytest.mark.parametrize(
    "text, expected",
    [("max 100000\n", None), ("200000 100000\n", 2.0), ("50000 100000", 0.5), ("", None), ("x y", None)],
)
def test_parse_cgroup_cpu_max(text, expected):
    assert parse_cgroup_cpu_max(text) == expected


@pytest.mark.parametrize(
    "max_text, current_text, expected",
    [
        ("max\n", "123\n", None),
        ("8589934592\n", "2147483648\n", (8589934592, 6442450944)),
        ("1000\n", "5000\n", (1000, 0)),  # over the limit: no room, not negative
        ("", "0", None),
    ],
)
def test_cgroup_memory_room(max_text, current_text, expected):
    assert cgroup_memory_room(max_text, current_text) == expected


def test_parse_nvidia_smi_csv_reads_mib_and_skips_unknown_memory():
    gpus = parse_nvidia_smi_csv(NVIDIA_SMI_CSV)
    assert gpus == [
        GpuInfo("NVIDIA H100 80GB HBM3", "nvidia", 81559 * MIB, 81008 * MIB, "cuda"),
        GpuInfo("NVIDIA GeForce RTX 4090", "nvidia", 24564 * MIB, 23216 * MIB, "cuda"),
    ]


def test_parse_nvidia_smi_csv_name_with_comma():
    # rsplit: only the last two fields are numbers
    (gpu,) = parse_nvidia_smi_csv("Tesla T4, rev A, 15360, 15100\n")
    assert gpu.name == "Tesla T4, rev A"
    assert gpu.memory_free_bytes == 15100 * MIB


def test_detect_nvidia_gpus_runs_nvidia_smi_from_path(tmp_path, monkeypatch):
    """Where NVML is not importable, the nvidia-smi on PATH is asked for name and memory as CSV."""
    try:
        import pynvml  # noqa: F401

        pytest.skip("pynvml is installed: NVML is used before nvidia-smi")
    except ImportError:
        pass
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    args_file = tmp_path / "args"
    script = bin_dir / "nvidia-smi"
    script.write_text(f'#!/bin/sh\necho "$@" > {args_file}\nprintf "NVIDIA L4, 23034, 22700\\n"\n')
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    gpus = hardware.detect_nvidia_gpus()
    assert args_file.read_text().split() == ["--query-gpu=name,memory.total,memory.free",
                                             "--format=csv,noheader,nounits"]
    assert gpus == [GpuInfo("NVIDIA L4", "nvidia", 23034 * MIB, 22700 * MIB, "cuda")]


def test_detect_nvidia_gpus_failing_nvidia_smi_means_no_gpu(tmp_path, monkeypatch):
    try:
        import pynvml  # noqa: F401

        pytest.skip("pynvml is installed: NVML is used before nvidia-smi")
    except ImportError:
        pass
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "nvidia-smi"
    # what nvidia-smi prints on a machine whose driver is not loaded
    script.write_text("#!/bin/sh\necho 'NVIDIA-SMI has failed because it could not communicate "
                      "with the NVIDIA driver.'\nexit 9\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    assert hardware.detect_nvidia_gpus() == []


def test_detect_cpu_and_memory_on_this_machine():
    model, physical, logical, simd = hardware.detect_cpu()
    assert 1 <= physical <= logical <= (os.cpu_count() or logical)
    assert isinstance(model, str) and isinstance(simd, list)
    total, available = hardware.detect_memory()
    assert 0 < available <= total


def test_flash_attention_is_off_on_the_cpu_and_llamas_choice_on_a_gpu():
    from hearth.runtime.hardware import flash_attention

    assert flash_attention(0)[0] is False  # CPU only: time to first token stays flat as a conversation grows
    assert flash_attention(99)[0] is None and flash_attention(5)[0] is None  # layers on a GPU: llama.cpp decides
    assert flash_attention(0, "1")[0] is True and flash_attention(99, "0")[0] is False
    assert flash_attention(0, "auto")[0] is None and flash_attention(0, " ")[0] is False


def test_the_cost_curve_key_tells_the_attention_kernels_apart(tmp_path):
    from hearth.runtime.costs import curve_key

    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF" + bytes(100))
    keys = {curve_key(model, {"cpu": "x"}, 2, 0, flash) for flash in (None, False, True)}
    assert len(keys) == 3
    assert curve_key(model, {"cpu": "x"}, 2, 0, True, 30) not in keys  # another KV cache type, other exact calls


def test_a_model_loaded_to_speculate_on_the_cpu_gets_a_bf16_kv_cache():
    from hearth.runtime.hardware import GGML_TYPE_BF16, GGML_TYPE_Q8_0, speculation_kv_type

    assert speculation_kv_type(0, None, True)[0] == GGML_TYPE_BF16
    assert "BF16" in speculation_kv_type(0, True, True)[1]
    assert speculation_kv_type(0, None, False) == (None, None)  # not speculating: llama.cpp's F16
    assert speculation_kv_type(20, None, True) == (None, None)  # layers on a GPU: its own kernels
    assert speculation_kv_type(0, False, True) == (None, None)  # no flash attention: nothing is exact anyway
    assert speculation_kv_type(0, None, True, "f16")[0] is None
    assert speculation_kv_type(0, None, True, "Q8_0")[0] == GGML_TYPE_Q8_0
    assert speculation_kv_type(0, None, True, "bogus")[0] == GGML_TYPE_BF16


def test_the_flash_attention_choice_is_explained():
    from hearth.runtime.hardware import flash_attention

    assert flash_attention(0)[1].startswith("flash attention off: the model runs on the CPU")
    assert flash_attention(0, "1")[1] == "flash attention on: HEARTH_FLASH_ATTN=1"
    assert "speculative" in flash_attention(0, None, speculative=True)[1]
    assert flash_attention(99)[1].endswith("layers on the GPU")


def test_cpu_weight_buffers_skip_amx_but_keep_repacked_rows():
    from hearth.runtime.hardware import cpu_weight_buffers

    amx = ["AVX2", "AVX512", "AMX_INT8"]
    assert cpu_weight_buffers(["AVX2", "FMA"]) == ("all", None)  # llama.cpp chooses (repacked rows on AVX2)
    mode, why = cpu_weight_buffers(amx)
    assert mode == "repack" and "AMX" in why and "HEARTH_CPU_REPACK=1" in why
    assert cpu_weight_buffers(amx, "1") == ("all", None)
    assert cpu_weight_buffers(amx, "0")[0] == "off" and cpu_weight_buffers(["AVX2"], " 0 ")[0] == "off"
    assert cpu_weight_buffers(amx, "off")[0] == "off" and cpu_weight_buffers(amx, "ALL")[0] == "all"
    assert cpu_weight_buffers(["AVX2"], "repack")[0] == "repack"
    assert cpu_weight_buffers(amx, "bogus")[0] == "repack"  # unknown values keep the default


def test_the_cost_curve_key_tells_the_weight_buffers_apart(tmp_path):
    from hearth.runtime.costs import curve_key

    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF" + bytes(100))
    keys = {curve_key(model, {"cpu": "x", "cpu_weights": mode}, 2, 0) for mode in ("all", "repack", "off")}
    assert len(keys) == 3


def test_prompt_only_loads_keep_plain_kernels_where_repack_is_only_the_default():
    from hearth.runtime.hardware import cpu_weight_buffers

    amx = ["AVX2", "AVX512", "AMX_INT8"]
    assert cpu_weight_buffers(amx, prompt_only=True)[0] == "off"
    assert cpu_weight_buffers(amx, "repack", prompt_only=True)[0] == "repack"  # asked for: kept
    assert cpu_weight_buffers(["AVX2"], prompt_only=True) == ("all", None)
