"""Human-written dates and their ISO form: the data of the date-translation seq2seq task.

    pairs = date_pairs(10000, split="train", seed=0)   # [("3rd of March 2021", "2021-03-03"), ...]
    held_out = date_pairs(1000, split="test", seed=1)  # dates the training split never contains
    train, dev, test = date_splits(20000, 1000, seed=0)  # dev: set aside from the training draws

Every date between 1900-01-01 and 2099-12-31 belongs to exactly one split: a fixed permutation
of all days puts one day in ten in "test", so a model is scored on DATES it has never seen, not
only on new spellings of seen ones.  Each pair draws a day of its split and one of the FORMATS
below, uniformly.  Two-digit years ("12/25/99", "3-Mar-21") are only written for 1950-2049, the
window where they are unambiguous (yy >= 50 -> 19yy, else 20yy); slashes are always US order
(month/day/year) and dots always European (day.month.year), so every string has one reading.

`parse_date(text)` is an independent rule-based reader of every format (regular expressions,
no shared code with the writers): the tests check that it gives back the date each string was
made from.
"""
import datetime
import re

import numpy as np

FIRST_DAY = datetime.date(1900, 1, 1)
LAST_DAY = datetime.date(2099, 12, 31)
TWO_DIGIT_YEARS = (1950, 2049)  # the years a two-digit year may stand for
TEST_FRACTION = 0.1
SPLIT_SEED = 20240229  # fixed: the split must not move when the caller's seed does

MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September",
          "October", "November", "December"]
WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]


def ordinal(n):
    """1 -> '1st', 2 -> '2nd', 3 -> '3rd', 11 -> '11th', 22 -> '22nd'."""
    if 10 <= n % 100 <= 20:
        return f"{n}th"
    return f"{n}{ {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th') }"


def _month(d):
    return MONTHS[d.month - 1]


def _mon(d):
    return MONTHS[d.month - 1][:3]


def _weekday(d):
    return WEEKDAYS[d.weekday()]


# name -> writer(date) -> str.  The comment is the example date 2021-03-03 written that way.
FORMATS = {
    "ordinal_of": lambda d: f"{ordinal(d.day)} of {_month(d)} {d.year}",               # 3rd of March 2021
    "the_ordinal_of": lambda d: f"the {ordinal(d.day)} of {_month(d)}, {d.year}",      # the 3rd of March, 2021
    "weekday_abbr": lambda d: f"{_weekday(d)[:3]} {d.day} {_mon(d)} {d.year}",         # Wed 3 Mar 2021
    "us_short": lambda d: f"{d.month}/{d.day}/{d.year % 100:02d}",                     # 3/3/21
    "us_long": lambda d: f"{d.month:02d}/{d.day:02d}/{d.year}",                        # 03/03/2021
    "month_day_year": lambda d: f"{_month(d)} {d.day}, {d.year}",                      # March 3, 2021
    "iso": lambda d: d.isoformat(),                                                    # 2021-03-03
    "day_month_year": lambda d: f"{d.day} {_month(d)} {d.year}",                       # 3 March 2021
    "european_dots": lambda d: f"{d.day:02d}.{d.month:02d}.{d.year}",                  # 03.03.2021
    "weekday_long": lambda d: f"{_weekday(d)}, {_month(d)} {d.day}, {d.year}",         # Wednesday, March 3, 2021
    "mon_day_year": lambda d: f"{_mon(d)} {d.day} {d.year}",                           # Mar 3 2021
    "day_mon_yy": lambda d: f"{d.day}-{_mon(d)}-{d.year % 100:02d}",                   # 3-Mar-21
    "upper": lambda d: f"{_month(d).upper()} {d.day}, {d.year}",                       # MARCH 3, 2021
    "lower_ordinal": lambda d: f"{_month(d).lower()} {ordinal(d.day)}, {d.year}",      # march 3rd, 2021
    "slash_ymd": lambda d: f"{d.year}/{d.month:02d}/{d.day:02d}",                      # 2021/03/03
    "compact": lambda d: f"{d.year}{d.month:02d}{d.day:02d}",                          # 20210303
}
TWO_DIGIT_FORMATS = ("us_short", "day_mon_yy")

# Every character a writer can produce: the source vocabulary of the task.
SOURCE_CHARS = sorted(set("0123456789 ,./-" + "".join(MONTHS) + "".join(MONTHS).upper() + "".join(MONTHS).lower()
                          + "".join(WEEKDAYS) + "stndrdth" + "of the"))
TARGET_CHARS = sorted(set("0123456789-"))


def render(date, fmt):
    """`date` written in format `fmt` (a name of FORMATS)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown date format {fmt!r}: choose one of {', '.join(FORMATS)}")
    if fmt in TWO_DIGIT_FORMATS and not TWO_DIGIT_YEARS[0] <= date.year <= TWO_DIGIT_YEARS[1]:
        raise ValueError(f"format {fmt!r} writes a two-digit year, which stands for a year in "
                         f"{TWO_DIGIT_YEARS[0]}-{TWO_DIGIT_YEARS[1]}, not {date.year}")
    return FORMATS[fmt](date)


def formats_for(date):
    """The formats that can write `date` unambiguously."""
    two_digit_ok = TWO_DIGIT_YEARS[0] <= date.year <= TWO_DIGIT_YEARS[1]
    return [f for f in FORMATS if two_digit_ok or f not in TWO_DIGIT_FORMATS]


_split_cache = {}


def split_days(split):
    """The ordinals (date.toordinal()) of every day in `split` ('train' or 'test'), sorted."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', not {split!r}")
    if not _split_cache:
        days = np.arange(FIRST_DAY.toordinal(), LAST_DAY.toordinal() + 1)
        order = np.random.default_rng(SPLIT_SEED).permutation(days.size)
        n_test = int(round(days.size * TEST_FRACTION))
        _split_cache["test"] = np.sort(days[order[:n_test]])
        _split_cache["train"] = np.sort(days[order[n_test:]])
    return _split_cache[split]


def split_of(date):
    """'train' or 'test': the split that `date` belongs to."""
    ordinal_day = date.toordinal()
    test = split_days("test")
    i = np.searchsorted(test, ordinal_day)
    return "test" if i < test.size and test[i] == ordinal_day else "train"


def date_pairs(n, split="train", seed=0, formats=None):
    """`n` (human text, ISO text) pairs of days from `split`, with formats drawn uniformly
    (from `formats`, a list of FORMATS names, if given).  The same seed gives the same pairs."""
    if n < 0:
        raise ValueError(f"n must be non-negative, got {n}")
    allowed = list(FORMATS) if formats is None else list(formats)
    for f in allowed:
        if f not in FORMATS:
            raise ValueError(f"unknown date format {f!r}: choose from {', '.join(FORMATS)}")
    rng = np.random.default_rng(seed)
    days = split_days(split)
    pairs = []
    while len(pairs) < n:
        date = datetime.date.fromordinal(int(days[rng.integers(days.size)]))
        choices = [f for f in allowed if f in formats_for(date)]
        if not choices:  # e.g. only two-digit formats asked for and a 1903 date drawn
            continue
        fmt = choices[rng.integers(len(choices))]
        pairs.append((render(date, fmt), date.isoformat()))
    return pairs



def default_dev_size(train_size):
    """The dev pairs carved beside `train_size` training pairs when none are asked for: a tenth,
    at most 1000 (enough for a steady validation loss), at least 1."""
    return max(1, min(1000, train_size // 10))


def date_splits(train_size, test_size, dev_size=None, seed=0):
    """(train, dev, test) pair lists for training a translator.  train and dev are drawn together
    from the "train" days (seed `seed`) and `dev_size` of them, chosen by a generator seeded
    with `seed`, set aside for validation (a dev pair that also occurs among the training pairs
    is dropped, so dev is never trained on); test comes from the held-out "test" days (seed
    seed + 1), so it shares no day with either and is kept for the final score."""
    dev_size = default_dev_size(train_size) if dev_size is None else dev_size
    if min(train_size, test_size, dev_size) < 0:
        raise ValueError(f"sizes must be non-negative, got train {train_size}, dev {dev_size}, test {test_size}")
    pool = date_pairs(train_size + dev_size, "train", seed=seed)
    chosen = np.zeros(len(pool), dtype=bool)
    chosen[np.random.default_rng([seed, len(pool)]).permutation(len(pool))[:dev_size]] = True
    train = [p for p, dev in zip(pool, chosen) if not dev]
    seen = set(train)
    dev = [p for p, dev in zip(pool, chosen) if dev and p not in seen]
    return train, dev, date_pairs(test_size, "test", seed=seed + 1)

# ---------------------------------------------------------------------------- the rule-based reader
_MONTH_NUMBER = {name.lower(): i + 1 for i, name in enumerate(MONTHS)}
_MONTH_NUMBER.update({name[:3].lower(): i + 1 for i, name in enumerate(MONTHS)})
_WEEKDAY_PREFIX = re.compile(r"^(?:%s)\b,?\s*" % "|".join(w.lower() for w in WEEKDAYS) + "|^(?:%s)\\b,?\\s*"
                             % "|".join(w[:3].lower() for w in WEEKDAYS))
_DAY = r"(\d{1,2})(?:st|nd|rd|th)?"
_PATTERNS = [  # (regex, the order of its groups: y m d; 'M' marks a month name)
    (re.compile(r"^(\d{4})-(\d{2})-(\d{2})$"), "ymd"),
    (re.compile(r"^(\d{4})/(\d{2})/(\d{2})$"), "ymd"),
    (re.compile(r"^(\d{4})(\d{2})(\d{2})$"), "ymd"),
    (re.compile(r"^(\d{1,2})/(\d{1,2})/(\d{2}|\d{4})$"), "mdy"),
    (re.compile(r"^(\d{1,2})\.(\d{1,2})\.(\d{4})$"), "dmy"),
    (re.compile(r"^(\d{1,2})-([a-z]+)-(\d{2})$"), "dMy"),
    (re.compile(r"^" + _DAY + r"\s+(?:of\s+)?([a-z]+),?\s+(\d{4})$"), "dMy"),
    (re.compile(r"^([a-z]+)\s+" + _DAY + r",?\s+(\d{4})$"), "Mdy"),
]


def _year(text):
    year = int(text)
    if len(text) == 2:  # the two-digit window
        year += 1900 if year >= TWO_DIGIT_YEARS[0] % 100 else 2000
    return year


def parse_date(text):
    """The datetime.date that a human-written date means; ValueError if it is not one of the
    formats above (or names a day that does not exist)."""
    s = " ".join(text.strip().lower().split())
    s = re.sub(r"^the\s+", "", _WEEKDAY_PREFIX.sub("", s))
    for pattern, order in _PATTERNS:
        m = pattern.match(s)
        if not m:
            continue
        parts = dict(zip(order.lower(), m.groups()))
        if "M" in order:
            if parts["m"] not in _MONTH_NUMBER:
                raise ValueError(f"{text!r}: {parts['m']!r} is not a month")
            month = _MONTH_NUMBER[parts["m"]]
        else:
            month = int(parts["m"])
        try:
            return datetime.date(_year(parts["y"]), month, int(parts["d"]))
        except ValueError as exc:
            raise ValueError(f"{text!r}: {exc}") from None
    raise ValueError(f"{text!r} is not a date in any known format")
