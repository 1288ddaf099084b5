#!/usr/bin/env python3
"""A vmmsim role process, seen by another gRPC implementation (python3-grpcio, on gRPC's C core).

1. grpc.health.v1.Health/Check for service "" (the server as a whole).
2. One Link stream (proto/vmmsim/v1/link.proto): a single Batch of ECHO envelopes, then the
   replies, matched by correlation id.

The Link messages come from the repository's proto files, handed over as a serialized
FileDescriptorSet (no protoc here). Debian's python3-grpcio ships no grpc_health module, so the two
health messages are described here from health.proto's definition.

Usage: link_client.py --target HOST:PORT --descriptors FILE [--token-file FILE] --echo ID:HEX [--echo ID:HEX ...]
Prints one JSON line of what the server answered; exits 1 with the reason on stderr if a call fails.
"""

import argparse
import hashlib
import hmac
import json
import sys
import threading

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

# The endpoint ids the hop record carries; the client is no process of a topology.
CLIENT_ID = 900
SERVER_ID = 901
DEADLINE_S = 20.0

F = descriptor_pb2.FieldDescriptorProto


def message_class(pool, full_name):
    desc = pool.FindMessageTypeByName(full_name)
    # protobuf >= 4.22 has GetMessageClass; Debian 12's 3.21 only the factory.
    if hasattr(message_factory, "GetMessageClass"):
        return message_factory.GetMessageClass(desc)
    return message_factory.MessageFactory(pool).GetPrototype(desc)


def health_pool():
    """grpc/health/v1/health.proto: HealthCheckRequest, HealthCheckResponse, Health.Check."""
    f = descriptor_pb2.FileDescriptorProto(name="grpc/health/v1/health.proto", package="grpc.health.v1", syntax="proto3")
    req = f.message_type.add(name="HealthCheckRequest")
    req.field.add(name="service", number=1, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
    res = f.message_type.add(name="HealthCheckResponse")
    status = res.enum_type.add(name="ServingStatus")
    for name, number in (("UNKNOWN", 0), ("SERVING", 1), ("NOT_SERVING", 2), ("SERVICE_UNKNOWN", 3)):
        status.value.add(name=name, number=number)
    res.field.add(name="status", number=1, type=F.TYPE_ENUM, type_name=".grpc.health.v1.HealthCheckResponse.ServingStatus", label=F.LABEL_OPTIONAL)
    svc = f.service.add(name="Health")
    svc.method.add(name="Check", input_type=".grpc.health.v1.HealthCheckRequest", output_type=".grpc.health.v1.HealthCheckResponse")
    pool = descriptor_pool.DescriptorPool()
    pool.Add(f)
    return pool


def method(pool, service, name):
    """The method's descriptor and its HTTP/2 path, /package.Service/Method."""
    s = pool.FindServiceByName(service)
    m = s.methods_by_name[name]
    return m, "/%s/%s" % (s.full_name, m.name)


def check_health(channel):
    pool = health_pool()
    m, path = method(pool, "grpc.health.v1.Health", "Check")
    Request = message_class(pool, m.input_type.full_name)
    Response = message_class(pool, m.output_type.full_name)
    call = channel.unary_unary(path, request_serializer=Request.SerializeToString, response_deserializer=Response.FromString)
    res = call(Request(service=""), timeout=DEADLINE_S)
    return Response.DESCRIPTOR.enum_types_by_name["ServingStatus"].values_by_number[res.status].name


def caller_metadata(name, token):
    """Who the client is, proved as vmmsim's auth.ts asks: HMAC-SHA256(token, "vmmsim-peer:" + name)."""
    md = [("x-vmmsim-peer", name)]
    if token:
        md.append(("x-vmmsim-auth", hmac.new(token.encode(), ("vmmsim-peer:" + name).encode(), hashlib.sha256).hexdigest()))
    return md


def echo(channel, descriptors, echoes, modeled_ns, metadata):
    pool = descriptor_pool.DescriptorPool()
    for f in descriptor_pb2.FileDescriptorSet.FromString(descriptors).file:
        pool.Add(f)
    m, path = method(pool, "vmmsim.v1.Link", "Open")
    if not (m.client_streaming and m.server_streaming):
        raise RuntimeError("%s is not a bidirectional stream in the descriptors" % path)
    Batch = message_class(pool, m.input_type.full_name)
    kinds = pool.FindEnumTypeByName("vmmsim.v1.Kind")
    batch = Batch()
    for i, (cid, payload) in enumerate(echoes):
        env = batch.envelopes.add(correlation_id=cid, op_id=i + 1, kind=kinds.values_by_name["ECHO"].number, payload=payload, modeled_ns=modeled_ns)
        hop = env.hops.add(to=SERVER_ID)
        setattr(hop, "from", CLIENT_ID)  # a Python keyword, so not as an argument

    # The request side stays open until every reply is in: the server ends the stream when the
    # client half-closes, and would drop replies not yet written.
    replied = threading.Event()

    def requests():
        yield batch
        replied.wait(DEADLINE_S)

    call = channel.stream_stream(path, request_serializer=Batch.SerializeToString, response_deserializer=Batch.FromString)
    responses = call(requests(), timeout=DEADLINE_S, metadata=metadata)
    replies = []
    batches = 0
    try:
        for b in responses:
            batches += 1
            replies.extend(b.envelopes)
            if len(replies) >= len(echoes):
                replied.set()
    finally:
        replied.set()
    return {
        "method": path,
        "batches": batches,
        "code": responses.code().name,
        "replies": [
            {
                "correlation_id": e.correlation_id,
                "op_id": e.op_id,
                "kind": kinds.values_by_number[e.kind].name,
                "reply": e.reply,
                "status": e.status,
                "payload": e.payload.hex(),
                "modeled_ns": e.modeled_ns,
                "hops": [{"from": getattr(h, "from"), "to": h.to, "sent_ns": h.sent_ns, "received_ns": h.received_ns} for h in e.hops],
            }
            for e in replies
        ],
    }


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--target", required=True)
    p.add_argument("--descriptors", required=True)
    p.add_argument("--echo", action="append", required=True, metavar="ID:HEX")
    p.add_argument("--modeled-ns", type=float, default=0.0)
    p.add_argument("--name", default="bench", help="the name the client proves (x-vmmsim-peer)")
    p.add_argument("--token-file", help="the run's token file; without it the name is sent unproved")
    a = p.parse_args()
    echoes = []
    for e in a.echo:
        cid, _, payload = e.partition(":")
        echoes.append((int(cid), bytes.fromhex(payload)))
    with open(a.descriptors, "rb") as f:
        descriptors = f.read()
    token = None
    if a.token_file:
        with open(a.token_file, encoding="utf-8") as f:
            token = f.read().strip()
    # No proxy on a loopback hop, as vmmsim's own channels.
    with grpc.insecure_channel(a.target, options=[("grpc.enable_http_proxy", 0)]) as channel:
        try:
            grpc.channel_ready_future(channel).result(timeout=DEADLINE_S)
            out = {"grpc": grpc.__version__, "health": check_health(channel), "link": echo(channel, descriptors, echoes, a.modeled_ns, caller_metadata(a.name, token))}
        except grpc.FutureTimeoutError:
            sys.stderr.write("link_client: %s: no connection within %g s\n" % (a.target, DEADLINE_S))
            return 1
        except grpc.RpcError as err:
            sys.stderr.write("link_client: %s: %s %s\n" % (a.target, err.code().name, err.details()))
            return 1
    sys.stdout.write(json.dumps(out) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
