"""The redis_streams conformance adapter's independent reader (redis-py).

dump PORT PATTERN   every stream whose key matches PATTERN: {key: [{"id", "fields"}]} in id order
damage PORT         deletes entries of remix:account and remix:item, adds a stray entry at a high id
"""
import json
import sys

import redis


def dump(r, pattern):
    out = {}
    for key in r.scan_iter(match=pattern, _type="stream"):
        entries = []
        last = "-"
        while True:
            chunk = r.xrange(key, min=last, max="+", count=5000)
            if last != "-":
                chunk = chunk[1:]
            if not chunk:
                break
            entries.extend({"id": i, "fields": f} for i, f in chunk)
            last = chunk[-1][0]
        out[key] = entries
    return out


def damage(r):
    done = []
    ids = [i for i, _ in r.xrange("remix:account", count=7)]
    r.xdel("remix:account", *ids)
    done.append(f"deleted {len(ids)} entries of remix:account")
    last = r.xrevrange("remix:item", count=3)
    r.xdel("remix:item", *[i for i, _ in last])
    done.append("deleted the last 3 entries of remix:item")
    fields = {"remix-op": "upsert", "remix-offset": "999999999", "remix-target": "sink", "remix-model": "item",
              "key": '{"id":"stray"}', "value": '{"id":"stray","title":"stray"}'}
    r.xadd("remix:item", fields, id="999999999-0")
    done.append("added a stray entry 999999999-0 to remix:item")
    return ", ".join(done)


def main():
    command, port = sys.argv[1], int(sys.argv[2])
    r = redis.Redis(host="127.0.0.1", port=port, decode_responses=True)
    if command == "dump":
        print(json.dumps(dump(r, sys.argv[3])))
    elif command == "damage":
        print(json.dumps(damage(r)))
    else:
        sys.exit(f"unknown command {command}")


main()
