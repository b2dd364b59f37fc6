"""The `notes` reader: Markdown notes without their headings, one document per paragraph."""

from lmctl.errors import LmctlError


def read_notes(path, *, text_column="text", encoding_errors="strict", document_split=None):
    try:
        text = open(path, encoding="utf-8", errors=encoding_errors).read()
    except UnicodeDecodeError as exc:
        raise LmctlError(f"{path} is not UTF-8 text ({exc.reason}); pass --encoding-errors replace") from None
    kept = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    for paragraph in kept.split("\n\n"):
        if paragraph.strip():
            yield paragraph.strip()
