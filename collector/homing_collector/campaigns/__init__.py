"""The campaign engine. Its pure parts: request shapes, segment membership, event filters,
schedules, quiet time, treatments, message variables and limits.

The scheduler (`scheduler`, with `triggers` for event-triggered campaigns) runs them
through the storage protocol and the push gateway; the other modules touch neither
storage nor HTTP, and no module here holds SQL.
"""
