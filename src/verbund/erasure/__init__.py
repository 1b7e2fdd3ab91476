"""Erasure of everything that belongs to one API key or one person, on request.

What an access point holds for a key: the files it uploaded, its batches (their input,
output and error files and their items), its training jobs (their events and
files) and its stored responses. A person's data is that of every key the person
made. Usage records stay: they carry no content, only counts under the key's id, and
settlement between partners needs them. The erasure itself is recorded in the audit
log, with counts and no names. On SQLite the write-ahead log is truncated afterwards
and freed pages are overwritten (``secure_delete``), so the erased bytes do not linger
in the database files.
"""

from verbund.erasure._erasure import Erasure, ErasureReport

__all__ = ["Erasure", "ErasureReport"]
