"""The frozen prefix (embedding and the blocks before the first trainable one) in the precision
chosen for it: float32, bfloat16 (autocast) or int8 (dynamic quantization of its Linear layers).

The prefix never trains, so it can compute in a cheaper precision; the trainable suffix always
stays float32. The choice is a run's setting: the feature cache, training without the cache,
evaluation, prediction and serving all compute the prefix the same way.

`auto` picks bfloat16 where the CPU multiplies bfloat16 natively (AMX or AVX512-BF16; read from
the CPU at run time, machines differ) and on CUDA, float32 elsewhere: without those units bfloat16
is several times slower than float32, and int8, though faster, moves the features more than
bfloat16 does (benchmarks/prefix_dtype.py measures both), so it is a choice, not the default.
"""

from __future__ import annotations

import copy
import functools
import warnings

import torch
import torch.nn as nn

from .head import first_trainable_block, suffix_logits
from .names import valid_trainable
from ..errors import UserError
from .names import PREFIX_DTYPES



@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags as Linux reports them (empty elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_native_bf16() -> bool:
    """Whether the CPU has bfloat16 matrix or dot-product units (AMX-BF16 or AVX512-BF16)."""
    flags = cpu_flags()
    if flags:
        return bool({"amx_bf16", "avx512_bf16"} & flags)
    check = getattr(getattr(torch, "cpu", None), "_is_avx512_bf16_supported", None)
    return bool(check and check())


def cpu_int8_kernels() -> bool:
    """Whether PyTorch's dynamic int8 Linear (fbgemm, x86 with AVX2) runs on this CPU."""
    return "fbgemm" in torch.backends.quantized.supported_engines and \
        torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512")


def resolve_prefix_dtype(name: str, device: torch.device) -> str:
    """`auto` made concrete for this device; an impossible choice is refused in one line."""
    if name not in PREFIX_DTYPES:
        raise UserError(f"--prefix-dtype must be one of {', '.join(PREFIX_DTYPES)}")
    if device.type != "cpu":
        if name == "int8":
            raise UserError("--prefix-dtype int8 runs on CPUs only (dynamic int8 quantization)")
        return "bfloat16" if name == "auto" else name
    if name == "int8" and not cpu_int8_kernels():
        raise UserError("--prefix-dtype int8 needs an x86 CPU with AVX2 (PyTorch's fbgemm kernels)")
    if name != "auto":
        return name
    return "bfloat16" if cpu_native_bf16() else "float32"


def describe_cpu() -> str:
    """What `auto` looked at, for the log."""
    flags = cpu_flags()
    shown = sorted(f for f in flags if f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"))
    return f"CPU features {', '.join(shown) or 'unknown'}; PyTorch kernels {torch.backends.cpu.get_cpu_capability()}"


class FrozenPrefix:
    """Hidden states entering block `start`, computed in `dtype` and returned as float32 (or
    bfloat16 for a bfloat16 prefix, which is what the feature cache stores)."""

    def __init__(self, model: nn.Module, start: int, dtype: str, device: torch.device):
        self.model, self.start, self.dtype, self.device = model, max(start, 0), dtype, device
        self.blocks = model.trf_blocks[: self.start]
        if dtype == "int8" and self.start > 0:
            self.blocks = quantize_int8(self.blocks)

    @property
    def out_dtype(self) -> torch.dtype:
        return torch.bfloat16 if self.dtype == "bfloat16" else torch.float32

    @property
    def dtype_name(self) -> str:
        """The name of what the prefix returns (and the feature cache stores)."""
        return "bfloat16" if self.dtype == "bfloat16" else "float32"

    def __call__(self, ids: torch.Tensor) -> torch.Tensor:
        return self.states_at(ids, (self.start,))[0]

    @torch.no_grad()
    def states_at(self, ids: torch.Tensor, starts: tuple[int, ...]) -> list[torch.Tensor]:
        """The states entering each block of `starts` (none past this prefix's own), from one run of
        the prefix: each the same as a prefix ending there would give."""
        if self.dtype == "bfloat16":
            with torch.autocast(self.device.type, dtype=torch.bfloat16):
                return [x.to(torch.bfloat16) for x in self._run(ids, starts)]
        return self._run(ids, starts)

    def _run(self, ids: torch.Tensor, starts: tuple[int, ...]) -> list[torch.Tensor]:
        kept, x = {}, self.model.embed(ids)
        for i, block in enumerate(self.blocks):
            if i in starts:
                kept[i] = x
            x = block(x)
        kept[self.start] = x
        return [kept[max(s, 0)] for s in starts]

    def reaching(self, start: int) -> "FrozenPrefix":
        """This prefix, or the same model's in the same precision up to the later block `start`."""
        return self if start <= self.start else FrozenPrefix(self.model, start, self.dtype, self.device)


def quantize_int8(blocks: nn.ModuleList) -> nn.ModuleList:
    """A copy of `blocks` with every Linear replaced by PyTorch's dynamic int8 Linear (int8 weights
    per output channel, activations quantized per batch). The float32 originals stay untouched."""
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    with warnings.catch_warnings():  # torch.ao.quantization announces its move to torchao
        warnings.simplefilter("ignore")
        return quantize_dynamic(copy.deepcopy(blocks), {nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8)


def run_prefix(model: nn.Module, start: int | None, trainable: str, dtype: str, device: torch.device) -> FrozenPrefix:
    """A finished run's frozen prefix (`start`: its first trainable block, `dtype` its precision),
    computed as in its training (runs from before these were recorded, and int8 runs read on a
    GPU, compute it in float32 from the block its `trainable` policy names)."""
    if start is None or not -1 <= start <= len(model.trf_blocks):
        ok = valid_trainable(trainable) and (trainable == "all" or first_trainable_block_fits(model, trainable))
        start = first_trainable_block(len(model.trf_blocks), trainable if ok else "all")
    if dtype not in PREFIX_DTYPES[1:] or (dtype == "int8" and (device.type != "cpu" or not cpu_int8_kernels())):
        dtype = "float32"
    return FrozenPrefix(model, start, dtype, device)


def first_trainable_block_fits(model: nn.Module, trainable: str) -> bool:
    try:
        first_trainable_block(len(model.trf_blocks), trainable)
        return True
    except ValueError:
        return False


def run_logits(model: nn.Module, prefix: FrozenPrefix, ids: torch.Tensor, lengths: torch.Tensor,
               pooling: str) -> torch.Tensor:
    """Class logits for right-padded token ids: the prefix in its precision, the rest in float32."""
    return suffix_logits(model, prefix(ids).float(), lengths, prefix.start, pooling)
