"""`gptclassify cache list|clear`: the on-disk feature cache and the converted GGUF weights."""

from __future__ import annotations

import time

from ..errors import UserError
from ..training import feature_cache
from ..weights import converted


def cmd_cache_list(args) -> None:
    found = sorted(feature_cache.entries(), key=feature_cache.Entry.last_used, reverse=True)
    root, limit = feature_cache.cache_root(), feature_cache.limit_bytes()
    total = sum(e.nbytes for e in found)
    print(f"{root}: {len(found)} entr{'y' if len(found) == 1 else 'ies'}, {total / 1e9:.2f} GB of {limit / 1e9:.0f} GB "
          "(GPTCLASSIFY_FEATURE_CACHE_GB)")
    if found:
        print(f"{'key':<12}  {'GB':>6}  {'positions':>10}  {'last used':<16}  {'model':<22}  {'length':>6}  "
              f"{'truncation':<10}  {'prefix':<8}  data")
    for e in found:
        m = e.meta
        positions = sum(m.get("positions", {}).values())
        used = time.strftime("%Y-%m-%d %H:%M", time.localtime(e.last_used()))
        print(f"{e.key[:12]}  {e.nbytes / 1e9:>6.2f}  {positions:>10,}  {used:<16}  {str(m.get('model'))[:22]:<22}  "
              f"{m.get('max_length', ''):>6}  {str(m.get('truncation')):<10}  {str(m.get('prefix_dtype')):<8}  "
              f"{m.get('data')}")

    kept = converted.entries()
    print(f"{converted.converted_root()}: {len(kept)} converted GGUF file{'' if len(kept) == 1 else 's'}, "
          f"{sum(n for _, n in kept) / 1e9:.2f} GB (GPTCLASSIFY_CONVERTED_CACHE; `cache clear --converted` frees them)")
    for where, nbytes in kept:
        print(f"  {where.name}  {nbytes / 1e9:.2f} GB")


def cmd_cache_clear(args) -> None:
    if args.converted and args.keys:
        raise UserError("--converted removes every converted GGUF; give it no KEY (KEYs name feature cache entries)")
    if args.converted:
        gone = converted.clear()
        print(f"removed {len(gone)} converted GGUF file{'' if len(gone) == 1 else 's'} "
              f"({sum(n for _, n in gone) / 1e9:.2f} GB; each is converted again on its next use)")
        return
    removed = feature_cache.clear(args.keys)
    freed = sum(e.nbytes for e in removed)
    print(f"removed {len(removed)} entr{'y' if len(removed) == 1 else 'ies'} ({freed / 1e9:.2f} GB)")
