"""`gptclassify serve`: a finished run over HTTP."""

from __future__ import annotations

from ..config import Limits
from ..inference.serve import read_api_key, serve
from ..options import settings_of


def cmd_serve(args) -> None:
    given = {f.name: getattr(args, f.name) for f in settings_of(Limits) if f.metadata["cli"]}
    limits = Limits(**{k: v for k, v in given.items() if v is not None})
    serve(args.run, args.host, args.port, args.device, limits, api_key=read_api_key(args.api_key_file),
          no_auth=args.no_auth, backend=args.backend)
