"""A JSON parser that turns every malformed body into a 400.

DRF's own parser catches ``ValueError`` only; a deeply nested body raises
``RecursionError`` from the standard library decoder and would become a 500.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser

from formats.body import read_body


class StrictJSONParser(JSONParser):
    def parse(
        self,
        stream: Any,
        media_type: str | None = None,
        parser_context: Mapping[str, Any] | None = None,
    ) -> Any:
        body = read_body(stream, parser_context)
        try:
            return json.loads(body.decode("utf-8"))
        except UnicodeDecodeError:
            raise ParseError("JSON body is not valid UTF-8") from None
        except RecursionError:
            raise ParseError("JSON body is nested too deeply") from None
        except ValueError as exc:
            raise ParseError(f"malformed JSON: {exc}") from None
