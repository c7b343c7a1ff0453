"""Runs that other tools load: a transformers folder (`transformers_dir.py`), an ONNX folder
(`onnx_dir.py`), each with a model card (`card.py`) and checked against the run it came from
(`check.py`)."""
