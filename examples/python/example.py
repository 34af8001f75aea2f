"""pgsidecar from Python (grpcio): a Query, a pipelined transaction worker, error handling
that reads the SQLSTATE from the status details, and a health check.

    python example.py 127.0.0.1:50051 [table]

Exits non-zero if anything does not behave as documented, so CI can run it.
"""

import os
import sys
import threading
import queue

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "gen"))

import grpc  # noqa: E402
from google.rpc import error_details_pb2  # noqa: E402
from grpc_health.v1 import health_pb2, health_pb2_grpc  # noqa: E402
from grpc_status import rpc_status  # noqa: E402

from dataaccess.v1 import data_access_pb2 as pb  # noqa: E402
from dataaccess.v1 import data_access_pb2_grpc as pb_grpc  # noqa: E402


def metadata():
    """The bearer token, when the sidecar asks for one (PGSIDECAR_TOKEN)."""
    token = os.environ.get("PGSIDECAR_TOKEN")
    return [("authorization", f"Bearer {token}")] if token else []


def error_info(err: grpc.RpcError):
    """(gRPC code, ErrorInfo.reason, SQLSTATE) of a failed call."""
    status = rpc_status.from_call(err)
    for detail in status.details if status else []:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return err.code(), info.reason, info.metadata.get("sqlstate")
    return err.code(), None, None


def check_health(channel):
    stub = health_pb2_grpc.HealthStub(channel)
    for service in ("", "dataaccess.v1.DataAccess"):
        reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING, (service, reply)
    print("health: liveness and readiness SERVING")


def query(stub, table):
    stub.Query(pb.QueryRequest(sql=f"CREATE TABLE IF NOT EXISTS {table} (id int PRIMARY KEY, note text)"),
               timeout=5, metadata=metadata())
    reply = stub.Query(
        pb.QueryRequest(
            sql="SELECT $1::int + 1 AS answer, $2::text AS greeting",
            params=[pb.Value(int_value=41), pb.Value(text_value="hello")],
        ),
        timeout=5,  # the deadline travels to PostgreSQL: past it the statement is cancelled
        metadata=metadata(),
    )
    row = reply.rows[0].values
    assert [c.name for c in reply.columns] == ["answer", "greeting"], reply.columns
    assert row[0].int_value == 42 and row[1].text_value == "hello", row
    print(f"query: answer={row[0].int_value} greeting={row[1].text_value} ({reply.command_tag})")


def transaction_worker(stub, table):
    """Pipelines a whole transaction: every statement is sent before any answer is read."""
    requests = queue.Queue()

    def outgoing():
        while True:
            item = requests.get()
            if item is None:
                return
            yield item

    responses = stub.Transaction(outgoing(), timeout=10, metadata=metadata())
    requests.put(pb.TransactionRequest(begin=pb.BeginTransaction(priority=pb.PRIORITY_CRITICAL)))
    for i in range(1, 4):
        requests.put(pb.TransactionRequest(execute=pb.Statement(
            request_id=f"insert-{i}",
            sql=f"INSERT INTO {table} (id, note) VALUES ($1, $2) ON CONFLICT (id) DO UPDATE SET note = $2",
            params=[pb.Value(int_value=i), pb.Value(text_value=f"row {i}")],
        )))
    requests.put(pb.TransactionRequest(commit=pb.CommitTransaction()))
    requests.put(None)  # half-close: nothing more to send

    seen = []
    for event in responses:
        kind = event.WhichOneof("event")
        if kind == "result":
            assert event.result.WhichOneof("outcome") == "response", event.result
            seen.append(event.result.request_id)
        elif kind == "committed":
            print(f"transaction: {len(seen)} statements pipelined, committed {event.committed.transaction_id}")
        elif kind == "rolled_back":
            raise AssertionError(f"rolled back: {event.rolled_back}")
    assert seen == ["insert-1", "insert-2", "insert-3"], seen


def errors(stub):
    """A PostgreSQL error arrives as a gRPC code plus ErrorInfo with the SQLSTATE."""
    try:
        stub.Query(pb.QueryRequest(sql="SELECT * FROM no_such_table_here"), timeout=5, metadata=metadata())
    except grpc.RpcError as err:
        code, reason, sqlstate = error_info(err)
        assert code == grpc.StatusCode.NOT_FOUND, code
        assert (reason, sqlstate) == ("UNDEFINED_TABLE", "42P01"), (reason, sqlstate)
        print(f"error: {code.name} {reason} sqlstate={sqlstate}")
    else:
        raise AssertionError("the query should have failed")


def main():
    addr = sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:50051"
    table = sys.argv[2] if len(sys.argv) > 2 else "pgsidecar_example_py"
    with grpc.insecure_channel(addr) as channel:
        check_health(channel)
        stub = pb_grpc.DataAccessStub(channel)
        query(stub, table)
        transaction_worker(stub, table)
        errors(stub)
        reply = stub.Query(pb.QueryRequest(sql=f"SELECT count(*)::int FROM {table}"), timeout=5, metadata=metadata())
        assert reply.rows[0].values[0].int_value == 3, reply
    print("python example: ok")


if __name__ == "__main__":
    main()
