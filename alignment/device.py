"""Device and precision choice from the hardware at hand."""

from __future__ import annotations

import torch


def pick_device(requested: str | None = None) -> torch.device:
    """``requested`` if given, else the first CUDA GPU, else Apple MPS, else the CPU."""
    if requested and requested != "auto":
        return torch.device(requested)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def pick_dtype(device: torch.device, requested: str | None = None) -> torch.dtype:
    """fp32 on CPU and MPS, bf16 on GPUs that support it, fp16 on older GPUs; ``requested`` wins.

    >>> pick_dtype(torch.device("cpu"))
    torch.float32
    >>> pick_dtype(torch.device("cpu"), "bfloat16")
    torch.bfloat16
    """
    if requested and requested != "auto":
        names = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
        return getattr(torch, names.get(requested, requested))
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def describe_device() -> dict:
    """A JSON-friendly summary of the compute available, for manifests and ``safealign env``."""
    info: dict = {"device": str(pick_device()), "torch_threads": torch.get_num_threads()}
    if torch.cuda.is_available():
        info["cuda_devices"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        info["bf16_supported"] = torch.cuda.is_bf16_supported()
    return info
