"""What the machine does fast: the training precision to default to, and whether to compile the training step."""

from __future__ import annotations

import ctypes
import sys

import torch


def default_precision() -> str:
    """bf16-mixed where bfloat16 arithmetic is fast (CUDA GPUs from Ampere on, CPUs with AVX-512 BF16), else 32-true.

    On other CPUs oneDNN emulates bfloat16 and an epoch takes several times longer than in float32.
    """
    if torch.cuda.is_available():
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "32-true"
    return "bf16-mixed" if fast_cpu_bfloat16() else "32-true"


def fast_cpu_bfloat16() -> bool:
    """Whether this CPU does bfloat16 matmuls natively (AVX-512 class); elsewhere oneDNN emulates them slowly."""
    check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    return bool(check and check())


def compile_mode(compile: bool, device: torch.device, world_size: int) -> str | None:
    """How `torch.compile` runs the training step: None (eager), "reduce-overhead" or "default".

    Off unless asked for, on every device: the eager step is the one measured to finish on a GPU. Asked for, one
    GPU gets "reduce-overhead" (inductor's fused kernels replayed as CUDA graphs: a step of this small network is
    hundreds of tiny kernels, so launches are the cost there); several processes (DDP) and CPUs get "default"
    (fused kernels, no graphs).
    """
    if not compile:
        return None
    return "reduce-overhead" if device.type == "cuda" and world_size == 1 else "default"


def keep_freed_memory(*, any_size: bool = False) -> None:
    """Ask glibc's malloc to keep freed blocks of up to 32 MiB for reuse instead of returning them to the system;
    with `any_size`, blocks of every size (none is mapped apart from the heap).

    Pricing allocates the same few multi-MiB tensors on every call; by default each is mapped fresh and faulted in
    page by page, which costs more than the arithmetic on it (benchmarks/SERVE.md). Training allocates the same
    tensors at every step, some over glibc's 32 MiB limit for the threshold (the comparables network embeds every
    candidate at every step), so training keeps every size: faulting them in again was most of such a run's system
    time (benchmarks/COMPARABLES.md). `predict` keeps every size too: each chunk of a file allocates the same tensors
    again. Freed memory stays with the process, up to 256 MiB at the heap's top. Only where the C library is glibc
    (Linux); elsewhere nothing changes. The numbers computed are the same either way.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # musl and friends
        return
    m_trim_threshold, m_top_pad, m_mmap_threshold, m_mmap_max = -1, -2, -3, -4  # <malloc.h>
    libc.mallopt(m_mmap_threshold, 32 * 2**20)  # glibc's largest allowed on 64-bit
    libc.mallopt(m_trim_threshold, 256 * 2**20)
    libc.mallopt(m_top_pad, 64 * 2**20)
    if any_size:
        libc.mallopt(m_mmap_max, 0)  # no block is mapped on its own: all come from (and return to) the heap


def cpu_name() -> str:
    """The CPU's model name (e.g. "AMD EPYC"), or the machine's architecture where the system does not say."""
    import platform

    try:
        return next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.machine()


def cores() -> int:
    """The cores this process may run on."""
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def machine_line() -> str:
    """This machine in the words a benchmark's header needs: the CPU, its cores, and whether it has AVX-512 BF16
    (what makes figures differ across machines), e.g. "AMD EPYC, 2 cores, AVX-512 BF16"."""
    return f"{cpu_name()}, {cores()} cores, {'AVX-512 BF16' if fast_cpu_bfloat16() else 'no AVX-512 BF16'}"
