#!/usr/bin/python3
"""Interop: a client nobody here wrote (Python grpcio, stubs generated at test
time from proto/kvtier.proto) talks to a real kvtierd.

Checks Health, OpenSequence, PutBlocks (client stream, crc32c), FetchBlocks
(server stream, byte-identical), GetStats (counts agree) and one error status
(NOT_FOUND for an unknown sequence, with its code asserted).

usage: interop_grpcio.py --kvtierd PATH --proto PATH
Exit 0 pass, 1 fail, 77 skip (python3-grpcio / grpc_tools missing).
"""
import argparse
import os
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
import crc32c  # Debian python3-crc32c

BLOCK = 64 * 1024


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def gen_stubs(proto, out):
    os.makedirs(out, exist_ok=True)
    inc = os.path.dirname(os.path.abspath(proto))
    rc = protoc.main(["grpc_tools.protoc", f"-I{inc}", f"--python_out={out}",
                      f"--grpc_python_out={out}", os.path.abspath(proto)])
    if rc != 0:
        raise RuntimeError(f"grpc_tools.protoc failed ({rc}) on {proto}")
    sys.path.insert(0, out)
    import kvtier_pb2, kvtier_pb2_grpc  # noqa: E402
    return kvtier_pb2, kvtier_pb2_grpc


def check(cond, what):
    if not cond:
        raise AssertionError(what)
    print(f"ok   {what}")


def expect_code(fn, code, what):
    try:
        fn()
    except grpc.RpcError as e:
        check(e.code() == code, f"{what}: {e.code().name} ({e.details()})")
        return
    raise AssertionError(f"{what}: expected {code.name}, call succeeded")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kvtierd", required=True)
    ap.add_argument("--proto", required=True)
    a = ap.parse_args()

    tmp = tempfile.mkdtemp(prefix="kvtier-interop-")
    proc = None
    try:
        pb, rpc = gen_stubs(a.proto, os.path.join(tmp, "stubs"))
        port = free_port()
        addr = f"127.0.0.1:{port}"
        log = open(os.path.join(tmp, "kvtierd.log"), "w")
        proc = subprocess.Popen([a.kvtierd, "--listen", addr, "--data-dir",
                                 os.path.join(tmp, "data")], stdout=log, stderr=log)
        # Wait for the port before the first call: a gRPC channel that met a
        # refused connection backs off for seconds.
        deadline = time.time() + 20
        while time.time() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"kvtierd exited with {proc.returncode}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.02)
        ch = grpc.insecure_channel(addr)
        tier = rpc.TierStub(ch)
        admin = rpc.AdminStub(ch)

        h = None
        while time.time() < deadline:
            try:
                h = admin.Health(pb.HealthRequest(), timeout=1)
                break
            except grpc.RpcError:
                if proc.poll() is not None:
                    raise RuntimeError(f"kvtierd exited with {proc.returncode}")
                time.sleep(0.05)
        check(h is not None and h.status == "SERVING", f"Health: {h.status if h else None}")

        seq, layers, nblk = 4242, 2, 8
        r = tier.OpenSequence(pb.OpenSequenceRequest(
            tenant="interop", sequence_id=seq, layers=layers, kv_heads=8, head_dim=128,
            block_tokens=16, block_bytes=BLOCK), timeout=10)
        check(r.created, "OpenSequence created")

        payloads = {(l, b): os.urandom(BLOCK) for l in range(layers) for b in range(nblk)}

        def blocks():
            for (l, b), p in payloads.items():
                yield pb.Block(key=pb.BlockKey(tenant="interop", sequence_id=seq, layer=l, block=b),
                               payload=p, crc32c=crc32c.crc32c(p), token_count=16)
        put = tier.PutBlocks(blocks(), timeout=30)
        check(put.acked == len(payloads), f"PutBlocks acked {put.acked}/{len(payloads)}")

        req = pb.FetchRequest(tenant="interop", sequence_id=seq,
                              blocks=[pb.BlockRef(layer=l, block=b) for (l, b) in payloads])
        got = {}
        for blk in tier.FetchBlocks(req, timeout=30):
            k = (blk.key.layer, blk.key.block)
            if crc32c.crc32c(blk.payload) != blk.crc32c:
                raise AssertionError(f"fetched {k}: crc32c field does not match its payload")
            check(blk.tier in (pb.TIER_HOST, pb.TIER_SSD), f"fetched {k} from {pb.TierKind.Name(blk.tier)}") if not got else None
            got[k] = blk.payload
        check(got == payloads, f"FetchBlocks: {len(got)} blocks byte-identical")

        st = admin.GetStats(pb.GetStatsRequest(), timeout=10)
        stored = sum(t.blocks for t in st.tiers if t.tier in (pb.TIER_HOST, pb.TIER_SSD))
        check(stored == len(payloads), f"GetStats: {stored} blocks stored in HOST+SSD")
        check(st.sequences >= 1, f"GetStats: {st.sequences} sequence(s)")

        expect_code(lambda: list(tier.FetchBlocks(pb.FetchRequest(
            tenant="interop", sequence_id=999999, blocks=[pb.BlockRef(layer=0, block=0)]),
            timeout=10)), grpc.StatusCode.NOT_FOUND, "FetchBlocks unknown sequence")
        expect_code(lambda: admin.GetTierMap(pb.GetTierMapRequest(
            tenant="interop", sequence_id=999999), timeout=10),
            grpc.StatusCode.NOT_FOUND, "GetTierMap unknown sequence")
        ch.close()
        proc.send_signal(signal.SIGTERM)
        check(proc.wait(timeout=30) == 0, "kvtierd exits 0 on SIGTERM")
        proc = None
        print("PASS")
        return 0
    except Exception as e:  # report, then clean up
        print(f"FAIL: {type(e).__name__}: {e}")
        logp = os.path.join(tmp, "kvtierd.log")
        if os.path.exists(logp):
            print("---- kvtierd log ----\n" + open(logp).read())
        return 1
    finally:
        if proc is not None:
            proc.kill()
            proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
