"""Outgoing calls: signed webhook delivery, custom channels, filter hooks, event streams.

The modules here are pure: they build payloads and records, sign, classify answers and
schedule retries. The outbox that makes deliveries durable lives in storage.
"""
