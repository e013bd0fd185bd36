"""floe-gateway driven by Python `requests`, a client nobody in this project wrote.

Usage: python requests_client.py GATEWAY_URL OUT_DIR

Stores a blob (streamed, chunked transfer encoding), reads it back whole, streamed and in every
Range form, stores a quilt through `requests`' own multipart encoder and reads its files. Every
check raises on failure (exit status 1). On success it writes OUT_DIR/blob.bin (the bytes it
stored) and prints one JSON line: {"blob_id", "quilt_id", "files": {identifier: size}} so the
calling test can compare them with what `floe get` and `floe get-quilt` return.
"""

import json
import os
import random
import sys

import requests

TIMEOUT = 60


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def reason(r):
    """The reason of Walrus's error shape."""
    return r.json()["error"]["details"][0]["reason"]


def main():
    url, out_dir = sys.argv[1].rstrip("/"), sys.argv[2]
    s = requests.Session()

    status = s.get(f"{url}/status", timeout=TIMEOUT)
    check(status.status_code == 200, f"/status: {status.status_code}")
    api = s.get(f"{url}/v1/api", timeout=TIMEOUT).json()
    check("/v1/blobs/{blob_id}" in api["paths"], "OpenAPI lacks /v1/blobs/{blob_id}")

    rng = random.Random(24)
    data = bytes(rng.getrandbits(8) for _ in range(300_001))

    def chunks():
        # a generator body: requests sends it with Transfer-Encoding: chunked
        for i in range(0, len(data), 65_536):
            yield data[i : i + 65_536]

    put = s.put(f"{url}/v1/blobs", params={"epochs": 3}, data=chunks(), timeout=TIMEOUT)
    check(put.status_code == 200, f"PUT: {put.status_code} {put.text}")
    created = put.json()["newlyCreated"]["blobObject"]
    blob_id = created["blobId"]
    check(created["size"] == len(data), f"size {created['size']}")
    storage = created["storage"]
    check(storage["endEpoch"] == storage["startEpoch"] + 3, f"lifetime {storage}")

    again = s.put(f"{url}/v1/blobs", data=data, timeout=TIMEOUT)
    check(again.status_code == 200, f"second PUT: {again.status_code}")
    check(again.json()["alreadyCertified"]["blobId"] == blob_id, "second PUT: another ID")

    blob_url = f"{url}/v1/blobs/{blob_id}"
    got = s.get(blob_url, timeout=TIMEOUT)
    check(got.status_code == 200 and got.content == data, "GET: other bytes")
    check(got.headers["ETag"] == f'"{blob_id}"', f"ETag {got.headers.get('ETag')}")
    check(got.headers["Accept-Ranges"] == "bytes", "Accept-Ranges")
    check("immutable" in got.headers["Cache-Control"], "Cache-Control")
    check(got.headers["X-Content-Type-Options"] == "nosniff", "nosniff")

    with s.get(blob_url, stream=True, timeout=TIMEOUT) as streamed:
        body = b"".join(streamed.iter_content(chunk_size=10_000))
    check(body == data, "streamed GET: other bytes")

    head = s.head(blob_url, timeout=TIMEOUT)
    check(head.status_code == 200 and head.content == b"", "HEAD")
    check(int(head.headers["Content-Length"]) == len(data), "HEAD length")

    n = len(data)
    for rng_header, lo, hi in [
        ("bytes=0-0", 0, 1),
        ("bytes=1000-1999", 1000, 2000),
        ("bytes=299000-", 299_000, n),
        ("bytes=-77", n - 77, n),
    ]:
        r = s.get(blob_url, headers={"Range": rng_header}, timeout=TIMEOUT)
        check(r.status_code == 206, f"{rng_header}: {r.status_code}")
        check(r.content == data[lo:hi], f"{rng_header}: other bytes")
        want = f"bytes {lo}-{hi - 1}/{n}"
        check(r.headers["Content-Range"] == want, f"{rng_header}: {r.headers['Content-Range']}")
    r = s.get(blob_url, headers={"Range": f"bytes={n}-"}, timeout=TIMEOUT)
    check(r.status_code == 416, f"unsatisfiable range: {r.status_code}")
    r = s.get(f"{blob_url}/byte-range", params={"start": 7, "length": 9}, timeout=TIMEOUT)
    check(r.status_code == 206 and r.content == data[7:16], "byte-range")
    r = s.get(blob_url, headers={"If-None-Match": f'"{blob_id}"'}, timeout=TIMEOUT)
    check(r.status_code == 304 and r.content == b"", f"If-None-Match: {r.status_code}")

    r = s.get(f"{url}/v1/blobs/" + "AQ" * 21 + "A", timeout=TIMEOUT)
    check(r.status_code == 404 and reason(r) == "BLOB_NOT_FOUND", f"unknown: {r.status_code}")
    r = s.get(f"{url}/v1/blobs/not*an*id", timeout=TIMEOUT)
    check(r.status_code == 400 and reason(r) == "INVALID_BLOB_ID", f"malformed: {r.status_code}")

    # a quilt through requests' own multipart encoder; one tag from _metadata
    files = {
        "notes.txt": ("notes.txt", b"written by python requests\n", "text/plain"),
        "table.csv": ("table.csv", b"a,b\n1,2\n", "text/csv"),
        "noise.bin": ("noise.bin", bytes(rng.getrandbits(8) for _ in range(20_000)), None),
    }
    meta = json.dumps([{"identifier": "table.csv", "tags": {"rows": "1"}}])
    put = s.put(
        f"{url}/v1/quilts",
        files={**files, "_metadata": (None, meta)},
        timeout=TIMEOUT,
    )
    check(put.status_code == 200, f"PUT quilt: {put.status_code} {put.text}")
    stored = put.json()
    quilt_id = stored["blobStoreResult"]["newlyCreated"]["blobObject"]["blobId"]
    check(len(stored["storedQuiltBlobs"]) == 3, "quilt: patches")
    listed = s.get(f"{url}/v1/quilts/{quilt_id}/patches", timeout=TIMEOUT).json()
    tags = {p["identifier"]: p["tags"] for p in listed}
    check(tags["table.csv"] == {"rows": "1", "content-type": "text/csv"}, f"tags {tags}")
    for ident, (_, content, ctype) in files.items():
        r = s.get(f"{url}/v1/blobs/by-quilt-id/{quilt_id}/{ident}", timeout=TIMEOUT)
        check(r.status_code == 200 and r.content == content, f"quilt file {ident}")
        check(r.headers["Content-Type"] == (ctype or "application/octet-stream"), f"{ident} type")
        check(r.headers["X-Quilt-Patch-Identifier"] == ident, f"{ident} identifier header")

    with open(os.path.join(out_dir, "blob.bin"), "wb") as f:
        f.write(data)
    sizes = {ident: len(content) for ident, (_, content, _) in files.items()}
    print(json.dumps({"blob_id": blob_id, "quilt_id": quilt_id, "files": sizes}))


if __name__ == "__main__":
    main()
