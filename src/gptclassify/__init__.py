"""gptclassify: turn a pretrained GPT-style language model into a text classifier.

The names below load on first use (PEP 562), so `import gptclassify` costs nothing and a service
run by ONNX Runtime (`serve --backend onnxruntime`) never imports torch.
"""

from importlib import import_module

from .version import __version__
from .errors import UserError

_WHERE = {
    "generate": ".models.generate", "generate_text": ".models.generate",
    "GPTConfig": ".models.gpt2", "GPTModel": ".models.gpt2", "gpt2_config": ".models.gpt2",
    "LlamaConfig": ".models.llama", "LlamaModel": ".models.llama", "llama_config": ".models.llama",
    "Classifier": ".inference.predict", "classify_text": ".inference.predict",
    "OnnxClassifier": ".inference.onnx_runtime",
    "Tokenizer": ".data.tokenizer", "get_tokenizer": ".data.tokenizer",
    "load_pretrained": ".weights", "load_tokenizer": ".weights",
}

__all__ = ["__version__", "UserError", *_WHERE]


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'gptclassify' has no attribute {name!r}")
    return getattr(import_module(_WHERE[name], __name__), name)
