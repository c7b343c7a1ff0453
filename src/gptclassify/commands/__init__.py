"""One module per command of the `gptclassify` command line: each turns parsed arguments into library
calls and prints the result (`cli.py` parses and dispatches; the work is in the library below)."""
