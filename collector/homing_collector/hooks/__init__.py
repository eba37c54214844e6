"""Outgoing calls: signed webhook delivery, custom channels, filter hooks, event streams,
and the same three events for in-process Python hooks (registry, runner, hook_stream).

The modules here hold no state on disk: they build payloads and records, sign, classify
answers, schedule retries, call hooks and read archives. The durable outbox and cursors
that drive them are storage tables, with their SQL in storage/.
"""
