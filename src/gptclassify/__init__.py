"""gptclassify: turn a pretrained GPT-style language model into a text classifier."""

from .version import __version__

from .errors import UserError
from .models.generate import generate, generate_text
from .models.gpt2 import GPTConfig, GPTModel, gpt2_config
from .models.llama import LlamaConfig, LlamaModel, llama_config
from .inference.predict import Classifier, classify_text
from .data.tokenizer import Tokenizer, get_tokenizer
from .weights import load_pretrained, load_tokenizer

__all__ = [
    "__version__", "Classifier", "GPTConfig", "GPTModel", "LlamaConfig", "LlamaModel", "Tokenizer", "UserError",
    "classify_text", "generate", "generate_text", "get_tokenizer", "gpt2_config", "llama_config",
    "load_pretrained", "load_tokenizer",
]
