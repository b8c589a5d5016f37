"""Reads an object_store target's committed shards with pyarrow and prints one JSON line per row.

Usage: object_store_read.py ROOT MODEL... [--s3 ENDPOINT KEY SECRET]
ROOT is a local directory, or bucket/prefix with --s3. For each model, the manifests
(`<first>-<last>.manifest.json`) are read in name order; each shard's size and sha256 are checked
against its manifest, then its rows are printed as {"model": M, "row": {...}} with `_time` as an ISO
string. A shard without a manifest is not committed and is skipped (and counted on stderr).
"""
import datetime
import hashlib
import io
import json
import os
import sys

import pyarrow.fs as pafs
import pyarrow.parquet as pq


def default(value):
    if isinstance(value, (datetime.datetime, datetime.date)):
        return value.isoformat()
    raise TypeError(repr(value))


def main():
    args = sys.argv[1:]
    if "--s3" in args:
        at = args.index("--s3")
        endpoint, key, secret = args[at + 1 : at + 4]
        args = args[:at]
        scheme, host = endpoint.split("://")
        fs = pafs.S3FileSystem(access_key=key, secret_key=secret, endpoint_override=host,
                               scheme=scheme, region="us-east-1")
    else:
        fs = pafs.LocalFileSystem()
    root, models = args[0].rstrip("/"), args[1:]
    out = sys.stdout
    for model in models:
        selector = pafs.FileSelector(f"{root}/{model}", allow_not_found=True)
        infos = fs.get_file_info(selector)
        names = sorted(i.base_name for i in infos if i.type == pafs.FileType.File)
        manifests = [n for n in names if n.endswith(".manifest.json")]
        stems = {n[: -len(".manifest.json")] for n in manifests}
        uncommitted = [n for n in names if not n.endswith(".manifest.json") and n.split(".")[0] not in stems]
        if uncommitted:
            print(f"{model}: uncommitted shards {uncommitted}", file=sys.stderr)
        for name in manifests:
            with fs.open_input_file(f"{root}/{model}/{name}") as f:
                manifest = json.loads(f.read())
            with fs.open_input_file(f"{root}/{model}/{manifest['object']}") as f:
                data = f.read()
            if len(data) != manifest["bytes"] or hashlib.sha256(data).hexdigest() != manifest["sha256"]:
                sys.exit(f"{model}/{manifest['object']}: size or sha256 differs from its manifest")
            if manifest["format"] == "parquet":
                rows = pq.read_table(io.BytesIO(data)).to_pylist()
            else:
                text = data
                if manifest["compression"] == "zstd":
                    import zstandard
                    text = zstandard.ZstdDecompressor().decompressobj().decompress(data)
                elif manifest["compression"] == "gzip":
                    import gzip
                    text = gzip.decompress(data)
                rows = [json.loads(line) for line in text.decode().splitlines() if line]
            if len(rows) != manifest["rows"]:
                sys.exit(f"{model}/{manifest['object']}: {len(rows)} rows, the manifest says {manifest['rows']}")
            offsets = [r["_offset"] for r in rows]
            if offsets and (offsets[0] != manifest["first_offset"] or offsets[-1] != manifest["last_offset"]):
                sys.exit(f"{model}/{manifest['object']}: offsets {offsets[0]}..{offsets[-1]} differ from the name")
            for row in rows:
                out.write(json.dumps({"model": model, "row": row}, default=default))
                out.write("\n")


main()
# pyarrow's S3 client keeps AWS SDK threads that can abort the interpreter at exit ("terminate called
# without an active exception"); every row is written by now, so leave
# without running the finalizers.
sys.stdout.flush()
os._exit(0)
