"""Which dtype weights load in: the default by device, an explicit name, and ``fast`` (bf16 only where the
hardware multiplies it natively)."""

from __future__ import annotations

import pytest
import torch

import alignment.device as device
from alignment.errors import SafealignError

CPU = torch.device("cpu")


@pytest.mark.parametrize(
    ("amx", "avx512_bf16", "expected"),
    [(True, False, torch.bfloat16), (False, True, torch.bfloat16), (False, False, torch.float32)],
)
def test_fast_is_bf16_only_on_a_cpu_that_computes_it(monkeypatch, amx, avx512_bf16, expected):
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    assert device.pick_dtype(CPU, "fast") is expected
    assert device.pick_dtype(CPU) is torch.float32  # the default on a CPU stays fp32 either way
    assert device.pick_dtype(CPU, "auto") is torch.float32


def test_named_dtypes_and_their_short_forms():
    assert device.pick_dtype(CPU, "bf16") is device.pick_dtype(CPU, "bfloat16") is torch.bfloat16
    assert device.pick_dtype(CPU, "fp32") is torch.float32


def test_an_unknown_dtype_is_a_one_line_error():
    with pytest.raises(SafealignError, match="unknown dtype 'float64'.*fast"):
        device.pick_dtype(CPU, "float64")
