"""Reads an object_store target's committed shards with pyarrow and prints one JSON line per row.

Usage: object_store_read.py ROOT MODEL... [--s3 ENDPOINT KEY SECRET | --azure CONNECTION_STRING]
ROOT is a local directory, or bucket/prefix with --s3, or container/prefix with --azure (the blobs
are downloaded with the Azure SDK into a temporary directory, then read from there). For each model, the manifests
(`<first>-<last>.manifest.json`) are read in name order; each shard's size and sha256 are checked
against its manifest, then its rows are printed as {"model": M, "row": {...}} with `_time` as an ISO
string. A shard without a manifest is not committed and is skipped (and counted on stderr).

Read once the target has caught up, so nothing may be left of its streaming: no staging object under
ROOT/_remix/*/open/ and, on S3, no multipart upload under ROOT (the reader fails otherwise).
"""
import datetime
import hashlib
import io
import json
import os
import shutil
import sys
import tempfile

import pyarrow.fs as pafs
import pyarrow.parquet as pq


def default(value):
    if isinstance(value, (datetime.datetime, datetime.date)):
        return value.isoformat()
    raise TypeError(repr(value))


# Directories of downloaded blobs, removed before the exit below (which skips atexit).
DOWNLOADS = []


def download_azure(connection, root):
    """Downloads every blob under container/prefix into a temporary directory; returns its path."""
    from azure.storage.blob import BlobServiceClient

    container, _, prefix = root.partition("/")
    client = BlobServiceClient.from_connection_string(connection).get_container_client(container)
    local = tempfile.mkdtemp(prefix="azure-shards-")
    DOWNLOADS.append(local)
    for name in client.list_blob_names(name_starts_with=prefix + "/"):
        path = os.path.join(local, name[len(prefix) + 1 :])
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(client.download_blob(name).readall())
    return local


def main():
    args = sys.argv[1:]
    s3 = None
    if "--s3" in args:
        at = args.index("--s3")
        endpoint, key, secret = args[at + 1 : at + 4]
        s3 = (endpoint, key, secret)
        args = args[:at]
        scheme, host = endpoint.split("://")
        fs = pafs.S3FileSystem(access_key=key, secret_key=secret, endpoint_override=host,
                               scheme=scheme, region="us-east-1")
    elif "--azure" in args:
        at = args.index("--azure")
        connection = args[at + 1]
        args = args[:at]
        args[0] = download_azure(connection, args[0].rstrip("/"))
        fs = pafs.LocalFileSystem()
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
    check_leftovers(fs, root, s3)


def check_leftovers(fs, root, s3):
    """Fails on a staging object or (S3) a multipart upload left under ROOT."""
    infos = fs.get_file_info(pafs.FileSelector(f"{root}/_remix", recursive=True, allow_not_found=True))
    staged = [i.path for i in infos if i.type == pafs.FileType.File and "/open/" in i.path]
    if staged:
        sys.exit(f"staging objects left: {staged}")
    if s3 is not None:
        import boto3
        from botocore.config import Config

        endpoint, key, secret = s3
        bucket, _, prefix = root.partition("/")
        client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=key,
                              aws_secret_access_key=secret, config=Config(s3={"addressing_style": "path"}))
        uploads = client.list_multipart_uploads(Bucket=bucket, Prefix=prefix + "/").get("Uploads", [])
        if uploads:
            sys.exit(f"orphaned multipart uploads: {[(u['Key'], u['UploadId']) for u in uploads]}")


main()
# pyarrow's S3 client keeps AWS SDK threads that can abort the interpreter at exit ("terminate called
# without an active exception"); every row is written by now, so leave
# without running the finalizers.
for directory in DOWNLOADS:
    shutil.rmtree(directory, ignore_errors=True)
sys.stdout.flush()
os._exit(0)
