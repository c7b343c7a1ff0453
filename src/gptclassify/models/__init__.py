"""Decoder models written from scratch: GPT-2 (`gpt2.py`) and the Llama family (`llama.py`)."""
