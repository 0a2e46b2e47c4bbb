"""A text-only PDF report, Qt-free, for the listener (the viewer's report, with the picture, is
``desktop/qt_report.py``): the study, the decision, the scores, who computed them, the disclaimer."""
from __future__ import annotations

import textwrap
from datetime import datetime, timezone


LINES_PER_PAGE, WIDTH = 56, 92


def report_lines(result, header, intended_use: str = "", by: str = "listener") -> list[str]:
    """``header``: the source's pydicom dataset (made safe here: malformed values left out and
    named on a 'Header:' line) or a plain dict of already safe values; ``by``: what wrote the report."""
    notes = []
    if hasattr(header, "elements"):
        from medexport.engine.header_safe import safe_header

        safe = safe_header(header)
        header, notes = safe.dataset, safe.notes
    who = " ".join(filter(None, [str(header.get("PatientName", "")), str(header.get("PatientID", ""))]))
    lines = [f"medexport result report ({by})", "", *([result.disclaimer, ""] if result.disclaimer else []),
             f"Patient: {who or '-'}   Study date: {header.get('StudyDate', '') or '-'}   "
             f"Modality: {header.get('Modality', '') or '-'}",
             f"Study UID: {header.get('StudyInstanceUID', '')}", f"Object UID: {header.get('SOPInstanceUID', '')}",
             f"Input SHA-256: {result.input_sha256}", "", f"Result: {result.headline()}", ""]
    for row in result.score_rows():
        lines.append(f"  {row.label:<24} {row.score:.3f}"
                     + (f"   threshold {row.threshold:.3f}" if row.threshold is not None else ""))
    lines += [f"  {line}" for line in result.detail_lines()]
    lines += [f"Header: {note}" for note in notes]
    lines += ["", f"Model: {result.model_id} {result.model_version}   Runtime: {result.backend} {result.precision}",
              f"Bundle SHA-256: {result.bundle_sha256}", f"Intended use: {intended_use or '-'}",
              f"Computed {result.created} UTC; report written "
              f"{datetime.now(timezone.utc).isoformat(timespec='seconds')} by the medexport {by}."]
    return lines


def _escape(line: str) -> str:
    text = line.encode("latin-1", "replace").decode("latin-1")
    return text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def text_pdf(lines: list[str], title: str = "medexport report") -> bytes:
    """A valid PDF 1.4 with ``lines`` in Helvetica on A4 pages (wrapped at WIDTH characters)."""
    wrapped = [part for line in lines for part in (textwrap.wrap(line, WIDTH) or [""])]
    pages = [wrapped[i:i + LINES_PER_PAGE] for i in range(0, max(len(wrapped), 1), LINES_PER_PAGE)]
    n = len(pages)
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>",
               b"<< /Type /Pages /Kids [" + b" ".join(b"%d 0 R" % (5 + 2 * i) for i in range(n))
               + b"] /Count %d >>" % n,
               b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
               b"<< /Title (" + _escape(title).encode("latin-1") + b") /Producer (medexport) >>"]
    for page in pages:
        body = "BT /F1 10 Tf 50 800 Td 13 TL " + " ".join(f"({_escape(line)}) Tj T*" for line in page) + " ET"
        stream = body.encode("latin-1")
        number = len(objects) + 1
        objects.append(b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Resources << /Font << /F1 3 0 R >> >>"
                       b" /Contents %d 0 R >>" % (number + 1))
        objects.append(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream")
    return pdf_file(objects, info=4)


def pdf_file(objects: list[bytes], info: int) -> bytes:
    """A PDF file of numbered ``objects`` (object 1 the catalog, ``info`` the document info), with its xref."""
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for i, obj in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % i + obj + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R /Info %d 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, info, xref)
    return bytes(out)
