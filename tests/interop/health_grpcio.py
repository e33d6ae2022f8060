#!/usr/bin/python3
"""Health interop: a client nobody here wrote (Python grpcio, stubs generated at
test time from proto/health.proto, the standard grpc.health.v1) checks the
health of real kvtier servers.

kvtierd (--kvtierd): Check "" == SERVING, its services SERVING, an unknown
name NOT_FOUND; a Watch of "" gets SERVING, then NOT_SERVING on SIGTERM, then
the stream ends; kvtierd exits 0.
kvtier-worker serve (--worker and --model, optional): Check "" and
kvtier.v1.Inference SERVING, kvtier.v1.Tier NOT_FOUND; exits 0 on SIGTERM.
--target ADDR[=NAME,NAME] (repeatable): Check "" and each NAME == SERVING on a
running server or load balancer (ops/cluster.sh, tests/cluster).

usage: health_grpcio.py --proto PATH [--kvtierd PATH] [--worker PATH --model DIR]
                        [--target ADDR[=NAMES]]...
Exit 0 pass, 1 fail, 77 skip (python3-grpcio / grpc_tools missing).
"""
import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

SKIP = 77

try:
    import grpc
    from grpc_tools import protoc
except ImportError as e:  # Debian python3-grpcio / python3-grpc-tools missing
    print(f"SKIP: {e}")
    sys.exit(SKIP)


def gen_stubs(proto, out):
    os.makedirs(out, exist_ok=True)
    inc = os.path.dirname(os.path.abspath(proto))
    rc = protoc.main(["grpc_tools.protoc", f"-I{inc}", f"--python_out={out}",
                      f"--grpc_python_out={out}", os.path.abspath(proto)])
    if rc != 0:
        raise RuntimeError(f"grpc_tools.protoc failed ({rc}) on {proto}")
    sys.path.insert(0, out)
    import health_pb2, health_pb2_grpc  # noqa: E402
    return health_pb2, health_pb2_grpc


def check(cond, what):
    if not cond:
        raise AssertionError(what)
    print(f"ok   {what}")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(proc, port, seconds, what):
    """Waits for the port before the first call: a gRPC channel that met a
    refused connection backs off for seconds."""
    deadline = time.time() + seconds
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"{what} not listening on port {port} after {seconds} s")


def status_name(pb, v):
    return pb.HealthCheckResponse.ServingStatus.Name(v)


def expect_serving(pb, stub, service, where):
    r = stub.Check(pb.HealthCheckRequest(service=service), timeout=5)
    check(r.status == pb.HealthCheckResponse.SERVING,
          f"{where}: Check {service!r}: {status_name(pb, r.status)}")


def expect_not_found(pb, stub, service, where):
    try:
        stub.Check(pb.HealthCheckRequest(service=service), timeout=5)
    except grpc.RpcError as e:
        check(e.code() == grpc.StatusCode.NOT_FOUND,
              f"{where}: Check {service!r}: {e.code().name} ({e.details()})")
        return
    raise AssertionError(f"{where}: Check {service!r}: expected NOT_FOUND, call succeeded")


def stop(proc, what):
    proc.send_signal(signal.SIGTERM)
    check(proc.wait(timeout=30) == 0, f"{what} exits 0 on SIGTERM")


def run_kvtierd(pb, rpc, binary, tmp):
    port = free_port()
    addr = f"127.0.0.1:{port}"
    log = open(os.path.join(tmp, "kvtierd.log"), "w")
    proc = subprocess.Popen([binary, "--listen", addr, "--data-dir", os.path.join(tmp, "data"),
                             "--auth-token", "s3cret"], stdout=log, stderr=log)
    try:
        wait_port(proc, port, 20, "kvtierd")
        ch = grpc.insecure_channel(addr)
        stub = rpc.HealthStub(ch)
        # no token sent: health answers anyway (kubelets send no metadata)
        expect_serving(pb, stub, "", "kvtierd")
        expect_serving(pb, stub, "kvtier.v1.Tier", "kvtierd")
        expect_serving(pb, stub, "kvtier.v1.Admin", "kvtierd")
        expect_not_found(pb, stub, "kvtier.v1.Inference", "kvtierd")
        watch = stub.Watch(pb.HealthCheckRequest(service=""), timeout=60)
        first = next(watch)
        check(first.status == pb.HealthCheckResponse.SERVING,
              f"kvtierd: Watch '': {status_name(pb, first.status)}")
        t0 = time.time()
        proc.send_signal(signal.SIGTERM)
        seen = []
        try:
            for m in watch:
                seen.append(status_name(pb, m.status))
        except grpc.RpcError as e:
            end = e.code().name
        else:
            end = "OK"
        check(seen == ["NOT_SERVING"] and end == "UNAVAILABLE",
              f"kvtierd: Watch '' after SIGTERM: {seen}, then {end} "
              f"({time.time() - t0:.2f} s)")
        ch.close()
        check(proc.wait(timeout=30) == 0, "kvtierd exits 0 on SIGTERM")
        proc = None
    finally:
        if proc is not None:
            proc.kill()
            proc.wait()


def run_worker(pb, rpc, binary, model, tmp):
    log = open(os.path.join(tmp, "worker.log"), "w")
    proc = subprocess.Popen([binary, "serve", "--model", model, "--listen", "127.0.0.1:0",
                             "--tier", "embedded", "--tier-data-dir", os.path.join(tmp, "wtier"),
                             "--print-port", "--threads", "1"],
                            stdout=subprocess.PIPE, stderr=log, text=True)
    try:
        line = proc.stdout.readline()
        m = re.match(r"listening on (\d+)", line)
        if not m:
            raise RuntimeError(f"kvtier-worker did not print its port (got {line!r}); "
                               f"see {log.name}")
        port = int(m.group(1))
        wait_port(proc, port, 60, "kvtier-worker")
        ch = grpc.insecure_channel(f"127.0.0.1:{port}")
        stub = rpc.HealthStub(ch)
        expect_serving(pb, stub, "", "worker")
        expect_serving(pb, stub, "kvtier.v1.Inference", "worker")
        expect_not_found(pb, stub, "kvtier.v1.Tier", "worker")
        ch.close()
        stop(proc, "kvtier-worker")
        proc = None
    finally:
        if proc is not None:
            proc.kill()
            proc.wait()


def run_target(pb, rpc, spec):
    addr, _, names = spec.partition("=")
    ch = grpc.insecure_channel(addr)
    stub = rpc.HealthStub(ch)
    # the first call may meet a backend still connecting: retry for a while
    deadline = time.time() + 20
    while True:
        try:
            stub.Check(pb.HealthCheckRequest(service=""), timeout=2)
            break
        except grpc.RpcError:
            if time.time() > deadline:
                raise
            time.sleep(0.2)
    for name in [""] + [n for n in names.split(",") if n]:
        expect_serving(pb, stub, name, addr)
    ch.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--proto", required=True, help="proto/health.proto")
    ap.add_argument("--kvtierd")
    ap.add_argument("--worker")
    ap.add_argument("--model")
    ap.add_argument("--target", action="append", default=[])
    a = ap.parse_args()
    if not (a.kvtierd or a.worker or a.target):
        ap.error("nothing to check: give --kvtierd, --worker or --target")
    if a.worker and not a.model:
        ap.error("--worker needs --model")

    tmp = tempfile.mkdtemp(prefix="kvtier-health-")
    try:
        pb, rpc = gen_stubs(a.proto, os.path.join(tmp, "stubs"))
        if a.kvtierd:
            run_kvtierd(pb, rpc, a.kvtierd, tmp)
        if a.worker:
            if os.path.isfile(os.path.join(a.model, "config.json")):
                run_worker(pb, rpc, a.worker, a.model, tmp)
            else:
                print(f"no model in {a.model}: worker health not checked")
        for spec in a.target:
            run_target(pb, rpc, spec)
        print("PASS")
        return 0
    except Exception as e:  # noqa: BLE001 - report any failure with its logs
        print(f"FAIL: {type(e).__name__}: {e}")
        for f in ("kvtierd.log", "worker.log"):
            p = os.path.join(tmp, f)
            if os.path.exists(p):
                print(f"== {f}")
                print(open(p).read()[-3000:])
        return 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
