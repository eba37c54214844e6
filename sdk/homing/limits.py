"""Pinpoint's published quotas, shared by the SDK and the collector.

Both sides validate against these numbers, so they live in one place.
"""

from __future__ import annotations

# Events (PutEvents)
MAX_EVENTS_PER_REQUEST = 100
MAX_REQUEST_BYTES = 4 * 1024 * 1024
MAX_EVENT_BYTES = 1000 * 1024
MAX_EVENT_KEYS = 40  # attribute keys plus metric keys, per event
MAX_EVENT_KEY_LENGTH = 50
MAX_EVENT_ATTRIBUTE_VALUE_LENGTH = 200
MAX_EVENT_TYPE_LENGTH = 50
MAX_EVENT_TYPES_PER_APP = 1500

# Endpoints (UpdateEndpoint, UpdateEndpointsBatch, the Endpoint of a PutEvents batch)
MAX_ENDPOINT_ATTRIBUTE_NAME_LENGTH = 50
MAX_ENDPOINT_ATTRIBUTE_VALUE_LENGTH = 100
MAX_ENDPOINT_ATTRIBUTE_VALUES = 50
MAX_ENDPOINT_BYTES = 15 * 1024
MAX_ENDPOINTS_PER_USER = 15
MAX_ENDPOINTS_PER_BATCH = 100

# Identifiers: Pinpoint documents no bound; one keeps rows and indexes sane.
MAX_ID_LENGTH = 256
# Free-form endpoint and event strings (Address, AppTitle, ...): the same reason.
MAX_PLAIN_STRING_LENGTH = 1024

# A timestamp further than this in the future is replaced by the arrival time.
MAX_FUTURE_SKEW_SECONDS = 24 * 60 * 60

# The SDK's upload batches.
MAX_BATCH_BYTES = 512 * 1024
