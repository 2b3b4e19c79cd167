"""What a written table holds: its parts' content digests (xxh3-128), rows and schema.

The manifest records a step's tables as `TableInfo`; `pipeline.verify` checks files against the
digests recorded there.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import xxhash

from pipeline.io import PART_GLOB
from pipeline.writing import written_digest


@dataclass
class TableInfo:
    """What was written for one table (the main output or a side output)."""

    rows: int = 0
    files: list[dict] = field(default_factory=list)
    schema: list[dict] = field(default_factory=list)
    fingerprint: str = ""

    def to_dict(self) -> dict:
        return {"rows": self.rows, "fingerprint": self.fingerprint, "files": self.files, "schema": self.schema}


def schema_to_json(schema: pa.Schema) -> list[dict]:
    return [{"name": f.name, "type": str(f.type), "nullable": f.nullable} for f in schema]



def hash_file(path: Path) -> str:
    """Content digest (xxh3-128) of one file, read in 8 MB chunks."""
    h = xxhash.xxh3_128()
    with open(path, "rb", buffering=0) as fh:
        while chunk := fh.read(8 << 20):
            h.update(chunk)
    return h.hexdigest()


def combine_digests(names: Iterable[str], digests: Iterable[str]) -> str:
    """A table's fingerprint: its part names with their content digests, in order."""
    h = xxhash.xxh3_128()
    for name, digest in zip(names, digests):
        h.update(f"{name}\0{digest}\n".encode())
    return h.hexdigest()


def fingerprint_files(files: Iterable[Path]) -> str:
    """Content digest of files as manifests before per-part digests recorded it (name + bytes, one stream)."""
    h = xxhash.xxh3_128()
    for f in files:
        h.update(f.name.encode())
        with open(f, "rb", buffering=0) as fh:
            while chunk := fh.read(8 << 20):
                h.update(chunk)
    return h.hexdigest()


def describe_file(path: Path, digest: str) -> dict:
    """What a file holds: name, size and content digest (the same for the same bytes on any disk)."""
    return {"name": path.name, "bytes": os.lstat(path).st_size, "xxh3": digest}


def describe_table(table_dir: Path) -> TableInfo:
    """Rows, schema and digests of a written table; parts written by write_table in this process
    were hashed as they were written, so only parts written elsewhere (Ray workers) are read again."""
    files = sorted(table_dir.glob(PART_GLOB))
    info = TableInfo()
    schema = None
    digests = [written_digest(f) or hash_file(f) for f in files]
    for f, digest in zip(files, digests):
        meta = pq.read_metadata(f)
        schema = schema or meta.schema.to_arrow_schema()
        info.rows += meta.num_rows
        info.files.append({"rows": meta.num_rows, **describe_file(f, digest)})
    info.schema = schema_to_json(schema) if schema is not None else []
    info.fingerprint = combine_digests([f.name for f in files], digests)
    return info
