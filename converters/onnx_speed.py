"""Float vs int8 ONNX latency on this machine, and what to say when int8 is the slower one."""

from __future__ import annotations

import platform
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: CPU flags that give ONNX Runtime fast int8 dot products (x86 VNNI, ARMv8.2 dot product)
INT8_DOT_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8", "asimddp")
WARMUP, RUNS = 3, 20


@dataclass(frozen=True, slots=True)
class SpeedCheck:
    float_ms: float
    int8_ms: float
    cpu: str
    int8_flags: tuple[str, ...]
    notice: str | None  # set when int8 is slower: the likely reason and what to try

    def as_dict(self) -> dict[str, object]:
        return {
            "float32_p50_ms": round(self.float_ms, 3),
            "int8_p50_ms": round(self.int8_ms, 3),
            "cpu": self.cpu,
            "int8_dot_flags": list(self.int8_flags),
            "int8_slower_notice": self.notice,
        }

    def summary(self) -> str:
        line = (
            f"latency on this machine ({self.cpu}): float32 {self.float_ms:.2f} ms, int8 {self.int8_ms:.2f} ms "
            f"(p50 of {RUNS}, ONNX Runtime CPU)"
        )
        return f"{line}\n{self.notice}" if self.notice else line


def cpu_flags(cpuinfo: str | None = None) -> set[str]:
    """The CPU feature flags (x86 ``flags``, ARM ``Features``) from /proc/cpuinfo; empty when unreadable."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
        except OSError:
            return set()
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            flags.update(value.split())
    return flags


def p50_ms(path: Path, sample: np.ndarray) -> float:
    """Median single-image latency of ``path`` in ONNX Runtime (CPU, default threads)."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = {sess.get_inputs()[0].name: np.ascontiguousarray(sample[None], np.float32)}
    for _ in range(WARMUP):
        sess.run(None, feed)
    times = []
    for _ in range(RUNS):
        t0 = time.perf_counter()
        sess.run(None, feed)
        times.append((time.perf_counter() - t0) * 1000)
    return float(np.median(times))


def compare(
    float_path: Path,
    int8_path: Path,
    sample: np.ndarray,
    *,
    per_channel: bool,
    fmt: str,
    method: str,
    activations: str = "int8",
    flags: set[str] | None = None,
) -> SpeedCheck:
    """Time both models on ``sample`` (one preprocessed image, no batch axis) and explain a slower int8."""
    from converters.progress import progress_bar

    with progress_bar() as bar:
        task = bar.add_task("timing float32 and int8 on this machine", total=2)
        float_ms = p50_ms(float_path, sample)
        bar.advance(task)
        int8_ms = p50_ms(int8_path, sample)
        bar.advance(task)
    flags = cpu_flags() if flags is None else flags
    have = tuple(f for f in INT8_DOT_FLAGS if f in flags)
    cpu = platform.machine() or "unknown CPU"
    notice = slower_notice(float_ms, int8_ms, have, cpu, per_channel=per_channel, fmt=fmt, method=method, activations=activations)
    return SpeedCheck(float_ms, int8_ms, cpu, have, notice)


def slower_notice(
    float_ms: float,
    int8_ms: float,
    have: tuple[str, ...],
    cpu: str,
    *,
    per_channel: bool,
    fmt: str,
    method: str,
    activations: str = "int8",
) -> str | None:
    """None when int8 is at least as fast; else the likely reason on this CPU and the options to try."""
    if int8_ms <= float_ms:
        return None
    x86 = cpu.lower() in ("x86_64", "amd64", "i686", "x86")
    if x86 and activations == "int8":
        reason = (
            "ONNX Runtime's x86 int8 kernels are built for uint8 activations x int8 weights (U8S8: VPMADDUBSW, "
            "VNNI's VPDPBUSD); int8 activations (S8S8, the QDQ default) take a slower path here"
        )
    elif have:
        reason = (
            f"this CPU has int8 dot-product instructions ({', '.join(have)}), so the likely cost is the "
            "Quantize/DequantizeLinear pairs: around the float detection head and around ops ONNX Runtime "
            "cannot fuse into int8 kernels; on a small model they outweigh the faster convolutions"
        )
    else:
        reason = (
            "this CPU has no int8 dot-product instructions (x86 VNNI: avx512_vnni/avx_vnni; ARM: asimddp), "
            "so ONNX Runtime's int8 kernels gain little over float32"
        )
    tries = []
    if x86 and activations == "int8":
        tries.append("--activations uint8 (U8S8, x86's native int8 path)")
    if fmt == "qdq":
        tries.append("--format qoperator (fused QLinearConv kernels instead of QDQ pairs; uint8 activations)")
    if per_channel:
        tries.append("--per-tensor (one scale per weight tensor: cheaper requantization)")
    tries.append(f"and, for accuracy rather than speed, another calibration --method than {method} (entropy, percentile)")
    arm = (
        "A Raspberry Pi runs ONNX Runtime's ARM kernels, which behave differently (S8S8 is their first choice): "
        "a Pi 5 (Cortex-A76) has dot-product instructions, a Pi 4 (Cortex-A72) does not; measure there "
        "(edge-agent bench) before choosing."
    )
    return (
        f"note: the int8 model is {int8_ms / float_ms:.2f}x SLOWER than float32 on this {cpu} machine "
        f"({int8_ms:.2f} vs {float_ms:.2f} ms): {reason}.\nTry: " + "; ".join(tries) + f".\n{arm}"
    )
