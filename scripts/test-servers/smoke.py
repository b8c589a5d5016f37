"""Starts every test server of scripts/test-servers.sh on free ports in temp dirs,
exercises it the way a connector test would, and stops it.

    $REMIX_TEST_CACHE/bin/python scripts/test-servers/smoke.py [NAME...]

NAME is one of the keys of CHECKS (default: all). One line per server, then
'N passed, N failed'. The start commands here are the reference for the Rust
harness (tests/it/support.rs-style helpers): same flags, same readiness probes.
"""

import asyncio
import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.request

CACHE = os.environ.get("REMIX_TEST_CACHE") or os.path.expanduser("~/.cache/remix-test")
BIN = os.path.join(CACHE, "bin")


def b(name):
    return os.path.join(BIN, name)


def free_ports(n):
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


class Server:
    """A process started in its own temp dir; stopped (process group killed) at the end."""

    def __init__(self, name, user=None):
        self.dir = tempfile.mkdtemp(prefix=f"remix-{name}-")
        self.proc = None
        self.started = None
        if user:
            shutil.chown(self.dir, user, user)

    def start(self, argv, env=None, cwd=None):
        self.log = open(os.path.join(self.dir, "server.log"), "wb")
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            argv, stdout=self.log, stderr=subprocess.STDOUT, cwd=cwd or self.dir,
            env={**os.environ, **(env or {})}, start_new_session=True)
        return self

    def wait(self, probe, timeout=60):
        while time.monotonic() - self.started < timeout:
            if self.proc.poll() is not None:
                error = f"exited with {self.proc.returncode}: {self.tail()}"
                self.stop()
                raise RuntimeError(error)
            try:
                if probe():
                    return time.monotonic() - self.started
            except Exception:
                pass
            time.sleep(0.05)
        error = f"not ready after {timeout}s: {self.tail()}"
        self.stop()
        raise RuntimeError(error)

    def tail(self):
        try:
            with open(os.path.join(self.dir, "server.log"), "rb") as f:
                return f.read()[-600:].decode(errors="replace")
        except OSError:
            return ""

    def stop(self):
        t0 = time.monotonic()
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)
        return time.monotonic() - t0


def http_status(url, method="GET"):
    req = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(req, timeout=2) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def tcp_open(port):
    with socket.create_connection(("127.0.0.1", port), timeout=1):
        return True


# --- SeaweedFS --------------------------------------------------------------

S3_KEY, S3_SECRET = "remixtest", "remixtestsecret"


def start_seaweedfs(table_bucket=None):
    srv = Server("weed")
    (master, master_grpc, volume, volume_grpc, filer, filer_grpc, s3, s3_grpc, iceberg,
     admin, admin_grpc) = free_ports(11)
    cfg = os.path.join(srv.dir, "s3.json")
    with open(cfg, "w") as f:
        json.dump({"identities": [{"name": "remix", "credentials": [
            {"accessKey": S3_KEY, "secretKey": S3_SECRET}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}, f)
    argv = [b("weed"), "mini", f"-dir={srv.dir}/data", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            f"-master.port={master}", f"-master.port.grpc={master_grpc}",
            f"-volume.port={volume}", f"-volume.port.grpc={volume_grpc}",
            f"-filer.port={filer}", f"-filer.port.grpc={filer_grpc}",
            f"-s3.port={s3}", f"-s3.port.grpc={s3_grpc}", f"-s3.port.iceberg={iceberg}",
            "-s3.port.lance=0", f"-admin.port={admin}", f"-admin.port.grpc={admin_grpc}",
            "-admin.ui=false", "-webdav=false", "-master.telemetry=false", "-s3.autoCreateBucket=false",
            f"-filer.localSocket={srv.dir}/filer.sock", f"-s3.localSocket={srv.dir}/s3.sock",
            f"-s3.config={cfg}"]
    if table_bucket:
        argv.append(f"-tableBucket={table_bucket}")
    srv.start(argv)
    ready = srv.wait(lambda: http_status(f"http://127.0.0.1:{s3}/") in (200, 403))
    return srv, s3, iceberg, ready


def s3_client(port, secret=S3_SECRET):
    import boto3
    from botocore.config import Config
    return boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
                        aws_access_key_id=S3_KEY, aws_secret_access_key=secret,
                        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1},
                                      max_pool_connections=32))


def check_seaweedfs():
    import botocore
    srv, s3p, icep, ready = start_seaweedfs(table_bucket="warehouse")
    facts = [f"ready {ready:.1f}s"]
    try:
        try:
            s3_client(s3p, secret="wrong").list_buckets()
            raise AssertionError("wrong secret accepted")
        except botocore.exceptions.ClientError as e:
            facts.append(f"wrong secret {e.response['ResponseMetadata']['HTTPStatusCode']}")
        s3 = s3_client(s3p)
        try:
            s3.put_object(Bucket="missing", Key="k", Body=b"1")
            raise AssertionError("a put created a missing bucket")
        except botocore.exceptions.ClientError as e:
            assert e.response["Error"]["Code"] == "NoSuchBucket"
        s3.create_bucket(Bucket="remix-test")
        s3.put_object(Bucket="remix-test", Key="m/a.jsonl", Body=b"{}\n")
        assert s3.get_object(Bucket="remix-test", Key="m/a.jsonl")["Body"].read() == b"{}\n"
        assert [o["Key"] for o in s3.list_objects_v2(Bucket="remix-test", Prefix="m/")["Contents"]] == ["m/a.jsonl"]
        mp = s3.create_multipart_upload(Bucket="remix-test", Key="m/big")
        parts = []
        for i, size in enumerate([5 << 20, 5 << 20, 100], start=1):
            r = s3.upload_part(Bucket="remix-test", Key="m/big", UploadId=mp["UploadId"], PartNumber=i, Body=b"x" * size)
            parts.append({"PartNumber": i, "ETag": r["ETag"]})
        s3.complete_multipart_upload(Bucket="remix-test", Key="m/big", UploadId=mp["UploadId"], MultipartUpload={"Parts": parts})
        assert s3.head_object(Bucket="remix-test", Key="m/big")["ContentLength"] == (10 << 20) + 100
        facts.append("bucket/put/get/list/multipart ok")
        try:
            s3.put_object(Bucket="remix-test", Key="m/a.jsonl", Body=b"other", IfNoneMatch="*")
            raise AssertionError("If-None-Match: * overwrote an existing object")
        except botocore.exceptions.ClientError as e:
            code = e.response["ResponseMetadata"]["HTTPStatusCode"]
            assert code == 412, code
        s3.put_object(Bucket="remix-test", Key="m/new", Body=b"1", IfNoneMatch="*")
        # 16 concurrent conditional creates of one key: exactly one wins
        results = []

        def put(i):
            try:
                s3.put_object(Bucket="remix-test", Key="m/race", Body=b"%d" % i, IfNoneMatch="*")
                results.append("ok")
            except botocore.exceptions.ClientError as e:
                results.append(e.response["ResponseMetadata"]["HTTPStatusCode"])
        threads = [threading.Thread(target=put, args=(i,)) for i in range(16)]
        [t.start() for t in threads]
        [t.join() for t in threads]
        assert results.count("ok") == 1 and results.count(412) == 15, results
        facts.append("If-None-Match:* -> 412 (also under a 16-way race)")
        facts.append(check_iceberg_rest(s3p, icep))
    finally:
        facts.append(f"stop {srv.stop():.1f}s")
    return facts


def check_iceberg_rest(s3p, icep):
    import pyarrow as pa
    from pyiceberg.catalog import load_catalog
    cat = load_catalog("seaweed", **{
        "type": "rest", "uri": f"http://127.0.0.1:{icep}", "warehouse": "s3://warehouse",
        "credential": f"{S3_KEY}:{S3_SECRET}",
        "s3.endpoint": f"http://127.0.0.1:{s3p}", "s3.access-key-id": S3_KEY,
        "s3.secret-access-key": S3_SECRET, "s3.path-style-access": "true", "s3.region": "us-east-1"})
    cat.create_namespace("remix")
    t = cat.create_table("remix.orders", schema=pa.schema([("id", pa.int64()), ("name", pa.string())]))
    t.append(pa.table({"id": [1, 2], "name": ["a", "b"]}), snapshot_properties={"remix.target": "ice", "remix.offset": "42"})
    t = cat.load_table("remix.orders")
    assert t.current_snapshot().summary["remix.offset"] == "42"
    assert t.scan().to_arrow().num_rows == 2
    con = duckdb_with_extensions()
    con.sql(f"CREATE SECRET s3s (TYPE S3, KEY_ID '{S3_KEY}', SECRET '{S3_SECRET}', ENDPOINT '127.0.0.1:{s3p}', "
            "URL_STYLE 'path', USE_SSL false, REGION 'us-east-1')")
    con.sql(f"CREATE SECRET ice (TYPE ICEBERG, CLIENT_ID '{S3_KEY}', CLIENT_SECRET '{S3_SECRET}', "
            f"OAUTH2_SERVER_URI 'http://127.0.0.1:{icep}/v1/oauth/tokens')")
    con.sql(f"ATTACH 'warehouse' AS w (TYPE ICEBERG, SECRET ice, ENDPOINT 'http://127.0.0.1:{icep}')")
    assert con.sql("select count(*) from w.remix.orders").fetchone()[0] == 2
    assert con.sql("select count(*) from read_parquet('s3://warehouse/remix/orders/data/*.parquet')").fetchone()[0] == 2
    return "iceberg REST catalog: pyiceberg create/append with snapshot summary, duckdb ATTACH + s3:// read ok"


def duckdb_with_extensions(names=("httpfs", "avro", "iceberg")):
    """DuckDB cannot download extensions here: load the ones the duckdb-extension-* wheels ship."""
    import glob
    import importlib
    import duckdb
    con = duckdb.connect()
    for name in names:
        mod = importlib.import_module(f"duckdb_extension_{name}")
        (path,) = glob.glob(os.path.join(os.path.dirname(mod.__file__), "extensions", "*", f"{name}.duckdb_extension"))
        con.sql(f"LOAD '{path}'")
    return con


# --- Azurite ----------------------------------------------------------------

AZ_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def check_azurite():
    from azure.core import MatchConditions
    from azure.core.exceptions import HttpResponseError, ResourceExistsError
    from azure.storage.blob import BlobServiceClient
    srv = Server("azurite")
    (port,) = free_ports(1)
    srv.start([b("azurite-blob"), "--blobHost", "127.0.0.1", "--blobPort", str(port), "--location", srv.dir,
               "--loose", "--skipApiVersionCheck", "--disableTelemetry", "--silent"])
    ready = srv.wait(lambda: http_status(f"http://127.0.0.1:{port}/devstoreaccount1?comp=list") == 403)
    facts = [f"ready {ready:.1f}s"]
    try:
        cs = (f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={AZ_KEY};"
              f"BlobEndpoint=http://127.0.0.1:{port}/devstoreaccount1;")
        cc = BlobServiceClient.from_connection_string(cs).create_container("remix")
        cc.upload_blob("m/a.jsonl", b"{}\n")
        assert [x.name for x in cc.list_blobs(name_starts_with="m/")] == ["m/a.jsonl"]
        assert cc.download_blob("m/a.jsonl").readall() == b"{}\n"
        try:
            cc.upload_blob("m/a.jsonl", b"other", overwrite=False)  # If-None-Match: *
            raise AssertionError("If-None-Match: * overwrote")
        except ResourceExistsError as e:
            assert e.status_code == 409 and e.error_code == "BlobAlreadyExists"
        bb = cc.get_blob_client("m/big")
        ids = []
        for i in range(3):
            bid = base64.b64encode(b"%08d" % i).decode()
            bb.stage_block(bid, b"x" * (4 << 20))
            ids.append(bid)
        bb.commit_block_list(ids, match_condition=MatchConditions.IfMissing)
        try:
            bb.commit_block_list(ids, match_condition=MatchConditions.IfMissing)
            raise AssertionError("conditional commit overwrote")
        except HttpResponseError as e:
            assert e.status_code == 409
        bad = BlobServiceClient.from_connection_string(cs.replace(AZ_KEY, "AAAA" + AZ_KEY[4:]))
        try:
            list(bad.list_containers())
            raise AssertionError("bad key accepted")
        except HttpResponseError as e:
            assert e.status_code == 403
        facts.append("container/put/list/get, staged blocks ok; If-None-Match:* -> 409 BlobAlreadyExists; bad key 403")
    finally:
        facts.append(f"stop {srv.stop():.1f}s")
    return facts


# --- GCS --------------------------------------------------------------------

def check_fake_gcs():
    from google.api_core.exceptions import GoogleAPICallError
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage
    srv = Server("fakegcs")
    (port,) = free_ports(1)
    url = f"http://127.0.0.1:{port}"
    srv.start([b("fake-gcs-server"), "-scheme", "http", "-host", "127.0.0.1", "-port", str(port),
               "-backend", "filesystem", "-filesystem-root", os.path.join(srv.dir, "data"),
               "-external-url", url, "-public-host", f"127.0.0.1:{port}", "-log-level", "warn"])
    ready = srv.wait(lambda: http_status(f"{url}/storage/v1/b") == 200)
    facts = [f"ready {ready:.2f}s"]
    try:
        os.environ["STORAGE_EMULATOR_HOST"] = url
        cl = storage.Client(project="remix", credentials=AnonymousCredentials())
        bk = cl.create_bucket("remix-test")
        bk.blob("m/a.jsonl").upload_from_string(b"{}\n")
        assert [x.name for x in cl.list_blobs("remix-test", prefix="m/")] == ["m/a.jsonl"]
        assert bk.blob("m/a.jsonl").download_as_bytes() == b"{}\n"
        try:
            bk.blob("m/a.jsonl").upload_from_string(b"other", if_generation_match=0)
            raise AssertionError("ifGenerationMatch=0 overwrote")
        except GoogleAPICallError as e:
            assert e.code == 412
        big = bk.blob("m/big", chunk_size=256 * 1024)
        big.upload_from_string(b"x" * (1 << 20), if_generation_match=0)  # resumable, chunked
        facts.append("JSON API put/list/get, resumable upload ok; ifGenerationMatch=0 -> 412")
        # what it does not do: plain media upload ignores ifGenerationMatch; no XML API PUT
        req = urllib.request.Request(f"{url}/upload/storage/v1/b/remix-test/o?uploadType=media&name=m/a.jsonl&ifGenerationMatch=0",
                                     data=b"overwritten", method="POST")
        media = urllib.request.urlopen(req).status
        xml = http_put(f"{url}/remix-test/m/xml", b"x")
        facts.append(f"NOT: uploadType=media ignores ifGenerationMatch ({media}); XML API PUT -> {xml}")
    finally:
        os.environ.pop("STORAGE_EMULATOR_HOST", None)
        facts.append(f"stop {srv.stop():.1f}s")
    return facts


def http_put(url, body, headers=None):
    req = urllib.request.Request(url, data=body, method="PUT", headers=headers or {})
    try:
        return urllib.request.urlopen(req, timeout=5).status
    except urllib.error.HTTPError as e:
        return e.code


def check_gcp_storage_emulator():
    srv = Server("gcpse")
    (port,) = free_ports(1)
    url = f"http://127.0.0.1:{port}"
    srv.start([b("gcp-storage-emulator"), "start", "--host", "127.0.0.1", "--port", str(port),
               "--default-bucket", "remix-test", "-q"], env={"STORAGE_BASE": srv.dir})
    ready = srv.wait(lambda: http_status(f"{url}/") == 200)
    facts = [f"ready {ready:.2f}s"]
    try:
        assert http_put(f"{url}/remix-test/m/a", b"one") == 200
        assert urllib.request.urlopen(f"{url}/remix-test/m/a").read() == b"one"
        cond = http_put(f"{url}/remix-test/m/a", b"two", {"x-goog-if-generation-match": "0"})
        mp = urllib.request.Request(f"{url}/remix-test/m/mp?uploads", data=b"", method="POST")
        try:
            mp_code = urllib.request.urlopen(mp).status
        except urllib.error.HTTPError as e:
            mp_code = e.code
        facts.append(f"XML API PUT/GET ok; NOT: x-goog-if-generation-match:0 on existing -> {cond} (ignored); XML multipart -> {mp_code}")
    finally:
        facts.append(f"stop {srv.stop():.1f}s")
    return facts


# --- moto: SQS, Kinesis -------------------------------------------------------

def aws(service, port):
    import boto3
    return boto3.client(service, endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
                        aws_access_key_id="test", aws_secret_access_key="test")


def check_moto():
    srv = Server("moto")
    (port,) = free_ports(1)
    srv.start([b("moto_server"), "-H", "127.0.0.1", "-p", str(port)])
    ready = srv.wait(lambda: http_status(f"http://127.0.0.1:{port}/moto-api/") == 200)
    facts = [f"ready {ready:.1f}s"]
    try:
        sqs = aws("sqs", port)
        q = sqs.create_queue(QueueName="remix")["QueueUrl"]
        sqs.send_message_batch(QueueUrl=q, Entries=[{"Id": str(i), "MessageBody": str(i), "MessageAttributes": {
            "remix-offset": {"DataType": "String", "StringValue": str(i)}}} for i in range(3)])
        got = receive_all(sqs, q, 3)
        assert sorted(got) == ["0", "1", "2"], got
        f = sqs.create_queue(QueueName="remix.fifo", Attributes={"FifoQueue": "true"})["QueueUrl"]
        for d in ["a", "b", "a", "c"]:
            sqs.send_message(QueueUrl=f, MessageBody=d, MessageGroupId="g", MessageDeduplicationId=d)
        got = receive_all(sqs, f, 3)
        assert got == ["a", "b", "c"], got
        facts.append("SQS standard + FIFO (dedup id, order) ok")
        kin = aws("kinesis", port)
        facts.append(exercise_kinesis(kin))
        requests_reset = urllib.request.Request(f"http://127.0.0.1:{port}/moto-api/reset", data=b"", method="POST")
        assert urllib.request.urlopen(requests_reset).status == 200
        assert aws("sqs", port).list_queues().get("QueueUrls") is None
        facts.append("POST /moto-api/reset empties it")
    finally:
        facts.append(f"stop {srv.stop():.1f}s")
    return facts


def receive_all(sqs, q, n):
    got = []
    deadline = time.monotonic() + 10
    while len(got) < n and time.monotonic() < deadline:
        for m in sqs.receive_message(QueueUrl=q, MaxNumberOfMessages=10, WaitTimeSeconds=1,
                                     MessageAttributeNames=["All"]).get("Messages", []):
            got.append(m["Body"])
            sqs.delete_message(QueueUrl=q, ReceiptHandle=m["ReceiptHandle"])
    return got


def exercise_kinesis(kin):
    kin.create_stream(StreamName="remix", ShardCount=2)
    deadline = time.monotonic() + 10
    while kin.describe_stream(StreamName="remix")["StreamDescription"]["StreamStatus"] != "ACTIVE":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    r = kin.put_records(StreamName="remix", Records=[
        {"Data": json.dumps({"i": i}).encode(), "PartitionKey": f"k{i}"} for i in range(10)])
    assert r["FailedRecordCount"] == 0
    n = 0
    for sh in kin.list_shards(StreamName="remix")["Shards"]:
        it = kin.get_shard_iterator(StreamName="remix", ShardId=sh["ShardId"], ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
        n += len(kin.get_records(ShardIterator=it, Limit=100)["Records"])
    assert n == 10, n
    return "Kinesis create/put_records/get_records ok"


def check_kinesalite():
    srv = Server("kinesalite")
    (port,) = free_ports(1)
    srv.start([b("kinesalite"), "--host", "127.0.0.1", "--port", str(port), "--path", os.path.join(srv.dir, "db"),
               "--createStreamMs", "0", "--deleteStreamMs", "0", "--updateStreamMs", "0"])
    ready = srv.wait(lambda: http_status(f"http://127.0.0.1:{port}/") in (200, 400, 403))
    facts = [f"ready {ready:.1f}s"]
    try:
        facts.append(exercise_kinesis(aws("kinesis", port)))
    finally:
        facts.append(f"stop {srv.stop():.1f}s")
    return facts


# --- NATS JetStream -------------------------------------------------------------

def check_nats():
    srv = Server("nats")
    port, monitor = free_ports(2)
    srv.start([b("nats-server"), "-js", "-sd", os.path.join(srv.dir, "js"), "-a", "127.0.0.1", "-p", str(port),
               "-m", str(monitor), "--server_name", "remix-test"])
    ready = srv.wait(lambda: http_status(f"http://127.0.0.1:{monitor}/healthz?js-enabled-only=true") == 200)
    facts = [f"ready {ready:.2f}s"]
    try:
        facts.append(asyncio.run(exercise_nats(port)))
    finally:
        facts.append(f"stop {srv.stop():.1f}s")
    return facts


async def exercise_nats(port):
    import nats
    from nats.js.api import StreamConfig
    from nats.js.errors import APIError
    nc = await nats.connect(f"nats://127.0.0.1:{port}")
    js = nc.jetstream()
    await js.add_stream(StreamConfig(name="REMIX", subjects=["remix.>"], duplicate_window=120.0))
    a1 = await js.publish("remix.orders", b"1", headers={"Nats-Msg-Id": "t:1"})
    a2 = await js.publish("remix.orders", b"1", headers={"Nats-Msg-Id": "t:1"})
    assert a2.duplicate and a2.seq == a1.seq
    assert (await js.stream_info("REMIX")).state.messages == 1
    try:
        await js.publish("remix.orders", b"2", headers={"Nats-Expected-Last-Sequence": "0"})
        raise AssertionError("stale Nats-Expected-Last-Sequence accepted")
    except APIError as e:
        assert e.err_code == 10071
    kv = await js.create_key_value(bucket="remix_state")
    rev = await kv.create("lease", b"n1")
    try:
        await kv.update("lease", b"n2", last=rev + 5)
        raise AssertionError("stale KV update accepted")
    except Exception as e:
        assert "WrongLastSequence" in type(e).__name__
    await nc.close()
    return "stream create, Nats-Msg-Id dup -> duplicate ack, expected-last-seq fencing (10071), KV CAS ok"


# --- Kafka protocol: tansu ------------------------------------------------------

def start_tansu(storage="memory"):
    srv = Server("tansu")
    (port,) = free_ports(1)
    # sqlite:// paths are taken relative to the working directory (the temp dir)
    engine = "memory://tansu/" if storage == "memory" else "sqlite://tansu.db"
    srv.start([b("tansu"), "broker", "--listener-url", f"tcp://127.0.0.1:{port}",
               "--advertised-listener-url", f"tcp://127.0.0.1:{port}", "--storage-engine", engine],
              env={"RUST_LOG": "warn"})
    ready = srv.wait(lambda: tcp_open(port))
    return srv, port, ready


def check_tansu():
    if not os.path.exists(b("tansu")):
        raise RuntimeError(f"{b('tansu')} missing (scripts/test-servers.sh without --no-tansu builds it)")
    facts = []
    for storage in ("memory", "sqlite"):
        srv, port, ready = start_tansu(storage)
        try:
            facts.append(f"{storage}: ready {ready:.2f}s, " + exercise_kafka(port))
        finally:
            facts.append(f"stop {srv.stop():.1f}s")
    return facts


def exercise_kafka(port):
    from confluent_kafka import Consumer, KafkaException, Producer
    from confluent_kafka.admin import AdminClient, NewTopic
    bs = f"127.0.0.1:{port}"
    admin = AdminClient({"bootstrap.servers": bs})
    for f in admin.create_topics([NewTopic("orders", num_partitions=1, replication_factor=1)]).values():
        f.result(10)
    p = Producer({"bootstrap.servers": bs, "enable.idempotence": True, "acks": "all"})
    errors = []
    for i in range(10):
        p.produce("orders", key=b"k%d" % (i % 3), value=b"v%d" % i,
                  headers=[("remix-offset", str(i).encode())],
                  on_delivery=lambda err, msg: err and errors.append(err))
    assert p.flush(15) == 0 and not errors, errors
    c = Consumer({"bootstrap.servers": bs, "group.id": "g1", "auto.offset.reset": "earliest",
                  "enable.auto.commit": False})
    c.subscribe(["orders"])
    got = []
    deadline = time.monotonic() + 20
    while len(got) < 10 and time.monotonic() < deadline:
        m = c.poll(0.5)
        if m is not None and not m.error():
            got.append(m.value())
    c.close()
    assert got == [b"v%d" % i for i in range(10)], got
    return "idempotent produce + consume ok; transactions: " + probe_transactions(bs)


def probe_transactions(bs):
    """tansu 0.6.0 answers InitProducerId but does not list EndTxn in ApiVersions."""
    from confluent_kafka import KafkaException, Producer
    p = Producer({"bootstrap.servers": bs, "transactional.id": f"remix-smoke-{os.getpid()}"})
    try:
        p.init_transactions(15)
        p.begin_transaction()
        p.produce("orders", value=b"tx")
        p.commit_transaction(15)
        return "commit ok"
    except KafkaException as e:
        return f"NOT supported ({e.args[0].name()}: {e.args[0].str()[:60]})"


# --- Redis / Valkey -------------------------------------------------------------

def check_redis(binary="redis-server"):
    import redis
    srv = Server(binary)
    (port,) = free_ports(1)
    srv.start([b(binary), "--port", str(port), "--bind", "127.0.0.1", "--dir", srv.dir, "--appendonly", "yes",
               "--appendfsync", "always", "--save", "", "--daemonize", "no", "--logfile", ""])
    r = redis.Redis(host="127.0.0.1", port=port)
    ready = srv.wait(lambda: r.ping())
    facts = [f"ready {ready:.2f}s"]
    try:
        assert r.xadd("remix:orders", {"v": "1"}, id="5-1") == b"5-1"
        try:
            r.xadd("remix:orders", {"v": "1"}, id="5-1")
            raise AssertionError("XADD with an old id accepted")
        except redis.ResponseError:
            pass
        assert os.path.isdir(os.path.join(srv.dir, "appendonlydir"))
        try:
            waitaof = f"WAITAOF -> {r.execute_command('WAITAOF', 1, 0, 0)}"
        except redis.ResponseError:
            waitaof = "NOT: no WAITAOF"
        facts.append(f"{r.info()['redis_version']} XADD explicit ids, AOF always; {waitaof}")
    finally:
        facts.append(f"stop {srv.stop():.1f}s")
    return facts


# --- RabbitMQ -------------------------------------------------------------------

def check_rabbitmq():
    import pika
    facts = []
    if not port_open(5672):
        subprocess.run(["rabbitmq-server", "-detached"], check=True)
        t0 = time.monotonic()
        while not port_open(5672):
            assert time.monotonic() - t0 < 120, "rabbitmq-server -detached did not open 5672"
            time.sleep(0.5)
        facts.append(f"started the machine broker in {time.monotonic() - t0:.1f}s")
    vhost = f"remix-smoke-{os.getpid()}"
    t0 = time.monotonic()
    subprocess.run(["rabbitmqctl", "-q", "add_vhost", vhost], check=True)
    subprocess.run(["rabbitmqctl", "-q", "set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"], check=True)
    facts.append(f"add_vhost+set_permissions {time.monotonic() - t0:.1f}s")
    try:
        facts.append(exercise_amqp(5672, vhost))
    finally:
        t0 = time.monotonic()
        subprocess.run(["rabbitmqctl", "-q", "delete_vhost", vhost], check=True)
        facts.append(f"delete_vhost {time.monotonic() - t0:.1f}s")
    return facts


def port_open(port):
    try:
        return tcp_open(port)
    except OSError:
        return False


def exercise_amqp(port, vhost):
    import pika
    c = pika.BlockingConnection(pika.ConnectionParameters(
        host="127.0.0.1", port=port, virtual_host=vhost, credentials=pika.PlainCredentials("guest", "guest")))
    ch = c.channel()
    ch.confirm_delivery()
    ch.exchange_declare("remix", exchange_type="topic", durable=True)
    ch.queue_declare("all", durable=True)
    ch.queue_bind("all", "remix", routing_key="#")
    for i in range(20):
        ch.basic_publish("remix", "orders", b"%d" % i, mandatory=True, properties=pika.BasicProperties(
            delivery_mode=2, message_id=f"t:{i}", headers={"remix-offset": str(i)}))
    n = 0
    while ch.basic_get("all", auto_ack=True)[0] is not None:
        n += 1
    c.close()
    assert n == 20, n
    return "durable topic exchange, publisher confirms, 20 msgs round trip ok"


def check_rabbitmq_throwaway():
    """A second, private broker node: for tests that must stop or kill the broker."""
    srv = Server("rabbitmq", user="rabbitmq" if os.geteuid() == 0 else None)
    port, dist = free_ports(2)
    for d in ("mnesia", "log"):
        os.mkdir(os.path.join(srv.dir, d))
    with open(os.path.join(srv.dir, "rabbitmq.conf"), "w") as f:
        f.write(f"listeners.tcp.local = 127.0.0.1:{port}\n")
    with open(os.path.join(srv.dir, "enabled_plugins"), "w") as f:
        f.write("[].\n")
    if os.geteuid() == 0:
        for root, dirs, files in os.walk(srv.dir):
            for n in dirs + files:
                shutil.chown(os.path.join(root, n), "rabbitmq", "rabbitmq")
    node = f"remix{port}@localhost"
    srv.start(["rabbitmq-server"], env={
        "RABBITMQ_NODENAME": node, "RABBITMQ_CONFIG_FILE": os.path.join(srv.dir, "rabbitmq.conf"),
        "RABBITMQ_DIST_PORT": str(dist), "RABBITMQ_MNESIA_BASE": os.path.join(srv.dir, "mnesia"),
        "RABBITMQ_LOG_BASE": os.path.join(srv.dir, "log"),
        "RABBITMQ_ENABLED_PLUGINS_FILE": os.path.join(srv.dir, "enabled_plugins"),
        "RABBITMQ_PID_FILE": os.path.join(srv.dir, "rabbit.pid"),
        "ERL_CRASH_DUMP": os.path.join(srv.dir, "erl_crash.dump")})
    ready = srv.wait(lambda: amqp_answers(port), timeout=90)
    facts = [f"ready {ready:.1f}s"]
    try:
        facts.append(exercise_amqp(port, "/"))
    finally:
        t0 = time.monotonic()
        subprocess.run(["rabbitmqctl", "-q", "-n", node, "stop"], check=False)
        facts.append(f"rabbitmqctl -n {node} stop {time.monotonic() - t0:.1f}s")
        srv.stop()
    return facts


def amqp_answers(port):
    with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
        s.sendall(b"AMQP\x00\x00\x09\x01")
        return len(s.recv(8)) > 0


# --- MariaDB --------------------------------------------------------------------

def check_mariadb():
    root = os.geteuid() == 0
    srv = Server("mariadb", user="mysql" if root else None)
    (port,) = free_ports(1)
    user = ["--user=mysql"] if root else []
    data = os.path.join(srv.dir, "data")
    t0 = time.monotonic()
    try:
        subprocess.run([b("mariadb-install-db"), "--no-defaults", f"--datadir={data}", *user,
                        "--auth-root-authentication-method=normal", "--skip-test-db"],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    except subprocess.CalledProcessError:
        srv.stop()
        raise
    install = time.monotonic() - t0
    srv.start([b("mariadbd"), "--no-defaults", *user, f"--datadir={data}", f"--port={port}",
               "--bind-address=127.0.0.1", f"--socket={srv.dir}/mysqld.sock", f"--pid-file={srv.dir}/mysqld.pid",
               "--log-bin=binlog", "--binlog-format=ROW", "--server-id=1", "--innodb-buffer-pool-size=64M",
               "--skip-name-resolve"])
    mysql = [b("mariadb"), "--no-defaults", "-h127.0.0.1", f"-P{port}", "-uroot", "-N", "-e"]
    ready = srv.wait(lambda: subprocess.run(mysql + ["select 1"], capture_output=True).returncode == 0)
    facts = [f"install-db {install:.1f}s, ready {ready:.1f}s"]
    try:
        out = subprocess.run(mysql + ["select version(), @@log_bin, @@binlog_format; create database sbtest"],
                             capture_output=True, text=True, check=True).stdout.split()
        facts.append(" ".join(out))
        sb = ["sysbench", "oltp_write_only", "--db-driver=mysql", "--mysql-host=127.0.0.1", f"--mysql-port={port}",
              "--mysql-user=root", "--mysql-password=", "--mysql-db=sbtest", "--tables=2", "--table-size=1000"]
        subprocess.run(sb + ["prepare"], check=True, capture_output=True, cwd=srv.dir)
        run = subprocess.run(sb + ["--threads=2", "--time=3", "run"], check=True, capture_output=True, text=True, cwd=srv.dir)
        tps = [ln.split("(")[1].split()[0] for ln in run.stdout.splitlines() if "transactions:" in ln]
        facts.append(f"sysbench oltp_write_only 3s: {tps[0]} tps")
    finally:
        facts.append(f"stop {srv.stop():.1f}s")
    return facts


def check_python_readers():
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq
    from pyiceberg.catalog.sql import SqlCatalog
    d = tempfile.mkdtemp(prefix="remix-readers-")
    try:
        os.makedirs(os.path.join(d, "data"))
        pq.write_table(pa.table({"id": [1, 2, 3], "name": ["a", "b", "c"]}), os.path.join(d, "data", "train-0.parquet"))
        with open(os.path.join(d, "README.md"), "w") as f:
            f.write("---\nconfigs:\n- config_name: default\n  data_files:\n  - split: train\n"
                    "    path: data/train-*.parquet\n---\n# test\n")
        env = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": os.path.join(d, "hf")}
        os.environ.update(env)
        ds = datasets.load_dataset(d)
        assert ds["train"].num_rows == 3
        con = duckdb_with_extensions(())
        assert con.sql(f"select sum(id) from '{d}/data/*.parquet'").fetchone()[0] == 6
        cat = SqlCatalog("local", uri=f"sqlite:///{d}/catalog.db", warehouse=f"file://{d}/warehouse")
        cat.create_namespace("remix")
        t = cat.create_table("remix.t", schema=pa.schema([("id", pa.int64())]))
        t.append(pa.table({"id": [1, 2]}), snapshot_properties={"remix.offset": "7"})
        assert cat.load_table("remix.t").current_snapshot().summary["remix.offset"] == "7"
        import confluent_kafka, nats, pika, redis, boto3, azure.storage.blob, google.cloud.storage  # noqa: F401
        return [f"datasets {datasets.__version__} offline from local files, duckdb, pyiceberg sql-sqlite ok; "
                f"librdkafka {confluent_kafka.libversion()[0]}"]
    finally:
        shutil.rmtree(d, ignore_errors=True)


CHECKS = {
    "python-readers": check_python_readers,
    "seaweedfs": check_seaweedfs,
    "azurite": check_azurite,
    "fake-gcs-server": check_fake_gcs,
    "gcp-storage-emulator": check_gcp_storage_emulator,
    "moto": check_moto,
    "kinesalite": check_kinesalite,
    "nats-server": check_nats,
    "tansu": check_tansu,
    "redis": lambda: check_redis("redis-server"),
    "valkey": lambda: check_redis("valkey-server"),
    "rabbitmq": check_rabbitmq,
    "rabbitmq-throwaway": check_rabbitmq_throwaway,
    "mariadb": check_mariadb,
}


def main(names):
    passed = failed = 0
    for name in names or CHECKS:
        t0 = time.monotonic()
        try:
            facts = CHECKS[name]()
            passed += 1
            print(f"ok   {name:<20} {time.monotonic() - t0:5.1f}s  " + "; ".join(facts), flush=True)
        except Exception as e:
            failed += 1
            print(f"FAIL {name:<20} {time.monotonic() - t0:5.1f}s  {type(e).__name__}: {e}", flush=True)
            if os.environ.get("SMOKE_TRACE"):
                traceback.print_exc()
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
