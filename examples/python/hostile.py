"""Hostile and malformed requests from Python, each of which must get a clear gRPC code with
a pgsidecar ErrorInfo, never a crash, a hang or INTERNAL; the sidecar must serve normally
afterwards.

    python hostile.py 127.0.0.1:50051

Expects the sidecar to require a token (PGSIDECAR_TOKEN) and to run with its default limits.
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "gen"))

import grpc  # noqa: E402
from google.rpc import error_details_pb2  # noqa: E402
from grpc_status import rpc_status  # noqa: E402

from dataaccess.v1 import data_access_pb2 as pb  # noqa: E402
from dataaccess.v1 import data_access_pb2_grpc as pb_grpc  # noqa: E402

TOKEN = [("authorization", f"Bearer {os.environ['PGSIDECAR_TOKEN']}")]


def reason_of(err):
    status = rpc_status.from_call(err)
    for detail in status.details if status else []:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            assert info.domain == "pgsidecar", info
            return info.reason
    raise AssertionError(f"no ErrorInfo in {err}")


def expect(name, code, call):
    try:
        call()
    except grpc.RpcError as err:
        assert err.code() == code, f"{name}: got {err.code()} {err.details()}"
        reason = reason_of(err)
        print(f"{name}: {code.name} {reason}")
        return
    raise AssertionError(f"{name}: accepted")


def main():
    addr = sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:50051"
    big = 64 * 1024 * 1024
    options = [("grpc.max_send_message_length", big), ("grpc.max_receive_message_length", big)]
    with grpc.insecure_channel(addr, options=options) as channel:
        stub = pb_grpc.DataAccessStub(channel)
        q = lambda req, md=TOKEN, timeout=10: stub.Query(req, metadata=md, timeout=timeout)  # noqa: E731
        S = grpc.StatusCode

        expect("no token", S.UNAUTHENTICATED, lambda: q(pb.QueryRequest(sql="SELECT 1"), md=[]))
        expect("wrong token", S.UNAUTHENTICATED,
               lambda: q(pb.QueryRequest(sql="SELECT 1"), md=[("authorization", "Bearer nope")]))
        expect("empty sql", S.INVALID_ARGUMENT, lambda: q(pb.QueryRequest(sql="")))
        expect("sql over the limit", S.INVALID_ARGUMENT,
               lambda: q(pb.QueryRequest(sql="SELECT 1 -- " + "x" * (1 << 20))))
        expect("message over the limit", S.INVALID_ARGUMENT,
               lambda: q(pb.QueryRequest(sql="SELECT $1::bytea", params=[pb.Value(bytes_value=b"\0" * (5 << 20))])))
        expect("too many params", S.INVALID_ARGUMENT,
               lambda: q(pb.QueryRequest(sql="SELECT 1", params=[pb.Value(int_value=1)] * 70000)))
        expect("wrong param count", S.INVALID_ARGUMENT,
               lambda: q(pb.QueryRequest(sql="SELECT $1::int, $2::int", params=[pb.Value(int_value=1)])))
        expect("param of the wrong type", S.INVALID_ARGUMENT,
               lambda: q(pb.QueryRequest(sql="SELECT $1::int", params=[pb.Value(bytes_value=b"\xff")])))
        expect("int out of range", S.OUT_OF_RANGE,
               lambda: q(pb.QueryRequest(sql="SELECT $1::int2", params=[pb.Value(int_value=1 << 40)])))
        expect("unset value", S.INVALID_ARGUMENT,
               lambda: q(pb.QueryRequest(sql="SELECT $1::int", params=[pb.Value()])))
        expect("two statements", S.INVALID_ARGUMENT, lambda: q(pb.QueryRequest(sql="SELECT 1; SELECT 2")))
        expect("transaction control in Query", S.INVALID_ARGUMENT, lambda: q(pb.QueryRequest(sql="BEGIN")))
        expect("syntax error", S.INVALID_ARGUMENT, lambda: q(pb.QueryRequest(sql="SELEC 1")))
        expect("division by zero", S.INVALID_ARGUMENT, lambda: q(pb.QueryRequest(sql="SELECT 1/0")))
        expect("deadline", S.DEADLINE_EXCEEDED,
               lambda: q(pb.QueryRequest(sql="SELECT pg_sleep(5)"), timeout=0.5))
        expect("negative timeout field", S.INVALID_ARGUMENT,
               lambda: q(pb.QueryRequest(sql="SELECT 1", timeout={"seconds": -1})))

        expect("NUL in sql", S.INVALID_ARGUMENT, lambda: q(pb.QueryRequest(sql="SELECT 1\0")))
        expect("NUL in a text param", S.INVALID_ARGUMENT,
               lambda: q(pb.QueryRequest(sql="SELECT $1::text", params=[pb.Value(text_value="a\0")])))
        expect("COPY FROM STDIN", S.UNIMPLEMENTED, lambda: q(pb.QueryRequest(sql="COPY t FROM STDIN")))
        expect("COPY TO STDOUT", S.UNIMPLEMENTED,
               lambda: q(pb.QueryRequest(sql="COPY (SELECT 1) TO STDOUT")))
        # Bytes that are no QueryRequest at all (invalid UTF-8 in `sql`), sent as they are.
        raw = channel.unary_unary("/dataaccess.v1.DataAccess/Query", request_serializer=None,
                                  response_deserializer=pb.QueryResponse.FromString)
        expect("undecodable request", S.INVALID_ARGUMENT,
               lambda: raw(b"\x0a\x02\xff\xfe", metadata=TOKEN, timeout=10))

        # A transaction stream that starts with a statement instead of begin.
        def bad_stream():
            reqs = iter([pb.TransactionRequest(execute=pb.Statement(request_id="x", sql="SELECT 1"))])
            for _ in stub.Transaction(reqs, metadata=TOKEN, timeout=10):
                pass
        expect("transaction without begin", S.INVALID_ARGUMENT, bad_stream)

        # Still serving, and nothing above was INTERNAL.
        reply = q(pb.QueryRequest(sql="SELECT 1::int"))
        assert reply.rows[0].values[0].int_value == 1
    print("hostile requests: ok")


if __name__ == "__main__":
    main()
