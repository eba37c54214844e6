"""The push gateway: SendMessages, push streams, store-and-forward with TTL, receipts."""
