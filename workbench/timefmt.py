"""Durations for people: the one formatter behind the terminal progress bar, the search ETA and the app."""

from __future__ import annotations

# style -> what an unknown duration (no estimate yet) reads as
STYLES = {"clock": "--:--", "hms": "--:--", "words": "…"}


def format_duration(seconds: float | None, style: str = "clock") -> str:
    """Seconds (rounded to whole ones) as text; None (no estimate yet) as a placeholder.

    clock: `05:07`, past an hour `1:02:03` (the terminal progress bar);
    hms:   always `0:05:07` (the scale-search ETA, whose trials often add up to hours);
    words: `45s`, `5m 07s`, past an hour `1h 02m` (the app).
    """
    if style not in STYLES:
        raise ValueError(f"style={style!r} is not one of {', '.join(STYLES)}")
    if seconds is None:
        return STYLES[style]
    hours, rest = divmod(max(round(seconds), 0), 3600)
    minutes, secs = divmod(rest, 60)
    if style == "words":
        if hours:
            return f"{hours}h {minutes:02d}m"
        return f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"
    if style == "clock" and not hours:
        return f"{minutes:02d}:{secs:02d}"
    return f"{hours}:{minutes:02d}:{secs:02d}"


_UNITS = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600}


def parse_duration(text: str | float | int, option: str = "duration") -> float:
    """`90s`, `10m`, `1.5h`, `1h30m` or a bare number of seconds -> seconds (> 0).

    ValueError names `option`, what was given and the accepted forms."""
    import re

    if isinstance(text, (int, float)) and not isinstance(text, bool):
        seconds = float(text)
    else:
        raw = str(text).strip().lower().replace(" ", "")
        parts = re.findall(r"(\d+(?:\.\d+)?)(h|min|m|sec|s)", raw)
        if re.fullmatch(r"\d+(?:\.\d+)?", raw):
            seconds = float(raw)
        elif parts and "".join(n + u for n, u in parts) == raw:
            seconds = sum(float(n) * _UNITS[u] for n, u in parts)
        else:
            raise ValueError(f"{option}={text!r} is not a duration; write it like 90s, 10m, 1h or 1h30m")
    if not seconds > 0:
        raise ValueError(f"{option}={text!r} must be longer than 0 seconds, e.g. 10m")
    return seconds
