"""What ``OPTIONS`` answers on the API's resources."""

from __future__ import annotations

from typing import Any

from rest_framework.metadata import BaseMetadata
from rest_framework.request import Request


class AllowOnlyMetadata(BaseMetadata):
    """``OPTIONS``: the ``Allow`` header and an empty body (RFC 9110 §9.3.7).

    DRF's default describes the view in the negotiated format, which link
    format cannot carry (a 500), and tells a client nothing that the
    contract and ``/api/schema`` do not.
    """

    def determine_metadata(self, request: Request, view: Any) -> None:
        return None
