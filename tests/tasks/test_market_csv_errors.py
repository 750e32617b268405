"""A recorded CSV that cannot be read fails naming the ticker, the file and (where it can) the
line, not with pandas' bare EmptyDataError or UnicodeDecodeError (issue 16, failure 6)."""
from __future__ import annotations

from datetime import date

import pytest

from tasks.market.sources import CsvSource, PermanentFetchError

HEADER = b"Date,Open,High,Low,Close,Adj Close,Volume\n"
ROW = b"2019-11-28,2000,2010,1990,2005,2005,100\n"


def fetch(folder):
    return CsvSource(folder, adjusted=False).fetch("TCS.NS", date(2019, 11, 1), date(2019, 11, 29))


def test_an_empty_csv_names_the_ticker_and_the_file(tmp_path):
    (tmp_path / "TCS.NS.csv").write_bytes(b"")
    with pytest.raises(PermanentFetchError, match=r"TCS\.NS: .*TCS\.NS\.csv: empty file"):
        fetch(tmp_path)


def test_a_csv_that_is_not_utf8_names_the_file_and_the_line(tmp_path):
    (tmp_path / "TCS.NS.csv").write_bytes(HEADER + ROW + b"2019-11-29,20\xff0,2010,1990,2005,2005,100\n")
    with pytest.raises(PermanentFetchError, match=r"TCS\.NS\.csv, line 3 \(byte \d+: .*\): not UTF-8"):
        fetch(tmp_path)
