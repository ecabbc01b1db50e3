"""JSON as a browser's ``JSON.parse`` reads it back: the one decoder for what others send monit.

Python's ``json`` reads more than JSON: the bare constants ``NaN``, ``Infinity``
and ``-Infinity``, and numbers too large for a double (``1e999``) as infinity.
monit would send those on as bare ``NaN``/``Infinity``, which no browser reads,
or act on a document its sender's peers would refuse. Here they are not JSON.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any, NoReturn


def _no_constant(name: str) -> NoReturn:
    """NaN, Infinity and -Infinity are Python's extensions, not JSON: JSON.parse refuses them."""
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    """A float literal; one too large for a double (1e999) would be sent on as Infinity."""
    value = float(text)
    if not math.isfinite(value):
        raise ValueError("number out of range")
    return value


# Made once: json.loads with arguments builds a decoder per call. parse_float
# costs a call per float literal only; documents without floats pay nothing.
DECODER = json.JSONDecoder(parse_constant=_no_constant, parse_float=_finite_float)


def json_object(data: bytes, error: Callable[[str], Exception]) -> dict[str, Any]:
    """The bytes as a JSON object (UTF-8, strict), else ``error("not UTF-8")``, ``("not JSON")``
    or ``("not a JSON object")``: the caller's own error, raised once (bad input can come in floods)."""
    try:
        document = DECODER.decode(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise error("not UTF-8") from None
    except (ValueError, RecursionError):
        raise error("not JSON") from None
    if not isinstance(document, dict):
        raise error("not a JSON object")
    return document
