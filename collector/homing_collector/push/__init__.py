"""The push gateway: SendMessages, push streams, store-and-forward with TTL, receipts."""

import time


def epoch_ms() -> int:
    """Wall-clock time in milliseconds since the epoch: how push rows are stamped."""
    return int(time.time() * 1000)
