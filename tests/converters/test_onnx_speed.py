"""The slower-int8 notice: what it blames on which CPU, and what it suggests (pure; no toolchain needed)."""

from __future__ import annotations

from converters.onnx_speed import INT8_DOT_FLAGS, cpu_flags, slower_notice

X86 = "processor\t: 0\nflags\t\t: fpu sse4_2 avx2 avx512f avx512_vnni\n\nprocessor\t: 1\nflags\t\t: fpu avx2\n"
PI4 = "processor\t: 0\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\nCPU part\t: 0xd08\n"
PI5 = "processor\t: 0\nFeatures\t: fp asimd evtstrm aes pmull crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc asimddp\n"


def test_cpu_flags_read_x86_flags_and_arm_features() -> None:
    assert {"avx2", "avx512_vnni", "fpu"} <= cpu_flags(X86)
    assert "asimddp" not in cpu_flags(PI4) and "asimd" in cpu_flags(PI4)
    assert "asimddp" in cpu_flags(PI5)
    assert cpu_flags("") == set()


def test_no_notice_when_int8_is_faster_or_equal() -> None:
    assert slower_notice(10.0, 4.0, (), "x86_64", per_channel=True, fmt="qdq", method="minmax") is None
    assert slower_notice(10.0, 10.0, (), "x86_64", per_channel=True, fmt="qdq", method="minmax") is None


def test_without_dot_product_instructions_the_cpu_is_blamed() -> None:
    have = tuple(f for f in INT8_DOT_FLAGS if f in cpu_flags(PI4))
    text = slower_notice(10.0, 12.7, have, "aarch64", per_channel=True, fmt="qdq", method="minmax")
    assert text is not None and "1.27x SLOWER" in text and "no int8 dot-product instructions" in text
    assert "--format qoperator" in text and "--per-tensor" in text and "--method" in text and "Pi" in text


def test_on_x86_int8_activations_are_blamed_first() -> None:
    """Measured on an avx512_vnni x86 box (Ultralytics YOLOv8n export): S8S8 QDQ 1.9x slower than float, U8S8 1.6x faster."""
    have = tuple(f for f in INT8_DOT_FLAGS if f in cpu_flags(X86))
    text = slower_notice(46.0, 93.0, have, "x86_64", per_channel=True, fmt="qdq", method="minmax", activations="int8")
    assert text is not None and "U8S8" in text and text.index("--activations uint8") < text.index("--format qoperator")


def test_with_vnni_and_uint8_the_qdq_overhead_is_blamed_and_tried_options_are_not_repeated() -> None:
    have = tuple(f for f in INT8_DOT_FLAGS if f in cpu_flags(X86))
    assert have == ("avx512_vnni",)
    text = slower_notice(1.0, 3.0, have, "x86_64", per_channel=False, fmt="qoperator", method="entropy", activations="uint8")
    assert text is not None and "avx512_vnni" in text and "Quantize/DequantizeLinear" in text
    assert "--activations" not in text and "--format qoperator" not in text and "--per-tensor" not in text
    assert "than entropy" in text
