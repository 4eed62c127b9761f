"""Shareable links: a tab's state (text, model, settings, view, layer, head, chosen token) in the page
URL's query string, and back. No gradio here.

A link holds only what the visitor typed or changed: the tab, the text, and each setting that
differs from the tab's default (the defaults come from the tab's own list of controls, e.g.
`dataclasses.asdict(Controls())`), nothing else: no session, no result, no server state.

Texts: plain (percent-encoded) when that fits; otherwise `z=`, the UTF-8 text compressed with zlib
and written in URL-safe base64. The whole query string is at most MAX_QUERY_CHARS characters
(well under the 8 KB request line that common servers and proxies accept); a longer one is refused
with a sentence, never cut. Decoding is strict: unknown keys are reported and ignored, values of
the wrong type are refused, and a compressed text may not expand beyond MAX_TEXT_CHARS.
"""

from __future__ import annotations

import base64
import binascii
import math
import zlib
from dataclasses import dataclass, field
from typing import Any, Mapping
from urllib.parse import parse_qsl, urlencode

TABS = ("generate", "ner", "classify", "attention", "tasks", "teach")
MAX_QUERY_CHARS = 6_000  # the stated limit of a link's query string
MAX_TEXT_CHARS = 20_000  # what a decoded text may hold (the engine's longest input)
RESERVED = ("tab", "text", "z")  # keys of the link itself; a setting may not be called so


@dataclass
class LinkState:
    """What a link restores: the tab, the text, the settings that differ from the defaults."""

    tab: str
    text: str
    settings: dict[str, Any]
    ignored: list[str] = field(default_factory=list)  # keys the link had that this tab does not know


def _format(value: Any) -> str | list[str]:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    return str(value)


def encode_state(tab: str, text: str, settings: Mapping[str, Any], defaults: Mapping[str, Any]) -> str:
    """The query string (without "?") of a tab's state; raises ValueError with a sentence when
    even the compressed text does not fit in MAX_QUERY_CHARS."""
    if tab not in TABS:
        raise ValueError(f"A link names one of the tabs {', '.join(TABS)}, not {tab!r}.")
    pairs: list[tuple[str, str]] = [("tab", tab)]
    for key, value in settings.items():
        if key not in defaults or key in RESERVED:
            raise ValueError(f"{key!r} is not a setting of the {tab} tab.")
        if value == defaults[key] or value is None:
            continue  # only what the visitor changed
        default = defaults[key]
        if isinstance(default, int) and not isinstance(default, bool) and isinstance(value, float) and value.is_integer():
            value = int(value)  # a slider or number box sends 60.0 for a whole-number setting; its link says 60
        formatted = _format(value)
        pairs += [(key, v) for v in formatted] if isinstance(formatted, list) else [(key, formatted)]
    rest = urlencode(pairs[1:])
    plain = urlencode(pairs[:1] + [("text", text)] + pairs[1:]) if text else urlencode(pairs)
    if len(plain) <= MAX_QUERY_CHARS:
        return plain
    packed = base64.urlsafe_b64encode(zlib.compress(text.encode("utf-8"), 9)).decode("ascii").rstrip("=")
    compact = urlencode(pairs[:1]) + "&z=" + packed + ("&" + rest if rest else "")
    if len(compact) <= MAX_QUERY_CHARS:
        return compact
    raise ValueError(
        f"This text is too long for a link: even compressed the link would have {len(compact):,} characters and a link "
        f"holds at most {MAX_QUERY_CHARS:,}. Share a shorter text, or download a report instead."
    )


def _unpack(packed: str) -> str:
    try:
        data = base64.urlsafe_b64decode(packed + "=" * (-len(packed) % 4))
        inflater = zlib.decompressobj()
        raw = inflater.decompress(data, 4 * MAX_TEXT_CHARS + 1)  # UTF-8: at most 4 bytes a character
        if len(raw) > 4 * MAX_TEXT_CHARS or inflater.unconsumed_tail:
            raise ValueError(f"The link's text is longer than {MAX_TEXT_CHARS:,} characters, the most a text may have.")
        return raw.decode("utf-8")
    except (binascii.Error, zlib.error, UnicodeDecodeError):
        raise ValueError("The link's compressed text is damaged; ask for the link again.") from None


def _coerce(key: str, values: list[str], default: Any) -> Any:
    value = values[-1]
    if isinstance(default, (list, tuple)):
        return list(values)
    try:
        if isinstance(default, bool):
            if value not in ("0", "1"):
                raise ValueError
            return value == "1"
        if isinstance(default, int):
            return int(value)
        if isinstance(default, float):
            number = float(value)
            if not math.isfinite(number):
                raise ValueError
            return number
    except ValueError:
        kind = "yes/no (1 or 0)" if isinstance(default, bool) else "a whole number" if isinstance(default, int) else "a number"
        raise ValueError(f"The link's {key} must be {kind}, not {value[:20]!r}.") from None
    return value  # text settings (and those whose default is None)


def decode_state(query: str, defaults_by_tab: Mapping[str, Mapping[str, Any]]) -> LinkState:
    """The state a query string (with or without "?") describes; raises ValueError with a sentence
    for a link that is too long, names no known tab, or holds a value of the wrong kind."""
    query = query[1:] if query.startswith("?") else query
    if len(query) > MAX_QUERY_CHARS:
        raise ValueError(f"This link has {len(query):,} characters; a link holds at most {MAX_QUERY_CHARS:,}.")
    grouped: dict[str, list[str]] = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        grouped.setdefault(key, []).append(value)
    tab = (grouped.pop("tab", [""]))[-1]
    if tab not in defaults_by_tab:
        raise ValueError(f"This link names no tab of this app (one of {', '.join(defaults_by_tab)}).")
    text = grouped.pop("text", [""])[-1]
    packed = grouped.pop("z", None)
    if packed is not None:
        text = _unpack(packed[-1])
    if len(text) > MAX_TEXT_CHARS:
        raise ValueError(f"The link's text is longer than {MAX_TEXT_CHARS:,} characters, the most a text may have.")
    defaults = defaults_by_tab[tab]
    settings, ignored = {}, []
    for key, values in grouped.items():
        if key in defaults:
            settings[key] = _coerce(key, values, defaults[key])
        else:
            ignored.append(key[:40])
    return LinkState(tab=tab, text=text, settings=settings, ignored=ignored)
