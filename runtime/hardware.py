"""What this machine is: CPU, SIMD features, memory, GPUs, and what the llama.cpp build can use.

Each part is detected by a small function; the parsing of what the system reports
(/proc/cpuinfo, cgroup files, nvidia-smi's CSV) is done by pure functions tested on real-shaped
text. Nothing here raises for a missing part: a machine without a GPU, NVML or /proc simply
reports less.
"""

from __future__ import annotations

import functools
import os
import platform
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass, field

MIB = 1024**2

# x86 /proc/cpuinfo flag -> the name llama.cpp's system-info line uses for it, in display order.
_X86_SIMD = [
    ("pni", "SSE3"), ("ssse3", "SSSE3"), ("avx", "AVX"), ("avx2", "AVX2"), ("f16c", "F16C"),
    ("fma", "FMA"), ("bmi2", "BMI2"), ("avx_vnni", "AVX_VNNI"), ("avx512f", "AVX512"),
    ("avx512vbmi", "AVX512_VBMI"), ("avx512_vnni", "AVX512_VNNI"), ("avx512_bf16", "AVX512_BF16"),
    ("amx_tile", "AMX_TILE"), ("amx_int8", "AMX_INT8"), ("amx_bf16", "AMX_BF16"),
]
# ARM /proc/cpuinfo "Features" -> name; 64-bit kernels call NEON `asimd`, 32-bit ones `neon`.
_ARM_SIMD = [
    ("asimd", "NEON"), ("neon", "NEON"), ("fphp", "FP16_VA"), ("asimddp", "DOTPROD"), ("i8mm", "MATMUL_INT8"),
    ("sve", "SVE"), ("sve2", "SVE2"), ("bf16", "BF16"), ("sme", "SME"),
]


@dataclass
class GpuInfo:
    name: str
    vendor: str  # "nvidia" | "apple"
    memory_total_bytes: int
    memory_free_bytes: int
    backend: str  # the llama.cpp backend that drives it: "cuda" | "metal"
    # Apple GPUs share the system RAM: there is one pool, not RAM + VRAM.
    unified_memory: bool = False


@dataclass
class HardwareInfo:
    cpu_model: str
    physical_cores: int
    logical_cores: int
    simd_features: list[str]
    ram_total_bytes: int
    ram_available_bytes: int
    gpus: list[GpuInfo] = field(default_factory=list)
    backend: dict = field(default_factory=dict)  # hearth.runtime.engine.backend_info()
    system: str = ""  # e.g. "Linux x86_64"

    @property
    def gpu_offload(self) -> bool:
        """The llama.cpp build can offload layers to a GPU (CUDA, Metal, ...)."""
        return bool(self.backend.get("gpu_offload"))

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class CpuInfo:
    model: str
    physical_cores: int
    logical_cores: int
    flags: frozenset[str]


# --- pure parsing -------------------------------------------------------------------------------


def parse_cpuinfo(text: str) -> CpuInfo:
    """Parse Linux /proc/cpuinfo (x86 or ARM).

    Physical cores are the distinct (physical id, core id) pairs; ARM kernels list neither,
    and there every processor is its own core.
    """
    model = ""
    logical = 0
    cores: set[tuple[str, str]] = set()
    flags: set[str] = set()
    block: dict[str, str] = {}
    for line in text.splitlines() + [""]:
        if not line.strip():
            if "processor" in block:
                logical += 1
                if "core id" in block:
                    cores.add((block.get("physical id", "0"), block["core id"]))
            block = {}
            continue
        key, _, value = line.partition(":")
        key, value = key.strip().lower(), value.strip()
        block[key] = value
        if key in ("model name", "cpu model", "hardware") and not model:
            model = value
        elif key in ("flags", "features"):
            flags.update(value.split())
    physical = len(cores) if cores else logical
    return CpuInfo(model, physical, logical, frozenset(flags))


def simd_features(flags: frozenset[str] | set[str]) -> list[str]:
    """The SIMD extensions that matter to llama.cpp, named as its system-info line names them."""
    names = [name for flag, name in _X86_SIMD + _ARM_SIMD if flag in flags]
    return list(dict.fromkeys(names))


def usable_cores(physical: int, logical: int, usable_logical: int) -> tuple[int, int]:
    """Cores this process may use when affinity or a cgroup quota allows fewer than the host has.

    The physical count shrinks in proportion (2 hardware threads per core stays 2 per core).
    """
    logical = max(1, logical)
    usable_logical = max(1, min(logical, usable_logical))
    if usable_logical == logical:
        return max(1, min(physical, logical)), logical
    per_core = max(1, round(logical / max(1, physical)))
    return max(1, usable_logical // per_core), usable_logical


def parse_cgroup_cpu_max(text: str) -> float | None:
    """cgroup v2 `cpu.max` ("max 100000" or "200000 100000") -> CPUs allowed, None if unlimited."""
    parts = text.split()
    if len(parts) != 2 or parts[0] == "max":
        return None
    try:
        return int(parts[0]) / int(parts[1])
    except (ValueError, ZeroDivisionError):
        return None


def cgroup_memory_room(max_text: str, current_text: str) -> tuple[int, int] | None:
    """cgroup v2 `memory.max` and `memory.current` -> (limit, room left), None if unlimited."""
    limit = max_text.strip()
    if not limit or limit == "max":
        return None
    try:
        limit_bytes, used = int(limit), int(current_text.strip() or 0)
    except ValueError:
        return None
    return limit_bytes, max(0, limit_bytes - used)


def parse_nvidia_smi_csv(text: str) -> list[GpuInfo]:
    """Output of `nvidia-smi --query-gpu=name,memory.total,memory.free --format=csv,noheader,nounits`.

    One line per GPU: `NVIDIA GeForce RTX 4090, 24564, 23991` (MiB). Unparseable lines are
    skipped ("[N/A]" memory on some virtual GPUs).
    """
    gpus = []
    for line in text.splitlines():
        parts = [p.strip() for p in line.rsplit(",", 2)]
        if len(parts) != 3:
            continue
        name, total, free = parts
        try:
            gpus.append(GpuInfo(name, "nvidia", int(float(total)) * MIB, int(float(free)) * MIB, "cuda"))
        except ValueError:
            continue
    return gpus


# --- detection (I/O) ----------------------------------------------------------------------------


def _read_text(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read()
    except OSError:
        return None


def _sysctl(name: str) -> str:
    try:
        out = subprocess.run(["sysctl", "-n", name], capture_output=True, text=True, timeout=5)
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def _usable_logical(logical: int) -> int:
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else logical
    quota = parse_cgroup_cpu_max(_read_text("/sys/fs/cgroup/cpu.max") or "")
    if quota is not None:
        usable = min(usable, max(1, int(quota)))
    return usable


def detect_cpu() -> tuple[str, int, int, list[str]]:
    """CPU model, physical and logical cores this process may use, SIMD features."""
    import psutil

    logical_total = psutil.cpu_count(logical=True) or os.cpu_count() or 1
    physical_total = psutil.cpu_count(logical=False) or logical_total
    model, flags = platform.processor() or platform.machine(), frozenset()
    text = _read_text("/proc/cpuinfo")
    if text:
        parsed = parse_cpuinfo(text)
        model, flags = parsed.model or model, parsed.flags
        if parsed.logical_cores:
            physical_total, logical_total = parsed.physical_cores, parsed.logical_cores
    elif sys.platform == "darwin":
        model = _sysctl("machdep.cpu.brand_string") or model
        physical_total = int(_sysctl("hw.physicalcpu") or physical_total)
        logical_total = int(_sysctl("hw.logicalcpu") or logical_total)
        # Every Apple Silicon core has NEON; the dot-product extension arrived with the M1.
        if platform.machine() == "arm64":
            i8mm = {"i8mm"} if _sysctl("hw.optional.arm.FEAT_I8MM") == "1" else set()
            flags = frozenset({"asimd", "asimddp"} | i8mm)
    physical, logical = usable_cores(physical_total, logical_total, _usable_logical(logical_total))
    return model, physical, logical, simd_features(flags)


def cpu_weight_buffers(simd: list[str] | tuple[str, ...], override: str | None = None,
                       prompt_only: bool = False) -> tuple[str, str | None]:
    """Which of llama.cpp's CPU "extra" weight buffers a model's weights may use: "all" (AMX
    tiles and repacked rows, as llama.cpp chooses), "repack" (repacked rows only, `repack.py`) or
    "off" (plain kernels), and the -v line when not "all".

    On CPUs with AMX, llama.cpp 0.3.36's AMX matrix kernel crashed every multi-token decode in
    this project's test VMs (Xeon with AMX_INT8, SIGSEGV in ggml_backend_amx_mul_mat, even with
    the tile permission granted). There the repacked rows alone are used, never touching AMX:
    Qwen2.5-Coder 1.5B Q4_K_M decoded 1.34x faster with them than with plain kernels (1.33x with
    8 sequences), while prompts went 0.74x as fast (llama.cpp's tiled K-quant kernel, used for
    plain weights from 8 rows on, is faster there): a win unless a prompt is over ~7x longer than
    its answer (README, Benchmarks). So a `prompt_only` load (scoring) keeps plain kernels there.
    HEARTH_CPU_REPACK=1 (or all) allows all (AMX too), =repack the repacked rows only (for any
    load), =0 (or off) none.
    """
    choice = (override or "").strip().lower()
    if choice in ("1", "all"):
        return "all", None
    if choice in ("0", "off"):
        return "off", f"CPU weight repacking off (HEARTH_CPU_REPACK={choice})"
    if choice == "repack":
        return "repack", "CPU weights: repacked rows without AMX (HEARTH_CPU_REPACK=repack)"
    if "AMX_INT8" in simd:
        if prompt_only:
            return "off", "CPU weights: plain kernels for prompts only (repacked rows evaluate prompts slower)"
        return "repack", ("CPU weights: repacked rows without AMX (llama.cpp's AMX kernels crash on this CPU; "
                          "HEARTH_CPU_REPACK=1 to try them, =0 for plain kernels)")
    return "all", None


def flash_attention(n_gpu_layers: int, override: str | None = None,
                    speculative: bool = False) -> tuple[bool | None, str]:
    """Whether llama.cpp computes attention with its flash-attention kernel (None: it decides),
    and the -v line that says why.

    Off when the model runs on the CPU alone: there llama.cpp's choice (on) made the time to
    first token grow with the context — a conversation's turn 10 started 1.6-2x slower than turn
    1 through `hearth serve` and 3.4-3.8x through `hearth chat` (Xeon, 2 cores, SmolLM2), where
    without it turn 10 starts as fast as turn 1 — for a 0-4% difference in batch throughput.
    Except for speculative decoding (`speculative`): without flash attention no call of several
    rows computes exactly as single rows there (`costs.py`), so greedy drafts could never be
    checked. With layers on a GPU, llama.cpp decides. HEARTH_FLASH_ATTN=1 / 0 / auto overrides."""
    choice = (override or "").strip().lower()
    if choice in ("0", "1", "auto"):
        on = {"0": False, "1": True, "auto": None}[choice]
        said = {False: "off", True: "on", None: "as llama.cpp decides"}[on]
        return on, f"flash attention {said}: HEARTH_FLASH_ATTN={choice}"
    if n_gpu_layers > 0:
        return None, "flash attention as llama.cpp decides: layers on the GPU"
    if speculative:
        return None, "flash attention as llama.cpp decides (on): speculative decoding checks greedy drafts in its exact calls"
    return False, ("flash attention off: the model runs on the CPU, where it made later turns of a conversation "
                   "start later (HEARTH_FLASH_ATTN=1 to turn it on)")


GGML_TYPE_F32, GGML_TYPE_F16, GGML_TYPE_Q8_0, GGML_TYPE_BF16 = 0, 1, 8, 30  # ggml's type ids
KV_TYPES = {"f16": GGML_TYPE_F16, "bf16": GGML_TYPE_BF16, "q8_0": GGML_TYPE_Q8_0}


def speculation_kv_type(n_gpu_layers: int, flash_attn: bool | None, speculative: bool,
                        override: str | None = None) -> tuple[int | None, str | None]:
    """The KV cache type (a GGML type id; None: llama.cpp's F16) for a context, and the -v line.

    BF16 when a model runs on the CPU alone with flash attention to speculate. With an F16 (or
    F32) cache, llama.cpp's CPU flash attention decodes a single row over 512 or more KV cells
    (from position 256 on, the cells padded to 256) by splitting the cells among the threads and
    merging the parts: a different summation than the same row inside a call of several rows, so
    no greedy draft can be checked exactly there. A BF16 (or Q8_0) cache keeps every call of up
    to 16 rows on one kernel: measured bit-exact at every position checked, 48 to 2000 (SmolLM2,
    Xeon with AMX, see `costs.py`). BF16 takes as much memory as F16 and keeps 8 bits of mantissa
    per value. HEARTH_SPEC_KV=f16|bf16|q8_0 overrides (f16: llama.cpp's default)."""
    choice = (override or "").strip().lower()
    if not speculative or n_gpu_layers > 0 or flash_attn is False:
        return None, None
    if choice in KV_TYPES:
        kind = KV_TYPES[choice]
        return (None if kind == GGML_TYPE_F16 else kind), f"KV cache {choice.upper()}: HEARTH_SPEC_KV={choice}"
    return GGML_TYPE_BF16, ("KV cache BF16: speculative decoding on the CPU (an F16 cache makes no call of several "
                            "rows exact from position 256 on; HEARTH_SPEC_KV=f16 to keep it)")


@functools.lru_cache(maxsize=1)
def _local_simd() -> tuple[str, ...]:
    """This machine's SIMD features from /proc/cpuinfo (cheap: no llama.cpp, no psutil)."""
    text = _read_text("/proc/cpuinfo") or ""
    return tuple(simd_features(parse_cpuinfo(text).flags)) if text else ()


def local_cpu_weight_buffers(prompt_only: bool = False) -> str:
    """`cpu_weight_buffers` for this machine and the current HEARTH_CPU_REPACK."""
    return cpu_weight_buffers(_local_simd(), os.environ.get("HEARTH_CPU_REPACK"), prompt_only)[0]


def detect_memory() -> tuple[int, int]:
    """RAM total and available, bounded by a cgroup (container) memory limit when there is one."""
    import psutil

    vm = psutil.virtual_memory()
    total, available = int(vm.total), int(vm.available)
    room = cgroup_memory_room(_read_text("/sys/fs/cgroup/memory.max") or "",
                              _read_text("/sys/fs/cgroup/memory.current") or "0")
    if room is not None:
        total, available = min(total, room[0]), min(available, room[1])
    return total, available


def detect_nvidia_gpus() -> list[GpuInfo]:
    """NVIDIA GPUs through NVML (pynvml) when importable, else `nvidia-smi` when on PATH."""
    try:
        import pynvml  # type: ignore[import-not-found]
    except ImportError:
        pynvml = None
    if pynvml is not None:
        try:
            pynvml.nvmlInit()
            try:
                gpus = []
                for i in range(pynvml.nvmlDeviceGetCount()):
                    handle = pynvml.nvmlDeviceGetHandleByIndex(i)
                    name = pynvml.nvmlDeviceGetName(handle)
                    name = name.decode() if isinstance(name, bytes) else str(name)
                    mem = pynvml.nvmlDeviceGetMemoryInfo(handle)
                    gpus.append(GpuInfo(name, "nvidia", int(mem.total), int(mem.free), "cuda"))
                return gpus
            finally:
                pynvml.nvmlShutdown()
        except Exception:  # NVML present but no driver / no device: try nvidia-smi
            pass
    smi = shutil.which("nvidia-smi")
    if not smi:
        return []
    try:
        out = subprocess.run(
            [smi, "--query-gpu=name,memory.total,memory.free", "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return []
    return parse_nvidia_smi_csv(out.stdout) if out.returncode == 0 else []


def detect_apple_gpu(ram_total: int, ram_available: int) -> list[GpuInfo]:
    """The Apple Silicon GPU (Metal). It shares system RAM, so its memory is the RAM's."""
    if sys.platform != "darwin" or platform.machine() != "arm64":
        return []
    chip = _sysctl("machdep.cpu.brand_string") or "Apple Silicon"
    return [GpuInfo(f"{chip} GPU", "apple", ram_total, ram_available, "metal", unified_memory=True)]


def detect_backend() -> dict:
    """What the installed llama.cpp build supports; an unloadable library reports no offload."""
    try:
        from .engine import backend_info

        return backend_info()
    except Exception as exc:  # a broken llama_cpp install must not break `hearth hw`
        return {"gpu_offload": False, "system_info": "", "error": f"{type(exc).__name__}: {exc}"}


def detect_hardware() -> HardwareInfo:
    cpu_model, physical, logical, simd = detect_cpu()
    ram_total, ram_available = detect_memory()
    gpus = detect_nvidia_gpus() + detect_apple_gpu(ram_total, ram_available)
    return HardwareInfo(
        cpu_model=cpu_model,
        physical_cores=physical,
        logical_cores=logical,
        simd_features=simd,
        ram_total_bytes=ram_total,
        ram_available_bytes=ram_available,
        gpus=gpus,
        backend=detect_backend(),
        system=f"{platform.system()} {platform.machine()}",
    )


_GPU_BACKEND_LIBS = ("ggml-cuda", "ggml-metal", "ggml-vulkan", "ggml-hip", "ggml-sycl", "ggml-musa", "ggml-opencl")


def gpu_backend_built() -> bool:
    """Whether the installed llama.cpp has a GPU backend, from its library files alone (loading
    llama.cpp to ask takes a second and starts its threads; a pull or a `list` need neither)."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or not spec.origin:
        return False
    names = [p.name for p in (Path(spec.origin).parent / "lib").glob("*")]
    return any(lib in name for name in names for lib in _GPU_BACKEND_LIBS)


def memory_budget_bytes() -> int:
    """Memory a model may use, as the fit planner sees this machine: available RAM (container
    limits included) plus free GPU memory when this llama.cpp build can offload to it.
    Cheap: reads the system, never loads llama.cpp."""
    ram_total, ram_available = detect_memory()
    if not gpu_backend_built():
        return int(ram_available)
    gpus = detect_nvidia_gpus() + detect_apple_gpu(ram_total, ram_available)
    return int(ram_available + sum(g.memory_free_bytes or 0 for g in gpus if not g.unified_memory))
