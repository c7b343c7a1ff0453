"""`python -m gptclassify ...`, which is what `torchrun -m gptclassify ...` runs in every process."""

import sys

from .cli import main

sys.exit(main())
