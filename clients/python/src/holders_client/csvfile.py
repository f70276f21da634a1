"""Holders as CSV: the header and the rows ``export_csv`` writes, and the write to a path
that leaves no half file behind."""

from __future__ import annotations

import csv
import os
import tempfile
from typing import IO, Iterable

from .models import Holder

CSV_HEADER = ("rank", "address", "balance", "balance_formatted", "share_of_supply_percent")


def write_csv_file(path: str, holders: Iterable[Holder]) -> int:
    """Writes next to ``path`` and renames over it once every row is written: a failed
    export (the server gone, a refusal, an interrupt) leaves no half file behind."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, partial = tempfile.mkstemp(prefix=".export-", suffix=".csv.part", dir=directory)
    try:
        with os.fdopen(fd, "w", newline="", encoding="utf-8") as f:
            rows = write_csv(f, holders)
        os.replace(partial, path)
        return rows
    except BaseException:
        try:
            os.unlink(partial)
        except OSError:
            pass
        raise


def write_csv(f: IO[str], holders: Iterable[Holder]) -> int:
    writer = csv.writer(f)
    writer.writerow(CSV_HEADER)
    rows = 0
    for h in holders:
        writer.writerow(
            (h.rank, h.address, h.balance, h.balance_formatted, repr(h.share_of_supply_percent))
        )
        rows += 1
    return rows
