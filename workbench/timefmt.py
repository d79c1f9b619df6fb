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
