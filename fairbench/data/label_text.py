"""Label files as text: UTF-8 only, and a bad byte named by its line.

Every label file a loader parses (CSV, the CelebA txt lists, a manifest) is read here first,
so that a file re-saved in another encoding (Latin-1 ``ü`` is the byte 0xfc), a damaged file
with a NUL byte, or an empty file is one :class:`DatasetError` naming the file, the line (1-based,
as an editor counts it) and what to do, rather than a codec error naming neither.
"""

from __future__ import annotations

import io
from pathlib import Path

from fairbench.data.base import DatasetError

BOM = b"\xef\xbb\xbf"


def _line_of(data: bytes, position: int) -> int:
    return data.count(b"\n", 0, position) + 1


def read_label_text(path: Path, dataset: str) -> str:
    """The text of ``path`` (UTF-8, a leading byte-order mark dropped); ``dataset`` prefixes errors."""
    data = Path(path).read_bytes()
    if not data.strip(BOM + b" \t\r\n"):
        raise DatasetError(f"{dataset}: {path} is empty (no header, no rows); restore it from the dataset's download "
                           "(or re-export it from its source)")
    nul = data.find(b"\0")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        if nul < 0 or exc.start < nul:
            raise DatasetError(f"{dataset}: {path} line {_line_of(data, exc.start)}: byte 0x{data[exc.start]:02x} is "
                               "not UTF-8 text; re-save the file as UTF-8 (e.g. `iconv -f latin1 -t utf-8`, or "
                               "'CSV UTF-8' in a spreadsheet)") from None
    if nul >= 0:
        raise DatasetError(f"{dataset}: {path} line {_line_of(data, nul)}: holds a NUL byte (0x00), which a text file "
                           "never does; remove it, or re-download / re-export the file (it may be damaged)")
    return text


def label_lines(text: str) -> io.StringIO:
    """``text`` as a file for ``csv.reader`` / ``pandas.read_csv`` (line ends kept as they are)."""
    return io.StringIO(text, newline="")
