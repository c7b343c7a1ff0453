"""`gptclassify models`: the architectures we build from scratch and the short names we know."""

from __future__ import annotations

from ..weights.fetch import PACKAGED_GGUF
from ..weights.resolve import HUB_MODELS

FAMILIES = {
    "gpt2": "GPT-2 (the book's): learned positions, LayerNorm, GELU",
    "llama": "Llama 2, Llama 3.x (its rope_scaling), SmolLM/SmolLM2, TinyLlama",
    "mistral": "Mistral 7B (sliding-window attention)",
    "qwen2": "Qwen2, Qwen2.5 (q/k/v biases)",
    "qwen3": "Qwen3 dense (q/k RMSNorm)",
    "gemma2": "Gemma 2 (GeGLU, sandwich norms, soft-capping, local/global layers)",
    "gemma3": "Gemma 3 text (q/k norm, local layers with their own RoPE base)",
    "phi3": "Phi-3 (fused qkv and gate/up, split on load)",
}


def cmd_models(args) -> None:
    print("Architectures (config.json's model_type, or GGUF's general.architecture):")
    for name, what in FAMILIES.items():
        print(f"  {name:<9} {what}")
    print("\nShort names (--model NAME; any other hub id or local directory works too):")
    for name, m in HUB_MODELS.items():
        print(f"  {name:<34} {m.params:>5}  {m.repo}" + (f"  ({m.note})" if m.note else ""))
    for name, pkg in PACKAGED_GGUF.items():
        print(f"  {name:<34} {pkg.params:>5}  {pkg.filename} from PyPI, no hub needed ({pkg.note})")
