"""The Python predecessor's archive core on a book tree, for an A/B on the same machine.

It does what `get_book_archive` did (reference §5): read each file whole, `zipfile.writestr`
with ZIP_DEFLATED (zlib level 6) into a temp file, then read the finished ZIP back into memory
(to upload it). Storage is the local disk here, so this is a lower bound of the predecessor's
time. Usage: python3 predecessor_archive.py BOOK_DIR
"""
import os
import sys
import tempfile
import time
import zipfile

root = sys.argv[1]
paths = sorted(
    os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs
)
start = time.monotonic()
with tempfile.NamedTemporaryFile(suffix=".zip") as tmp:
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for p in paths:
            with open(p, "rb") as fh:
                zf.writestr(os.path.relpath(p, root), fh.read())
    tmp.seek(0)
    data = tmp.read()
elapsed = time.monotonic() - start
print(f"{len(paths)} files -> {len(data)} byte ZIP in {elapsed:.2f} s")
