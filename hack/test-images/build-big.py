#!/usr/bin/env python3
"""Build a ~100 MiB image of several layers for the pull benchmark (not for tests).

Usage: build-big.py OUTDIR [MIB] [LAYERS]

Writes an OCI layout OUTDIR/big and OUTDIR/images.json in build.py's format, so
push.py can push it. Layer contents are seeded pseudo-random bytes (incompressible,
like real binaries and already-compressed data); each layer holds a few files.
"""

import gzip
import hashlib
import io
import json
import os
import random
import sys
import tarfile

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
MTIME = 1704067200


def write_blob(layout, data):
    digest = hashlib.sha256(data).hexdigest()
    path = os.path.join(layout, "blobs", "sha256", digest)
    with open(path, "wb") as f:
        f.write(data)
    return "sha256:" + digest


def layer_tar(index, size, rng):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        directory = tarfile.TarInfo("data%d" % index)
        directory.type, directory.mode, directory.mtime = tarfile.DIRTYPE, 0o755, MTIME
        tar.addfile(directory)
        files = 4
        for n in range(files):
            content = rng.randbytes(size // files)
            info = tarfile.TarInfo("data%d/blob%d.bin" % (index, n))
            info.size, info.mode, info.mtime = len(content), 0o644, MTIME
            tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def main():
    outdir = sys.argv[1]
    total_mib = int(sys.argv[2]) if len(sys.argv) > 2 else 100
    layers = int(sys.argv[3]) if len(sys.argv) > 3 else 5
    layout = os.path.join(outdir, "big")
    os.makedirs(os.path.join(layout, "blobs", "sha256"), exist_ok=True)
    rng = random.Random(20261126)
    descriptors, diff_ids = [], []
    for index in range(layers):
        tar = layer_tar(index, total_mib * 1024 * 1024 // layers, rng)
        diff_ids.append("sha256:" + hashlib.sha256(tar).hexdigest())
        compressed = gzip.compress(tar, compresslevel=1, mtime=0)
        descriptors.append({"mediaType": OCI_LAYER_GZIP, "digest": write_blob(layout, compressed), "size": len(compressed)})
    config = json.dumps({
        "architecture": "amd64", "os": "linux", "created": "2024-01-01T00:00:00Z",
        "config": {"Env": ["PATH=/usr/bin:/bin"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }, sort_keys=True, separators=(",", ":")).encode()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": write_blob(layout, config), "size": len(config)},
        "layers": descriptors,
    }, sort_keys=True, separators=(",", ":")).encode()
    digest = write_blob(layout, manifest)
    index = {"schemaVersion": 2, "manifests": [{"mediaType": OCI_MANIFEST, "digest": digest, "size": len(manifest),
             "annotations": {"org.opencontainers.image.ref.name": "latest"}}]}
    with open(os.path.join(layout, "index.json"), "w") as f:
        json.dump(index, f)
    with open(os.path.join(layout, "oci-layout"), "w") as f:
        f.write('{"imageLayoutVersion":"1.0.0"}')
    size = sum(d["size"] for d in descriptors) + len(config) + len(manifest)
    with open(os.path.join(outdir, "images.json"), "w") as f:
        json.dump([{"repo": "big", "tag": "latest", "digest": digest, "mediaType": OCI_MANIFEST,
                    "size": size, "platforms": ["linux/amd64"], "description": "pull benchmark",
                    "layout": "big"}], f)
    print("big:latest %s, %d layers, %.1f MiB" % (digest, layers, size / 1048576))


if __name__ == "__main__":
    main()
