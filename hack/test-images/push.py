#!/usr/bin/env python3
"""Push the images built by build.py to a plain-HTTP registry.

Usage: push.py OUTDIR HOST:PORT

Uses the distribution API directly (urllib only): HEAD each blob, else try a
cross-repository mount from a repository we already pushed it to, else a
monolithic upload (POST /blobs/uploads/ then PUT <location>?digest=).
Manifests go up children-first (index children by digest), then every tag.
Idempotent: existing blobs are skipped and re-putting a manifest is a no-op.
Finally each tag is resolved with HEAD and its Docker-Content-Digest compared
with images.json.
"""

import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)
# distribution 2.8 answers 404 for an OCI manifest/index unless the Accept
# header names its media type, so always send all of them.
ACCEPT_ALL = ", ".join([OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST])
TIMEOUT_S = 30


class PushError(Exception):
    """A failure whose message names the image, blob or URL involved."""


class NoRedirect(urllib.request.HTTPRedirectHandler):
    """Surface redirects as responses; a blob HEAD may redirect to storage we do not need."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


OPENER = urllib.request.build_opener(NoRedirect)


def request(method, url, data=None, headers=None):
    """(status, headers, body) for any HTTP status; raises PushError only on transport errors."""
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with OPENER.open(req, timeout=TIMEOUT_S) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers, err.read()
    except (urllib.error.URLError, OSError) as err:
        raise PushError("%s %s: %s" % (method, url, err)) from err


def explain(status, body):
    text = body.decode("utf-8", errors="replace").strip()
    return "HTTP %d %s" % (status, text[:500])


class Registry:
    def __init__(self, address):
        self.base = "http://%s" % address
        self.blob_homes = {}  # digest -> a repository already holding it (mount source)

    def url(self, path):
        return self.base + path

    def check_api(self):
        status, _, body = request("GET", self.url("/v2/"))
        if status != 200:
            raise PushError("GET %s/v2/: %s (is the registry running?)" % (self.base, explain(status, body)))

    def blob_exists(self, repo, digest):
        status, _, body = request("HEAD", self.url("/v2/%s/blobs/%s" % (repo, digest)))
        if status in (200, 307):
            return True
        if status == 404:
            return False
        raise PushError("HEAD blob %s in %s: %s" % (digest, repo, explain(status, body)))

    def upload_location(self, headers, what):
        location = headers.get("Location")
        if not location:
            raise PushError("%s: registry gave no Location header" % what)
        return urllib.parse.urljoin(self.base + "/", location)

    def start_upload(self, repo, digest):
        """POST an upload; a cross-repo mount may finish it at once. Returns None or the upload URL."""
        query = ""
        source = self.blob_homes.get(digest)
        if source and source != repo:
            query = "?" + urllib.parse.urlencode({"mount": digest, "from": source})
        status, headers, body = request("POST", self.url("/v2/%s/blobs/uploads/%s" % (repo, query)), data=b"")
        if status == 201:
            return None  # mounted, nothing to upload
        if status != 202:
            raise PushError("POST upload of %s to %s: %s" % (digest, repo, explain(status, body)))
        return self.upload_location(headers, "POST upload of %s to %s" % (digest, repo))

    def put_blob(self, repo, digest, data):
        location = self.start_upload(repo, digest)
        if location is not None:
            separator = "&" if "?" in location else "?"
            url = location + separator + urllib.parse.urlencode({"digest": digest})
            status, _, body = request("PUT", url, data=data, headers={
                "Content-Type": "application/octet-stream", "Content-Length": str(len(data))})
            if status != 201:
                raise PushError("PUT blob %s to %s: %s" % (digest, repo, explain(status, body)))
        self.blob_homes[digest] = repo

    def ensure_blob(self, repo, digest, data_loader):
        """Returns True when bytes (or a mount) had to be sent."""
        if self.blob_exists(repo, digest):
            self.blob_homes.setdefault(digest, repo)
            return False
        self.put_blob(repo, digest, data_loader())
        return True

    def put_manifest(self, repo, reference, media_type, data, expected_digest):
        url = self.url("/v2/%s/manifests/%s" % (repo, reference))
        status, headers, body = request("PUT", url, data=data, headers={"Content-Type": media_type})
        if status != 201:
            raise PushError("PUT manifest %s:%s (%s): %s" % (repo, reference, media_type, explain(status, body)))
        got = headers.get("Docker-Content-Digest")
        if got and got != expected_digest:
            raise PushError("PUT manifest %s:%s: registry computed %s, expected %s"
                            % (repo, reference, got, expected_digest))

    def resolve(self, repo, reference):
        url = self.url("/v2/%s/manifests/%s" % (repo, reference))
        status, headers, body = request("HEAD", url, headers={"Accept": ACCEPT_ALL})
        if status != 200:
            raise PushError("HEAD manifest %s:%s: %s" % (repo, reference, explain(status, body)))
        return headers.get("Docker-Content-Digest"), headers.get("Content-Type")


# --- reading the OCI layouts -----------------------------------------------------


def blob_path(outdir, layout, digest):
    algorithm, hexpart = digest.split(":", 1)
    return os.path.join(outdir, layout, "blobs", algorithm, hexpart)


def read_blob(outdir, layout, digest):
    path = blob_path(outdir, layout, digest)
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as err:
        raise PushError("cannot read blob %s of layout %s: %s" % (digest, layout, err)) from err


def manifest_tree(outdir, layout, digest, media_type):
    """Post-order list of (digest, media_type, bytes, blob digests): children before their index."""
    data = read_blob(outdir, layout, digest)
    document = json.loads(data)
    if media_type in INDEX_TYPES:
        nodes = []
        for child in document["manifests"]:
            nodes += manifest_tree(outdir, layout, child["digest"], child["mediaType"])
        return nodes + [(digest, media_type, data, [])]
    blobs = [document["config"]["digest"]] + [layer["digest"] for layer in document["layers"]]
    return [(digest, media_type, data, blobs)]


def load_images(outdir):
    path = os.path.join(outdir, "images.json")
    try:
        with open(path) as handle:
            return json.load(handle)
    except (OSError, ValueError) as err:
        raise PushError("cannot read %s (run build.py first): %s" % (path, err)) from err


# --- pushing ------------------------------------------------------------------------


def push_image(registry, outdir, image, pushed_manifests):
    """Blobs, then manifests by digest (children first), then the tag."""
    repo, tag, digest = image["repo"], image["tag"], image["digest"]
    name = "%s:%s" % (repo, tag)
    sent = 0
    nodes = manifest_tree(outdir, image["layout"], digest, image["mediaType"])
    for node_digest, media_type, data, blobs in nodes:
        for blob in blobs:
            loader = lambda blob=blob: read_blob(outdir, image["layout"], blob)
            sent += registry.ensure_blob(repo, blob, loader)
        if node_digest != digest and (repo, node_digest) not in pushed_manifests:
            registry.put_manifest(repo, node_digest, media_type, data, node_digest)
            pushed_manifests.add((repo, node_digest))
    top = nodes[-1]
    registry.put_manifest(repo, tag, top[1], top[2], digest)
    return name, sent


def verify_image(registry, image):
    repo, tag = image["repo"], image["tag"]
    for reference, expected in [(tag, image["digest"])] + [(c["digest"], c["digest"]) for c in image.get("manifests", [])]:
        got, content_type = registry.resolve(repo, reference)
        if got != expected:
            raise PushError("verify %s:%s: registry resolves %s to %s (%s), expected %s"
                            % (repo, tag, reference, got, content_type, expected))


def main(argv):
    if len(argv) != 3:
        print("usage: push.py OUTDIR HOST:PORT", file=sys.stderr)
        return 2
    outdir, address = os.path.abspath(argv[1]), argv[2]
    images = load_images(outdir)
    registry = Registry(address)
    registry.check_api()
    pushed_manifests = set()
    for image in images:
        try:
            name, sent = push_image(registry, outdir, image, pushed_manifests)
        except PushError as err:
            raise PushError("image %s:%s: %s" % (image["repo"], image["tag"], err)) from err
        print("pushed %-28s %s (%d blobs uploaded or mounted)" % (name, image["digest"], sent))
    for image in images:
        verify_image(registry, image)
    print("verified %d tags on %s" % (len(images), address))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv))
    except PushError as err:
        print("push.py: error: %s" % err, file=sys.stderr)
        sys.exit(1)
