#!/usr/bin/env python3
"""make_st_corpus.py - regenerates tests/loader/st_corpus: small safetensors
images, ok-* (must parse) and bad-* (must be rejected); fz-* files are
inputs the fuzzer found (minimized with -merge=1), kept as regressions and
not written by this script. They seed the
libFuzzer target (tests/fuzz/fuzz_safetensors.c) and are replayed by the
loader_st_parse test. Run: /usr/bin/python3 tests/loader/make_st_corpus.py"""
import json
import os
import struct

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "st_corpus")


def image(header, data, pad=True, hlen=None):
    h = header if isinstance(header, bytes) else json.dumps(header, separators=(",", ":")).encode()
    if pad:
        h += b" " * ((8 - len(h) % 8) % 8)
    return struct.pack("<Q", len(h) if hlen is None else hlen) + h + data


def t(dtype, shape, b, e):
    return {"dtype": dtype, "shape": shape, "data_offsets": [b, e]}


def main():
    os.makedirs(OUT, exist_ok=True)
    d32 = bytes(range(32))
    files = {
        "ok-mixed": image({"__metadata__": {"format": "pt"}, "a.weight": t("F32", [2, 2], 0, 16),
                           "b": t("BF16", [4], 16, 24), "c": t("F16", [2, 2], 24, 32)}, d32),
        "ok-empty": image({}, b""),
        "ok-unsupported-dtype": image({"ids": t("I64", [2], 0, 16), "s": t("BF16", [], 16, 18)}, d32[:18]),
        "ok-zero-size": image({"z": t("F32", [0, 7], 0, 0), "w": t("F16", [3], 0, 6)}, d32[:6]),
        "bad-truncated": image({"a": t("F32", [8], 0, 32)}, d32[:20]),
        "bad-hdrlen": image({"a": t("F32", [1], 0, 4)}, d32[:4], hlen=1 << 20),
        "bad-hdrlen-huge": image({"a": t("F32", [1], 0, 4)}, d32[:4], hlen=(1 << 64) - 1),
        "bad-json": image(b'{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]', d32[:4]),
        "bad-overlap": image({"a": t("F32", [4], 0, 16), "b": t("F32", [4], 8, 24), "c": t("F32", [2], 24, 32)}, d32),
        "bad-gap": image({"a": t("F32", [2], 0, 8), "b": t("F32", [2], 16, 24)}, d32[:24]),
        "bad-trailing": image({"a": t("F32", [2], 0, 8)}, d32[:12]),
        "bad-shape-bytes": image({"a": t("BF16", [4, 4], 0, 16)}, d32[:16]),
        "bad-dtype": image({"a": t("Q4_K", [4], 0, 16)}, d32[:16]),
        "bad-dup": image(b'{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},'
                         b'"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}', d32[:8]),
        "bad-dims": image({"a": t("F32", [1, 1, 1, 1, 1], 0, 4)}, d32[:4]),
        "bad-offsets-float": image({"a": t("F32", [1], 0.5, 4)}, d32[:4]),
        "bad-not-object": image(b"[1,2,3]", b""),
        "bad-short": b"\x05\x00\x00",
        "bad-nested-deep": image(b'{"a":' + b"[" * 3000 + b"]" * 3000 + b"}", b""),
    }
    for name, data in files.items():
        with open(os.path.join(OUT, name + ".safetensors"), "wb") as f:
            f.write(data)
    print(f"wrote {len(files)} files to {OUT}")


if __name__ == "__main__":
    main()
