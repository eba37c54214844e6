"""The campaign engine's pure parts: request shapes, segment membership, event filters,
schedules, quiet time, treatments, message variables and limits.

Nothing here touches storage or HTTP; routes and the scheduler call these modules.
"""
