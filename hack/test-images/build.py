#!/usr/bin/env python3
"""Build Coracle's deterministic OCI test images.

Usage: build.py OUTDIR

Writes one OCI image layout per repository (OUTDIR/<repo>/{oci-layout,
index.json,blobs/sha256/...}), OUTDIR/images.json (what the e2e tests read)
and OUTDIR/build-info.json (the tool versions the bytes depend on).

Determinism rule: the output is a pure function of the busybox-static
binary, this script, the zlib deflate implementation and (for busybox-zstd
only) the zstd CLI version. That is why the tar and gzip framing are written
by hand below instead of via tarfile/gzip: their headers have changed between
Python releases, ours cannot.

Only the Python 3.11 standard library is used; inputs come from the Debian
packages busybox-static and (optional) zstd.
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import zlib

# --- fixed inputs: changing any of these changes every digest -----------------

# SOURCE_DATE_EPOCH-style constant used for every tar mtime (2024-01-01T00:00:00Z).
FIXED_MTIME = 1704067200
FIXED_CREATED = "2024-01-01T00:00:00Z"
GZIP_LEVEL = 9
ZSTD_LEVEL = 9
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
REF_NAME_ANNOTATION = "org.opencontainers.image.ref.name"
GENERATOR = "coracle hack/test-images/build.py"

# --- media types --------------------------------------------------------------

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"


class BuildError(Exception):
    """A failure with a message that names the image or file involved."""


# --- canonical encodings ------------------------------------------------------


def canonical_json(value):
    """JSON bytes that only depend on the value (sorted keys, no whitespace)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def sha256_digest(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


# --- tar writer (ustar, hand-rolled so the bytes never depend on Python's tarfile) ---


def file_entry(path, data, mode=0o644, uid=0, gid=0):
    return {"path": path, "type": "file", "data": data, "mode": mode, "uid": uid, "gid": gid}


def dir_entry(path, mode=0o755, uid=0, gid=0):
    return {"path": path, "type": "dir", "mode": mode, "uid": uid, "gid": gid}


def symlink_entry(path, target):
    return {"path": path, "type": "symlink", "target": target, "mode": 0o777, "uid": 0, "gid": 0}


def octal_field(value, width):
    """Zero-padded octal number followed by NUL, the classic ustar encoding."""
    text = "%0*o" % (width - 1, value)
    if len(text) != width - 1:
        raise BuildError("tar: value %d does not fit a %d-byte ustar field" % (value, width))
    return text.encode("ascii") + b"\0"


def split_ustar_name(name):
    """Split a member name into (prefix, name) as ustar requires; no PAX fallback on purpose."""
    raw = name.encode("utf-8")
    if len(raw) <= 100:
        return b"", raw
    cut = raw.rfind(b"/", 0, 156)
    while cut > 0 and len(raw) - cut - 1 > 100:
        cut = raw.rfind(b"/", 0, cut)
    if cut <= 0 or len(raw) - cut - 1 > 100 or cut > 155:
        raise BuildError("tar: path too long for ustar: %s" % name)
    return raw[:cut], raw[cut + 1:]


def tar_header(entry):
    """One 512-byte ustar header; uname/gname are empty so only uid/gid count."""
    kind = entry["type"]
    member_name = entry["path"] + ("/" if kind == "dir" else "")
    prefix, name = split_ustar_name(member_name)
    typeflag = {"file": b"0", "symlink": b"2", "dir": b"5"}[kind]
    size = len(entry["data"]) if kind == "file" else 0
    linkname = entry.get("target", "").encode("utf-8")
    if len(linkname) > 100:
        raise BuildError("tar: symlink target too long: %s -> %s" % (entry["path"], entry["target"]))
    header = b"".join([
        name.ljust(100, b"\0"),
        octal_field(entry["mode"], 8),
        octal_field(entry["uid"], 8),
        octal_field(entry["gid"], 8),
        octal_field(size, 12),
        octal_field(FIXED_MTIME, 12),
        b" " * 8,  # checksum placeholder, spaces as the spec requires while summing
        typeflag,
        linkname.ljust(100, b"\0"),
        b"ustar\x0000",
        b"\0" * 32,  # uname
        b"\0" * 32,  # gname
        octal_field(0, 8),  # devmajor
        octal_field(0, 8),  # devminor
        prefix.ljust(155, b"\0"),
    ]).ljust(512, b"\0")
    checksum = b"%06o\0 " % sum(header)
    return header[:148] + checksum + header[156:]


def entry_sort_key(entry):
    """Parents before children; inside one directory whiteouts come first (image-spec SHOULD)."""
    return tuple((0 if part.startswith(".wh.") else 1, part) for part in entry["path"].split("/"))


def add_missing_parent_dirs(entries):
    """Every member's parent directory gets its own entry so extraction never invents modes."""
    present = {e["path"] for e in entries}
    extra = []
    for entry in entries:
        parts = entry["path"].split("/")[:-1]
        for depth in range(1, len(parts) + 1):
            parent = "/".join(parts[:depth])
            if parent not in present:
                present.add(parent)
                extra.append(dir_entry(parent))
    return entries + extra


def build_tar(entries, what):
    """Uncompressed layer tar: sorted members, fixed mtime, two zero blocks, 10 KiB records."""
    paths = [e["path"] for e in entries]
    duplicates = sorted({p for p in paths if paths.count(p) > 1})
    if duplicates:
        raise BuildError("%s: duplicate tar members %s" % (what, duplicates))
    chunks = []
    for entry in sorted(add_missing_parent_dirs(entries), key=entry_sort_key):
        chunks.append(tar_header(entry))
        if entry["type"] == "file":
            data = entry["data"]
            chunks.append(data + b"\0" * (-len(data) % 512))
    chunks.append(b"\0" * 1024)
    body = b"".join(chunks)
    return body + b"\0" * (-len(body) % 10240)


# --- compression ----------------------------------------------------------------


def gzip_bytes(data):
    """RFC 1952 member with mtime 0, no name, XFL 0, OS 255: only zlib's deflate can vary."""
    compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, -zlib.MAX_WBITS, 9, zlib.Z_DEFAULT_STRATEGY)
    deflated = compressor.compress(data) + compressor.flush()
    header = b"\x1f\x8b\x08\x00" + b"\0\0\0\0" + b"\x00\xff"
    trailer = (zlib.crc32(data) & 0xFFFFFFFF).to_bytes(4, "little") + (len(data) & 0xFFFFFFFF).to_bytes(4, "little")
    return header + deflated + trailer


def zstd_command():
    """Fixed level, --single-thread (true single-thread mode, unlike -T1), default checksum."""
    return ["zstd", "-q", "-%d" % ZSTD_LEVEL, "--single-thread", "--no-progress", "-c"]


def zstd_bytes(data):
    result = subprocess.run(zstd_command(), input=data, capture_output=True, check=False)
    if result.returncode != 0:
        raise BuildError("zstd failed (%d): %s" % (result.returncode, result.stderr.decode(errors="replace")))
    roundtrip = subprocess.run(["zstd", "-q", "-d", "-c"], input=result.stdout, capture_output=True, check=False)
    if roundtrip.returncode != 0 or roundtrip.stdout != data:
        raise BuildError("zstd round trip did not reproduce the layer tar")
    return result.stdout


def zstd_available():
    return shutil.which("zstd") is not None


# --- layers -------------------------------------------------------------------


def make_layer(tar, compression, what):
    """A layer record: blob bytes plus the diff_id (digest of the uncompressed tar)."""
    if compression == "gzip":
        blob = gzip_bytes(tar)
        if zlib.decompress(blob, 16 + zlib.MAX_WBITS) != tar:
            raise BuildError("%s: gzip round trip failed" % what)
    elif compression == "zstd":
        blob = zstd_bytes(tar)
    elif compression == "none":
        blob = tar
    else:
        raise BuildError("%s: unknown compression %r" % (what, compression))
    return {"blob": blob, "diff_id": sha256_digest(tar), "compression": compression, "what": what}


LAYER_MEDIA_TYPES = {
    ("oci", "gzip"): OCI_LAYER_GZIP,
    ("oci", "none"): OCI_LAYER_TAR,
    ("oci", "zstd"): OCI_LAYER_ZSTD,
    ("docker", "gzip"): DOCKER_LAYER_GZIP,
}


# --- busybox rootfs -------------------------------------------------------------


def find_busybox():
    """The static busybox shipped by Debian's busybox-static (not some other busybox on PATH)."""
    try:
        listing = subprocess.run(["dpkg", "-L", "busybox-static"], capture_output=True, text=True, check=True).stdout
        candidates = [line for line in listing.splitlines() if line.endswith("/bin/busybox")]
    except (OSError, subprocess.CalledProcessError):
        candidates = []
    for candidate in candidates + ["/bin/busybox"]:
        if os.path.isfile(candidate):
            return candidate
    raise BuildError("busybox-static not found: apt-get install busybox-static")


def busybox_applet_paths(busybox):
    """Install paths (relative to /) of every applet, from the binary itself."""
    output = subprocess.run([busybox, "--list-full"], capture_output=True, text=True, check=True).stdout
    paths = sorted({line.strip().strip("/") for line in output.splitlines() if line.strip()})
    return [p for p in paths if p != "bin/busybox"]


def passwd_text(extra_lines=()):
    lines = ["root:x:0:0:root:/root:/bin/sh", "nobody:x:65534:65534:nobody:/nonexistent:/bin/false"]
    return ("\n".join(lines + list(extra_lines)) + "\n").encode()


def group_text(extra_lines=()):
    lines = ["root:x:0:", "nogroup:x:65534:"]
    return ("\n".join(lines + list(extra_lines)) + "\n").encode()


def busybox_rootfs_entries(busybox_binary, applets):
    entries = [
        dir_entry("bin"), dir_entry("dev"), dir_entry("etc"), dir_entry("proc", 0o555),
        dir_entry("root", 0o700), dir_entry("run"), dir_entry("sbin"), dir_entry("sys", 0o555),
        dir_entry("tmp", 0o1777), dir_entry("usr"), dir_entry("usr/bin"), dir_entry("usr/sbin"),
        dir_entry("var"),
        file_entry("bin/busybox", busybox_binary, 0o755),
        file_entry("etc/passwd", passwd_text()),
        file_entry("etc/group", group_text()),
    ]
    entries += [symlink_entry(path, "/bin/busybox") for path in applets]
    return entries


# --- image assembly -----------------------------------------------------------------


def platform_string(platform):
    parts = [platform["os"], platform["architecture"]] + ([platform["variant"]] if platform.get("variant") else [])
    return "/".join(parts)


def image_config(platform, layers, settings):
    """Valid OCI (and Docker) image config; created/history are fixed so digests are stable."""
    config = {
        "architecture": platform["architecture"],
        "os": platform["os"],
        "created": FIXED_CREATED,
        "config": settings,
        "rootfs": {"type": "layers", "diff_ids": [layer["diff_id"] for layer in layers]},
        "history": [
            {"created": FIXED_CREATED, "created_by": "%s: %s" % (GENERATOR, layer["what"])} for layer in layers
        ],
    }
    if platform.get("variant"):
        config["variant"] = platform["variant"]
    return config


def default_settings(**overrides):
    """Env PATH + Cmd [sh]; an override of None removes the key (e.g. no Cmd)."""
    settings = {"Env": ["PATH=" + DEFAULT_PATH], "Cmd": ["sh"]}
    settings.update(overrides)
    return {key: value for key, value in settings.items() if value is not None}


class Layout:
    """One OCI image layout directory; blobs are written once and described on the way."""

    def __init__(self, root):
        self.root = root
        self.tags = {}
        os.makedirs(os.path.join(root, "blobs", "sha256"))

    def put_blob(self, data, media_type):
        digest = sha256_digest(data)
        path = os.path.join(self.root, "blobs", "sha256", digest.split(":", 1)[1])
        if not os.path.exists(path):
            with open(path, "wb") as handle:
                handle.write(data)
        return {"mediaType": media_type, "digest": digest, "size": len(data)}

    def put_image(self, platform, layers, settings, flavour="oci"):
        """Write config, layers and manifest; return the manifest descriptor."""
        config_type = DOCKER_CONFIG if flavour == "docker" else OCI_CONFIG
        manifest_type = DOCKER_MANIFEST if flavour == "docker" else OCI_MANIFEST
        config = self.put_blob(canonical_json(image_config(platform, layers, settings)), config_type)
        layer_descs = []
        for layer in layers:
            media_type = LAYER_MEDIA_TYPES.get((flavour, layer["compression"]))
            if media_type is None:
                raise BuildError("%s: no %s media type for %s layers" % (self.root, flavour, layer["compression"]))
            layer_descs.append(self.put_blob(layer["blob"], media_type))
        manifest = {"schemaVersion": 2, "mediaType": manifest_type, "config": config, "layers": layer_descs}
        descriptor = self.put_blob(canonical_json(manifest), manifest_type)
        descriptor["platform"] = dict(platform)
        return descriptor

    def put_index(self, children):
        index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": children}
        descriptor = self.put_blob(canonical_json(index), OCI_INDEX)
        descriptor["children"] = children  # not serialized; feeds images.json
        return descriptor

    def tag(self, tag, descriptor):
        self.tags[tag] = descriptor

    def finish(self):
        """oci-layout + index.json; tags carry ref.name so `skopeo copy oci:DIR:TAG` works."""
        with open(os.path.join(self.root, "oci-layout"), "wb") as handle:
            handle.write(canonical_json({"imageLayoutVersion": "1.0.0"}))
        manifests = []
        for tag in sorted(self.tags):
            desc = self.tags[tag]
            manifests.append({
                "mediaType": desc["mediaType"], "digest": desc["digest"], "size": desc["size"],
                "annotations": {REF_NAME_ANNOTATION: tag},
            })
        index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}
        with open(os.path.join(self.root, "index.json"), "wb") as handle:
            handle.write(canonical_json(index))


# --- the image catalogue -------------------------------------------------------------

AMD64 = {"architecture": "amd64", "os": "linux"}
ARM64 = {"architecture": "arm64", "os": "linux"}
ARMV7 = {"architecture": "arm", "os": "linux", "variant": "v7"}

ENTRYPOINT_SCRIPT = "echo entry $0 $@; echo ENV=$GREETING; pwd"
HTTPD_BODY = b"coracle-httpd-ok\n"
# busybox --list-full installs httpd as /usr/sbin/httpd (there is no /bin/httpd).


def build_layers(busybox_binary, applets, with_zstd):
    """Every layer used by the catalogue, built once and shared between images."""
    rootfs_tar = build_tar(busybox_rootfs_entries(busybox_binary, applets), "busybox rootfs")
    layers = {
        "rootfs": make_layer(rootfs_tar, "gzip", "busybox rootfs"),
        "rootfs-tar": make_layer(rootfs_tar, "none", "busybox rootfs"),
        "user": make_layer(build_tar([
            file_entry("etc/passwd", passwd_text(["coracle:x:1234:5678:coracle:/home/coracle:/bin/sh"])),
            file_entry("etc/group", group_text(["coracle:x:5678:", "extra:x:4321:coracle"])),
            dir_entry("etc"), dir_entry("home"),
            dir_entry("home/coracle", 0o755, uid=1234, gid=5678),
        ], "user layer"), "gzip", "user coracle 1234:5678 (+extra 4321)"),
        "entrypoint": make_layer(build_tar([dir_entry("work")], "entrypoint layer"), "gzip", "workdir /work"),
        "httpd": make_layer(build_tar([dir_entry("www"), file_entry("www/index.html", HTTPD_BODY)], "httpd layer"),
                            "gzip", "/www/index.html"),
    }
    for name, platform in (("amd64", AMD64), ("arm64", ARM64), ("armv7", ARMV7)):
        text = (platform_string(platform) + "\n").encode()
        layers["platform-" + name] = make_layer(
            build_tar([file_entry("platform", text)], "platform layer " + name), "gzip", "/platform " + name)
    layers.update(whiteout_layers(busybox_binary, applets))
    if with_zstd:
        layers["rootfs-zstd"] = make_layer(rootfs_tar, "zstd", "busybox rootfs")
    return layers


def whiteout_layers(busybox_binary, applets):
    """Layer 1 = busybox rootfs + test files (three layers in total, as the tests expect)."""
    layer1 = busybox_rootfs_entries(busybox_binary, applets) + [
        dir_entry("data"), file_entry("data/keep.txt", b"keep\n"), file_entry("data/deleted.txt", b"deleted\n"),
        dir_entry("opq"), file_entry("opq/old1", b"old1\n"), dir_entry("opq/sub"), file_entry("opq/sub/old2", b"old2\n"),
    ]
    layer2 = [
        dir_entry("data"), file_entry("data/.wh.deleted.txt", b""),
        dir_entry("opq"), file_entry("opq/.wh..wh..opq", b""), file_entry("opq/new", b"new\n"),
    ]
    layer3 = [dir_entry("data"), file_entry("data/added.txt", b"added\n")]
    return {
        "whiteout-1": make_layer(build_tar(layer1, "whiteout layer 1"), "gzip", "rootfs + /data, /opq"),
        "whiteout-2": make_layer(build_tar(layer2, "whiteout layer 2"), "gzip", "whiteout + opaque dir"),
        "whiteout-3": make_layer(build_tar(layer3, "whiteout layer 3"), "gzip", "/data/added.txt"),
    }


def catalogue(layers):
    """(repo, tags, description, builder) for every image; builder(layout) returns the top descriptor."""
    base = layers["rootfs"]
    images = [
        ("busybox", ["latest", "1.35"], "busybox-static rootfs, one gzip layer, Cmd [sh]",
         lambda lay: lay.put_image(AMD64, [base], default_settings())),
        ("multiarch", ["latest"], "OCI index: linux/amd64 (busybox + /platform), linux/arm64, linux/arm/v7",
         lambda lay: lay.put_index([
             lay.put_image(AMD64, [base, layers["platform-amd64"]], default_settings()),
             lay.put_image(ARM64, [layers["platform-arm64"]], default_settings(Cmd=None)),
             lay.put_image(ARMV7, [layers["platform-armv7"]], default_settings(Cmd=None)),
         ])),
        ("user", ["latest"], "User coracle uid 1234 gid 5678, supplementary group extra 4321, home /home/coracle",
         lambda lay: lay.put_image(AMD64, [base, layers["user"]], default_settings(User="coracle"))),
        ("entrypoint", ["latest"], "Entrypoint sh -c script + Cmd [from-cmd], GREETING=hello, WorkingDir /work, "
         "StopSignal SIGUSR1, label org.coracle.test=entrypoint",
         lambda lay: lay.put_image(AMD64, [base, layers["entrypoint"]], default_settings(
             Entrypoint=["/bin/sh", "-c", ENTRYPOINT_SCRIPT], Cmd=["from-cmd"],
             Env=["PATH=" + DEFAULT_PATH, "GREETING=hello"], WorkingDir="/work", StopSignal="SIGUSR1",
             Labels={"org.coracle.test": "entrypoint"}))),
        ("whiteout", ["latest"], "3 gzip layers: whiteout /data/deleted.txt, opaque /opq; visible /data/keep.txt, "
         "/data/added.txt, /opq/new",
         lambda lay: lay.put_image(AMD64, [layers["whiteout-1"], layers["whiteout-2"], layers["whiteout-3"]],
                                   default_settings())),
        ("httpd", ["latest"], "busybox httpd on port 80 serving /www/index.html = coracle-httpd-ok",
         lambda lay: lay.put_image(AMD64, [base, layers["httpd"]], default_settings(
             Entrypoint=["/usr/sbin/httpd", "-f", "-p", "80", "-h", "/www"], Cmd=None, ExposedPorts={"80/tcp": {}}))),
        ("busybox-docker", ["latest"], "busybox with Docker schema2 media types",
         lambda lay: lay.put_image(AMD64, [base], default_settings(), flavour="docker")),
        ("busybox-uncompressed", ["latest"], "busybox with an uncompressed tar layer",
         lambda lay: lay.put_image(AMD64, [layers["rootfs-tar"]], default_settings())),
    ]
    if "rootfs-zstd" in layers:
        images.append(("busybox-zstd", ["latest"], "busybox with a zstd layer",
                       lambda lay: lay.put_image(AMD64, [layers["rootfs-zstd"]], default_settings())))
    return images


def summary_rows(repo, tags, description, top):
    """images.json rows; an index row also lists its per-platform children."""
    if top["mediaType"] == OCI_INDEX:
        children = top["children"]
        platforms = [platform_string(c["platform"]) for c in children]
        extra = {"manifests": [{"platform": platform_string(c["platform"]), "digest": c["digest"],
                                "mediaType": c["mediaType"]} for c in children]}
    else:
        platforms = [platform_string(top["platform"])]
        extra = {}
    rows = []
    for tag in tags:
        row = {"repo": repo, "tag": tag, "digest": top["digest"], "mediaType": top["mediaType"], "size": top["size"],
               "platforms": platforms, "description": description, "layout": repo}
        row.update(extra)
        rows.append(row)
    return rows


def build_one(outdir, repo, tags, description, builder):
    root = os.path.join(outdir, repo)
    if os.path.exists(root):
        if not os.path.exists(os.path.join(root, "oci-layout")):
            raise BuildError("%s exists and is not an OCI layout; refusing to overwrite it" % root)
        shutil.rmtree(root)  # rebuild from scratch so no stale blobs survive
    layout = Layout(root)
    top = builder(layout)
    for tag in tags:
        layout.tag(tag, top)
    layout.finish()
    return summary_rows(repo, tags, description, top)


def tool_versions(busybox, with_zstd):
    """Recorded so a digest mismatch on another machine can be traced to its input."""
    def first_line(cmd):
        try:
            return subprocess.run(cmd, capture_output=True, text=True, check=False).stdout.splitlines()[0].strip()
        except (OSError, IndexError):
            return "unknown"
    return {
        "busybox-static": first_line(["dpkg-query", "-W", "-f", "${Version}\n", "busybox-static"]),
        "busybox_sha256": hashlib.sha256(open(busybox, "rb").read()).hexdigest(),
        "zlib": zlib.ZLIB_RUNTIME_VERSION,
        "zstd": first_line(["zstd", "--version"]) if with_zstd else None,
        "zstd_command": zstd_command() if with_zstd else None,
    }


def main(argv):
    if len(argv) != 2:
        print("usage: build.py OUTDIR", file=sys.stderr)
        return 2
    outdir = os.path.abspath(argv[1])
    os.makedirs(outdir, exist_ok=True)
    busybox = find_busybox()
    with_zstd = zstd_available()
    if not with_zstd:
        print("build.py: zstd CLI not found, skipping busybox-zstd (apt-get install zstd)", file=sys.stderr)
    with open(busybox, "rb") as handle:
        busybox_binary = handle.read()
    layers = build_layers(busybox_binary, busybox_applet_paths(busybox), with_zstd)
    rows = []
    for repo, tags, description, builder in catalogue(layers):
        try:
            rows += build_one(outdir, repo, tags, description, builder)
        except BuildError as err:
            raise BuildError("image %s: %s" % (repo, err)) from err
    rows.sort(key=lambda row: (row["repo"], row["tag"]))
    with open(os.path.join(outdir, "images.json"), "wb") as handle:
        handle.write(json.dumps(rows, sort_keys=True, indent=2).encode() + b"\n")
    with open(os.path.join(outdir, "build-info.json"), "wb") as handle:
        handle.write(json.dumps(tool_versions(busybox, with_zstd), sort_keys=True, indent=2).encode() + b"\n")
    for row in rows:
        print("%-28s %s" % ("%s:%s" % (row["repo"], row["tag"]), row["digest"]))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv))
    except (BuildError, OSError, subprocess.CalledProcessError) as err:
        print("build.py: error: %s" % err, file=sys.stderr)
        sys.exit(1)
