"""Outgoing calls: signed webhook delivery, custom channels, filter hooks, event streams.

The modules here hold no state on disk: they build payloads and records, sign, classify
answers, schedule retries and read archives. The durable outbox that will drive them is
a storage table, with its SQL in storage/.
"""
