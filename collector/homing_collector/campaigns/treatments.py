"""A/B treatments and holdout: which share of a campaign's segment gets which message.

Pinpoint (botocore `pinpoint` 2016-12-01): `HoldoutPercent` is the share of the segment
that gets no message, each additional treatment's `SizePercent` the share that gets it,
and the default treatment, "0", the rest; a campaign has at most 5 treatments (user
guide, campaigns-message). Pinpoint's documents do not state the sum rule; Homing asks
that the holdout and the additional treatments take at most 100 percent together.

Assignment is sticky and deterministic: an endpoint's place on a 0-9999 scale comes from
a hash of the campaign id and the endpoint id, so it keeps its treatment across runs and
processes. The scale is cut in order: holdout first, then treatment 0, then the
additional treatments. Changing the percentages moves only the endpoints near the cuts.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

HOLDOUT = None  # what `assign` returns for a held-out endpoint (TREATMENT_HOLDOUT)
DEFAULT_TREATMENT = "0"
MAX_TREATMENTS = 5
_SCALE = 10_000  # basis points: a percentage is 100 of them


def check_sizes(holdout_percent: int, sizes: Sequence[int]) -> None:
    """Raise ValueError, naming the member, unless the shares add up."""
    if len(sizes) > MAX_TREATMENTS - 1:
        raise ValueError(
            f"AdditionalTreatments: {len(sizes)} given; a campaign has at most "
            f"{MAX_TREATMENTS} treatments, the default one included"
        )
    taken = holdout_percent + sum(sizes)
    if taken > 100:
        raise ValueError(
            f"AdditionalTreatments: HoldoutPercent plus the SizePercent of the treatments "
            f"is {taken}; it must be at most 100, and treatment 0 gets the rest"
        )


def position(campaign_id: str, endpoint_id: str) -> int:
    """An endpoint's place, 0 to 9999, on the campaign's scale."""
    digest = hashlib.sha256(f"{campaign_id}\x00{endpoint_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % _SCALE


def assign(
    campaign_id: str, endpoint_id: str, *, holdout_percent: int = 0, sizes: Sequence[int] = ()
) -> str | None:
    """The endpoint's treatment id ("0" is the default treatment, "1" the first of
    `AdditionalTreatments`, ...), or None when it is held out.

    >>> assign("campaign-1", "endpoint-1", holdout_percent=20, sizes=[40])
    '1'
    >>> assign("campaign-1", "endpoint-6", holdout_percent=20, sizes=[40]) is HOLDOUT
    True
    """
    if not holdout_percent and not any(sizes):
        return DEFAULT_TREATMENT  # the whole scale is the default's: no hash needed
    at = position(campaign_id, endpoint_id)
    cut = holdout_percent * 100
    if at < cut:
        return HOLDOUT
    cut += (100 - holdout_percent - sum(sizes)) * 100
    if at < cut:
        return DEFAULT_TREATMENT
    for index, size in enumerate(sizes, 1):
        cut += size * 100
        if at < cut:
            return str(index)
    return DEFAULT_TREATMENT  # only when the sizes were not checked
