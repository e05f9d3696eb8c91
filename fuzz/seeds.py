#!/usr/bin/env python3
"""Writes the fuzz targets' seed inputs into corpus/<target>/seed-*: small, valid (and a
few deliberately hostile) examples of what each parser reads, so that libFuzzer starts
from real shapes. Run again after changing it; the seeds are committed."""

import gzip
import hashlib
import io
import json
import os
import struct
import tarfile

HERE = os.path.dirname(os.path.abspath(__file__))
SEP = b"\n@@@@\n"


def write(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data)


def tar(entries, fmt=tarfile.PAX_FORMAT):
    """entries: (name, kind, payload) with kind file/dir/symlink/link."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as t:
        for name, kind, payload in entries:
            i = tarfile.TarInfo(name)
            i.mtime = 1700000000
            if kind == "file":
                i.size = len(payload)
                i.mode = 0o644
                t.addfile(i, io.BytesIO(payload))
                continue
            if kind == "dir":
                i.type, i.mode = tarfile.DIRTYPE, 0o755
            elif kind == "symlink":
                i.type, i.linkname = tarfile.SYMTYPE, payload
            elif kind == "link":
                i.type, i.linkname = tarfile.LNKTYPE, payload
            elif kind == "fifo":
                i.type = tarfile.FIFOTYPE
            t.addfile(i)
    return buf.getvalue()


def sha(b):
    return "sha256:" + hashlib.sha256(b).hexdigest()


# Layers: a plain root, whiteouts, links, and the classic escapes.
root = tar([("etc", "dir", None), ("etc/hostname", "file", b"cabin\n"),
            ("bin", "dir", None), ("bin/sh", "file", b"\x7fELF"),
            ("bin/ash", "link", "bin/sh"), ("lib", "symlink", "usr/lib"),
            ("usr/lib", "dir", None), ("usr/lib/x", "file", b"x")])
whiteouts = tar([("etc/.wh.hostname", "file", b""), ("usr/.wh..wh..opq", "file", b""),
                 ("usr/new", "file", b"n")])
escapes = tar([("../outside/x", "file", b"x"), ("a", "symlink", "../outside"),
               ("a/y", "file", b"y"), ("b", "symlink", "/tmp"), ("b/z", "file", b"z"),
               ("c", "link", "../outside/untouched")])
gnu = tar([("d" * 150 + "/f", "file", b"long name"), ("p", "fifo", None)], tarfile.GNU_FORMAT)
for i, layer in enumerate([root, whiteouts, escapes, gnu]):
    write("layer_tar", f"plain-{i}", b"\x00" + layer)
write("layer_tar", "gzip", b"\x01" + root)
write("layer_tar", "zstd", b"\x02" + whiteouts)
write("layer_tar", "raw-gzip", b"\x03" + gzip.compress(escapes))

# cabin cp archives: one top-level entry, as `pack` writes them.
copy = tar([("f", "dir", None), ("f/a", "file", b"a"), ("f/sub", "dir", None),
            ("f/sub/b", "file", b"b"), ("f/l", "symlink", "a")])
single = tar([("f", "file", b"just a file")])
hostile = tar([("f", "symlink", "../outside"), ("f/x", "file", b"x"),
               ("existing", "symlink", "../outside/untouched")])
for mode, data in [(0, copy), (1, copy), (2, copy), (3, single), (0x31, hostile),
                   (1, hostile), (0x12, single)]:
    write("cp_archive", f"mode{mode:02x}-{hashlib.sha256(data).hexdigest()[:8]}",
          bytes([mode]) + data)

# OCI: reference, index, manifest, config.
config = json.dumps({
    "architecture": "amd64", "os": "linux",
    "config": {"Env": ["PATH=/bin"], "Cmd": ["sh"], "WorkingDir": "/",
               "Healthcheck": {"Test": ["CMD", "true"], "Interval": 1000000000}},
    "rootfs": {"type": "layers", "diff_ids": [sha(root)]},
}).encode()
manifest = json.dumps({
    "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
               "digest": sha(config), "size": len(config)},
    "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": sha(gzip.compress(root)), "size": 100}],
}).encode()
index = json.dumps({
    "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
    "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": sha(manifest),
         "size": len(manifest), "platform": {"architecture": "arm64", "os": "linux",
                                             "variant": "v8"}},
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": sha(manifest),
         "size": len(manifest), "platform": {"architecture": "amd64", "os": "linux"}}],
}).encode()
write("oci_image", "valid", SEP.join([b"busybox", index, manifest, config]))
write("oci_image", "registry-ref", SEP.join([b"127.0.0.1:5000/a/b:1@" + sha(b"x").encode(),
                                            b"{}", manifest, b"{}"]))

# Image archives: docker save (new layout, with index.json too) and an OCI layout.
def archive(files):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        for name, data in files:
            i = tarfile.TarInfo(name)
            i.size = len(data)
            t.addfile(i, io.BytesIO(data))
    return buf.getvalue()

blob = lambda b: ("blobs/sha256/" + hashlib.sha256(b).hexdigest(), b)
docker = json.dumps([{"Config": "blobs/sha256/" + hashlib.sha256(config).hexdigest(),
                      "RepoTags": ["busybox:latest"],
                      "Layers": ["blobs/sha256/" + hashlib.sha256(root).hexdigest()]}]).encode()
oci_manifest = json.dumps({
    "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
               "digest": sha(config), "size": len(config)},
    "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                "digest": sha(root), "size": len(root)}],
}).encode()
oci_index = json.dumps({"schemaVersion": 2, "manifests": [
    {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": sha(oci_manifest),
     "size": len(oci_manifest),
     "annotations": {"io.containerd.image.name": "docker.io/library/busybox:latest",
                     "org.opencontainers.image.ref.name": "latest"}}]}).encode()
write("image_archive", "docker-save", archive([blob(config), blob(root), ("manifest.json", docker)]))
write("image_archive", "oci-layout", archive([("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'),
                                              blob(config), blob(root), blob(oci_manifest),
                                              ("index.json", oci_index)]))
write("image_archive", "gzip", gzip.compress(archive([blob(config), blob(root),
                                                      ("manifest.json", docker)])))
write("image_archive", "escape", archive([("../x", b"x"), ("manifest.json", b"[]")]))

# Lume: manifest, config, legacy LZ4 stream.
lume_config = json.dumps({"mediatype": "application/vnd.trycua.lume.config.v1+json",
                          "os": "linux", "storage": []}).encode()
chunk = b"\0" * 512
lume = json.dumps({
    "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "annotations": {"org.trycua.lume.cpu-count": "2", "org.trycua.lume.memory-size": "4294967296",
                    "org.trycua.lume.display": "1024x768", "org.trycua.lume.network-mode": "nat",
                    "org.trycua.lume.total-uncompressed-size": "1024"},
    "config": {"mediaType": "application/vnd.trycua.lume.config.v1+json",
               "digest": sha(lume_config), "size": len(lume_config),
               "annotations": {"org.opencontainers.image.title": "config.json"}},
    "layers": [
        {"mediaType": "application/vnd.trycua.lume.nvram.v1", "digest": sha(b"nv"), "size": 2,
         "annotations": {"org.opencontainers.image.title": "nvram.bin"}},
        *[{"mediaType": "application/vnd.trycua.lume.disk.v1", "digest": sha(bytes([n])),
           "size": 30, "annotations": {
               "org.opencontainers.image.title": "disk.img.part.%d" % n,
               "org.trycua.lume.content.uncompressed-size": "512",
               "org.trycua.lume.content.uncompressed-digest": sha(chunk),
               "org.trycua.lume.part.number": str(n), "org.trycua.lume.part.total": "2",
               "org.trycua.lume.part.offset": str((n - 1) * 512),
               "org.trycua.lume.chunk.size": "512"}} for n in (1, 2)]],
}).encode()
legacy_config = json.dumps({"os": "linux", "cpuCount": 2, "memorySize": 4294967296,
                            "diskSize": 1024, "display": "1024x768"}).encode()
legacy = json.dumps({
    "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
               "digest": sha(legacy_config), "size": len(legacy_config)},
    "layers": [
        {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha(legacy_config),
         "size": len(legacy_config)},
        {"mediaType": "application/octet-stream", "digest": sha(b"nv"), "size": 2},
        {"mediaType": "application/octet-stream+lz4;part.number=1;part.total=1",
         "digest": sha(b"d"), "size": 40,
         "annotations": {"org.trycua.lume.uncompressed-size": "1024",
                         "org.trycua.lume.uncompressed-content-digest": sha(b"\0" * 1024)}}],
}).encode()
# An LZ4 block: one literal run of 16 bytes ("token" 0xf0, length 1 more), as a last sequence.
literal = b"abcdefghijklmnop"
lz4_block = bytes([0xF0, len(literal) - 15]) + literal
stream = (b"bv41" + struct.pack("<II", len(literal), len(lz4_block)) + lz4_block
          + b"bv4-" + struct.pack("<I", 4) + b"raw!" + b"bv4$")
write("lume_image", "oci", SEP.join([lume, lume_config, stream]))
write("lume_image", "legacy", SEP.join([legacy, legacy_config, stream]))

# Lume's API: method, path?query, body.
for i, (m, p, b) in enumerate([
        ("GET", "/lume/vms", b""), ("GET", "/lume/vms/dev?storage=ssd", b""),
        ("POST", "/lume/vms", json.dumps({"name": "dev", "os": "linux", "cpu": 2,
                                          "memory": "4GB", "diskSize": "64GB",
                                          "display": "1024x768"}).encode()),
        ("PATCH", "/lume/vms/dev", b'{"cpu": 4, "memory": "8GB", "dryRun": true}'),
        ("POST", "/lume/vms/clone", b'{"name": "dev", "newName": "dev2"}'),
        ("POST", "/lume/vms/dev/run", b'{"noDisplay": true, "sharedDirectories": '
                                      b'[{"hostPath": "/tmp", "readOnly": true}]}'),
        ("POST", "/lume/pull", b'{"image": "macos:latest", "name": "m", '
                               b'"registry": "ghcr.io", "organization": "trycua"}'),
        ("DELETE", "/lume/vms/dev", b""), ("GET", "/lume/logs?type=error&lines=5", b""),
        ("POST", "/lume/config/locations", b'{"name": "ssd", "path": "~/vms"}'),
        ("GET", "/lume/vms/%2e%2e%2fetc", b""), ("POST", "/lume/vms//run", b"")]):
    write("lume_api", f"{i:02}", SEP.join([m.encode(), p.encode(), b]))

# The Docker API: method, path?query, X-Registry-Auth, body.
create = json.dumps({
    "Image": "busybox", "Cmd": ["sh", "-c", "echo hi"], "Env": ["A=1"], "Tty": True,
    "OpenStdin": True, "ExposedPorts": {"80/tcp": {}}, "Labels": {"a": "b"},
    "Healthcheck": {"Test": ["CMD", "true"], "Interval": 1000000000},
    "HostConfig": {"Binds": ["/tmp:/data:ro"], "PortBindings": {"80/tcp": [{"HostPort": "8080"}]},
                   "Memory": 268435456, "NanoCpus": 1000000000, "Init": True,
                   "RestartPolicy": {"Name": "on-failure", "MaximumRetryCount": 2},
                   "Mounts": [{"Type": "volume", "Source": "v", "Target": "/v"},
                              {"Type": "tmpfs", "Target": "/t", "TmpfsOptions": {"SizeBytes": 1024}}],
                   "Ulimits": [{"Name": "nofile", "Soft": 1024, "Hard": 2048}],
                   "ConsoleSize": [24, 80], "AutoRemove": True},
    "NetworkingConfig": {"EndpointsConfig": {"net": {"Aliases": ["web"]}}},
}).encode()
auth = b"eyJ1c2VybmFtZSI6InUiLCJwYXNzd29yZCI6InAifQ"
for i, (m, p, a, b) in enumerate([
        ("POST", "/v1.47/containers/create?name=web", b"", create),
        ("GET", "/v1.47/containers/json?all=1&filters=%7B%22label%22%3A%5B%22a%3Db%22%5D%7D", b"", b""),
        ("GET", "/containers/web/logs?since=1700000000.5&tail=10&stdout=1", b"", b""),
        ("POST", "/containers/web/exec", b"", b'{"Cmd": ["ls"], "Tty": true, "ConsoleSize": [24, 80]}'),
        ("POST", "/exec/abc/start", b"", b'{"Detach": false, "Tty": true}'),
        ("POST", "/networks/create", b"", b'{"Name": "n", "IPAM": {"Config": [{"Subnet": "10.9.0.0/24"}]}}'),
        ("POST", "/networks/n/connect", b"", b'{"Container": "web", "EndpointConfig": {"Aliases": ["a"]}}'),
        ("POST", "/volumes/create", b"", b'{"Name": "v", "DriverOpts": {"size": "10g"}}'),
        ("POST", "/images/create?fromImage=busybox&tag=latest", auth, b""),
        ("POST", "/auth", b"", b'{"username": "u", "password": "p", "serveraddress": "127.0.0.1:5000"}'),
        ("GET", "/images/127.0.0.1:5000/a/b:1/json", b"", b""),
        ("HEAD", "/_ping", b"", b"")]):
    write("docker_api", f"{i:02}", SEP.join([m.encode(), p.encode(), a, b]))

# Guest messages (protobuf, written by hand: field key, value) and supervisor frames.
def varint(n):
    out = b""
    while True:
        b, n = n & 0x7F, n >> 7
        out += bytes([b | (0x80 if n else 0)])
        if not n:
            return out

def field(num, value):
    if isinstance(value, int):
        return varint(num << 3) + varint(value)
    return varint(num << 3 | 2) + varint(len(value)) + value

write("guest_agent", "exit", b"\x00" + field(1, 3) + field(2, 9))
write("guest_agent", "exit-signal-max", b"\x00" + field(2, 0x7FFFFFFF))
proc = field(1, 7) + field(2, 1) + field(3, 0) + field(4, b"pts/0") + field(5, 1234) + field(6, 10**9) + field(7, b"sh -c top")
write("guest_agent", "processes", b"\x01" + field(1, proc) + field(1, proc) + field(2, 5 * 10**9))
write("guest_agent", "stats", b"\x02" + field(1, 1 << 20) + field(2, 1 << 30) + field(3, 99) + field(4, 3))
write("guest_agent", "hello", b"\x03" + field(1, 2) + field(2, b"6.1.0"))
write("guest_agent", "output", b"\x05" + field(1, 1) + field(2, b"hello\n"))
frame = lambda kind, payload: bytes([kind]) + struct.pack(">I", len(payload)) + payload
write("guest_agent", "frames", b"\x07" + frame(3, b"out") + frame(4, b"err") + frame(5, struct.pack(">i", 0)))
write("guest_agent", "frames-refused", b"\x08" + b'{"ok":false,"error":"no such process"}\n')

# QMP: what QEMU writes.
greeting = b'{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}, "package": ""}, "capabilities": ["oob"]}}\n'
ret = b'{"return": {}}\n'
status = b'{"return": {"status": "running", "singlestep": false, "running": true}}\n'
event = b'{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "SHUTDOWN", "data": {"guest": true, "reason": "guest-shutdown"}}\n'
other = b'{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "RESUME"}\n'
write("qmp", "session", greeting + ret + other + status + event)
write("qmp", "error", greeting + ret + b'{"error": {"class": "GenericError", "desc": "no"}}\n')
write("qmp", "long-line", greeting + b"{" * 300)
