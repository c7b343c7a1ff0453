"""gptclassify: turn a pretrained GPT-style language model into a text classifier."""

__version__ = "0.1.0"

from .errors import UserError
from .generate import generate, generate_text
from .models.gpt2 import GPTConfig, GPTModel, gpt2_config
from .models.llama import LlamaConfig, LlamaModel, llama_config
from .predict import Classifier, classify_text
from .tokenizer import Tokenizer, get_tokenizer, load_tokenizer
from .weights import load_pretrained

__all__ = [
    "Classifier", "GPTConfig", "GPTModel", "LlamaConfig", "LlamaModel", "Tokenizer", "UserError",
    "classify_text", "generate", "generate_text", "get_tokenizer", "gpt2_config", "llama_config",
    "load_pretrained", "load_tokenizer",
]
