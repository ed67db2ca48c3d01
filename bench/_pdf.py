"""A real PDF of many pages of text, written without any PDF library (benchmarks)."""

from __future__ import annotations

import zlib


def pdf_with_pages(pages: int, lines_per_page: int = 40) -> bytes:
    """``pages`` pages of Helvetica text, about 3 KB of text each (a handbook's density), the page
    contents compressed as PDF writers do (FlateDecode)."""
    objects: list[bytes] = [b"<< /Type /Catalog /Pages 2 0 R >>", b""]  # the page tree is filled in below
    font = 3
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    kids = []
    for page in range(pages):
        lines = [
            f"Section {page + 1}.{line + 1}: staff on site {page % 9} follow rule {line} of the handbook, "
            f"as agreed in meeting {page * lines_per_page + line}."
            for line in range(lines_per_page)
        ]
        text = " ".join(f"({line}) Tj T*" for line in lines)
        stream = zlib.compress(f"BT /F1 9 Tf 11 TL 40 760 Td {text} ET".encode())
        header = f"<< /Length {len(stream)} /Filter /FlateDecode >>\nstream\n".encode()
        objects.append(header + stream + b"\nendstream")
        content = len(objects)
        objects.append(
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
            + f"/Contents {content} 0 R /Resources << /Font << /F1 {font} 0 R >> >> >>".encode()
        )
        kids.append(len(objects))
    objects[1] = f"<< /Type /Pages /Kids [{' '.join(f'{k} 0 R' for k in kids)}] /Count {pages} >>".encode()
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{offset:010d} 00000 n \n".encode() for offset in offsets)
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)
