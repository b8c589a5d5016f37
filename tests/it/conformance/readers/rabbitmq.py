"""The rabbitmq conformance adapter's independent reader (pika).

setup VHOST EXCHANGE QUEUE   a durable topic exchange and a durable queue bound to it with '#'
drain VHOST QUEUE            consumes (and acks) every message in the queue, in order:
                             [{"routing_key", "message_id", "delivery_mode", "headers", "body"}]
"""
import json
import sys

import pika


def connect(vhost):
    params = pika.ConnectionParameters(host="127.0.0.1", port=5672, virtual_host=vhost,
                                       credentials=pika.PlainCredentials("guest", "guest"))
    return pika.BlockingConnection(params)


def main():
    command, vhost = sys.argv[1], sys.argv[2]
    connection = connect(vhost)
    channel = connection.channel()
    if command == "setup":
        exchange, queue = sys.argv[3], sys.argv[4]
        channel.exchange_declare(exchange, exchange_type="topic", durable=True)
        channel.queue_declare(queue, durable=True)
        channel.queue_bind(queue, exchange, routing_key="#")
        result = {"queue": queue}
    elif command == "drain":
        queue = sys.argv[3]
        result = []
        while True:
            method, properties, body = channel.basic_get(queue, auto_ack=False)
            if method is None:
                break
            headers = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in (properties.headers or {}).items()}
            result.append({"routing_key": method.routing_key, "message_id": properties.message_id,
                           "delivery_mode": properties.delivery_mode, "headers": headers,
                           "body": body.decode()})
            channel.basic_ack(method.delivery_tag)
    else:
        sys.exit(f"unknown command {command}")
    connection.close()
    print(json.dumps(result))


main()
