"""The nats conformance adapter's independent reader (nats-py).

dump PORT STREAM SUBJECT AFTER_SEQ  the stream's messages after AFTER_SEQ, in order:
                             {"last_seq", "messages": [{"seq", "subject", "headers", "data"}]}
last PORT STREAM             {"last_seq"}
damage PORT STREAM           deletes a few messages
create PORT STREAM SUBJECT   creates the stream with a 100 ms duplicate window (so that every case
                             runs beyond the window: exactly once must not rest on it)
"""
import asyncio
import json
import sys

import nats
from nats.js.api import ConsumerConfig, DeliverPolicy, AckPolicy


async def dump(js, stream, subject, after):
    info = await js.stream_info(stream)
    last = info.state.last_seq
    out = []
    if last > after and info.state.messages > 0:
        config = ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=after + 1,
                                ack_policy=AckPolicy.NONE, inactive_threshold=30.0)
        sub = await js.pull_subscribe(subject, stream=stream, config=config)
        pending = None
        while pending != 0:
            try:
                msgs = await sub.fetch(batch=1000, timeout=10)
            except nats.errors.TimeoutError:
                sys.exit(f"no messages within 10 s after sequence {out[-1]['seq'] if out else after}")
            for m in msgs:
                seq = m.metadata.sequence.stream
                out.append({"seq": seq, "subject": m.subject, "headers": dict(m.headers or {}),
                            "data": m.data.decode()})
                pending = m.metadata.num_pending
        await sub.unsubscribe()
    return {"last_seq": last, "messages": out}


async def damage(js, stream):
    info = await js.stream_info(stream)
    first, last = info.state.first_seq, info.state.last_seq
    gone = [first, first + 1, first + 2, last - 1, last]
    for seq in gone:
        await js.delete_msg(stream, seq)
    return f"deleted messages {gone} of {stream}"


async def main():
    command, port, stream = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    nc = await nats.connect(f"nats://127.0.0.1:{port}")
    js = nc.jetstream()
    if command == "dump":
        result = await dump(js, stream, sys.argv[4], int(sys.argv[5]))
    elif command == "last":
        info = await js.stream_info(stream)
        result = {"last_seq": info.state.last_seq}
    elif command == "create":
        from nats.js.api import StreamConfig
        await js.add_stream(StreamConfig(name=stream, subjects=[sys.argv[4]], duplicate_window=0.1))
        result = {"created": stream}
    elif command == "damage":
        result = await damage(js, stream)
    else:
        sys.exit(f"unknown command {command}")
    await nc.close()
    print(json.dumps(result))


asyncio.run(main())
