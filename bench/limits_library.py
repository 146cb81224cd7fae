"""The Python `limits` library's Redis limiters making the benchmark's decisions.

`python bench/limits_library.py REDIS_URL SECONDS SEED` prints the decisions it made.
Each decision is the benchmark's three checks: the tenant (sliding window counter), the key
(moving window: an exact log, in Lua) and the key's tokens (sliding counter, cost 500), on
10,000 keys, one Redis round trip per check, as a Python service using the library would.
"""

from __future__ import annotations

import random
import sys
import time

from limits import parse
from limits.storage import RedisStorage
from limits.strategies import MovingWindowRateLimiter, SlidingWindowCounterRateLimiter

KEYS = 10_000


def main(url: str, seconds: float, seed: int) -> None:
    """Decide for seconds; print `decisions allowed`."""
    storage = RedisStorage(url)
    counter = SlidingWindowCounterRateLimiter(storage)
    log = MovingWindowRateLimiter(storage)
    tenant_limit = parse("100000/minute")
    key_limit = parse("60/minute")
    token_limit = parse("1000000/minute")
    rng = random.Random(seed)
    decisions = allowed = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        key = rng.randrange(KEYS)
        tenant = f"t{key // 100:03d}"
        ok = counter.hit(tenant_limit, tenant)
        ok = log.hit(key_limit, tenant, f"k{key:05d}") and ok
        ok = counter.hit(token_limit, "tokens", tenant, f"k{key:05d}", cost=500) and ok
        decisions += 1
        allowed += ok
    print(decisions, allowed)


if __name__ == "__main__":
    main(sys.argv[1], float(sys.argv[2]), int(sys.argv[3]))
