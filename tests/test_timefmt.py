"""The one duration formatter, on known values in each of its styles."""

from __future__ import annotations

import pytest

from workbench.timefmt import format_duration


@pytest.mark.parametrize(
    "seconds, clock, hms, words",
    [
        (None, "--:--", "--:--", "…"),
        (0, "00:00", "0:00:00", "0s"),
        (44.6, "00:45", "0:00:45", "45s"),
        (307, "05:07", "0:05:07", "5m 07s"),
        (3599.4, "59:59", "0:59:59", "59m 59s"),
        (3723, "1:02:03", "1:02:03", "1h 02m"),
        (36000, "10:00:00", "10:00:00", "10h 00m"),
    ],
)
def test_known_values(seconds, clock, hms, words):
    assert format_duration(seconds) == clock
    assert format_duration(seconds, "hms") == hms
    assert format_duration(seconds, "words") == words


def test_an_unknown_style_is_refused():
    with pytest.raises(ValueError, match="style='iso' is not one of clock, hms, words"):
        format_duration(1, "iso")
