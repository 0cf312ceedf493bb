"""Dates of a series: parsed from a CSV column, their frequency inferred, continued ahead.

A frequency is a fixed step in calendar months (monthly, quarterly, yearly: month lengths
differ, so these are counted in months) or in seconds (weekly, daily, hourly, ...). Its
``season`` is the period a seasonal-naive forecast looks back: a year of months (12) or
quarters (4), a week of days (7), a day of hours (24), a year of weeks (52); 1 (the last
value) where no period is natural (yearly, minutes, an unnamed step).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

# forms tried after datetime.fromisoformat (which reads 2020-01-31, 2020-01-31T12:00, ...)
_FORMATS = [("%Y-%m", r"\d{4}-\d{1,2}"), ("%Y/%m/%d", r"\d{4}/\d{1,2}/\d{1,2}"),
            ("%Y/%m", r"\d{4}/\d{1,2}"), ("%Y", r"\d{4}")]


@dataclass(frozen=True)
class Frequency:
    """A regular step between dates: ``months`` calendar months, or ``seconds``."""

    name: str                   # "monthly", "daily", "every 2 days", ...
    months: int = 0
    seconds: int = 0
    season: int = 1
    format: str = "%Y-%m-%d"    # how a date of this frequency is written

    def add(self, date: datetime, steps: int) -> datetime:
        """The date `steps` steps after `date` (a month-end day is clamped: Jan 31 + 1 month
        is Feb 28 or 29)."""
        if not self.months:
            return date + timedelta(seconds=self.seconds * steps)
        month = date.month - 1 + self.months * steps
        year, month = date.year + month // 12, month % 12 + 1
        days = (datetime(year + month // 12, month % 12 + 1, 1) - datetime(year, month, 1)).days
        return date.replace(year=year, month=month, day=min(date.day, days))


_BY_MONTHS = {1: Frequency("monthly", months=1, season=12, format="%Y-%m"),
              3: Frequency("quarterly", months=3, season=4, format="%Y-%m"),
              12: Frequency("yearly", months=12, season=1, format="%Y")}
_DAY = 86_400
_BY_SECONDS = {7 * _DAY: Frequency("weekly", seconds=7 * _DAY, season=52),
               _DAY: Frequency("daily", seconds=_DAY, season=7),
               3600: Frequency("hourly", seconds=3600, season=24, format="%Y-%m-%d %H:%M"),
               60: Frequency("every minute", seconds=60, format="%Y-%m-%d %H:%M")}


def parse_date(text: str) -> datetime | None:
    """A date or date-time written as ISO 8601 (2020-01-31, 2020-01-31 12:00:00), 2020-01,
    2020/01/31, 2020/01 or 2020; None for anything else."""
    text = text.strip()
    try:
        return datetime.fromisoformat(text).replace(tzinfo=None)
    except ValueError:
        pass
    for fmt, pattern in _FORMATS:
        if re.fullmatch(pattern, text):
            try:
                return datetime.strptime(text, fmt)
            except ValueError:
                return None
    return None


def parse_dates(texts: list[str]) -> list[datetime] | None:
    """Every text as a date, or None if any is not one."""
    dates = [parse_date(t) for t in texts]
    return None if not dates or any(d is None for d in dates) else dates


def infer_frequency(dates: list[datetime]) -> Frequency | None:
    """The one step between every pair of consecutive dates, or None if the steps differ (or
    there are fewer than two dates, or time runs backwards)."""
    if len(dates) < 2:
        return None
    months = {(b.year - a.year) * 12 + b.month - a.month for a, b in zip(dates, dates[1:])}
    same_day = len({(d.day, d.time()) for d in dates}) == 1
    if same_day and len(months) == 1 and (step := months.pop()) > 0:
        return _BY_MONTHS.get(step, Frequency(f"every {step} months", months=step,
                                              format="%Y-%m"))
    seconds = {round((b - a).total_seconds()) for a, b in zip(dates, dates[1:])}
    if len(seconds) != 1 or (step := seconds.pop()) <= 0:
        return None
    if step in _BY_SECONDS:
        return _BY_SECONDS[step]
    if step % _DAY == 0:
        return Frequency(f"every {step // _DAY} days", seconds=step)
    return Frequency(f"every {step} seconds", seconds=step, format="%Y-%m-%d %H:%M:%S")
