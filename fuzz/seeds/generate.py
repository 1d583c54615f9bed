#!/usr/bin/env python3
"""Writes the seed corpus of every fuzz target (run once; the files are kept
in the repository): a few dozen small inputs per target that reach deep into
each decoder. Deterministic: re-running rewrites the same files."""
import os
import random
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
rng = random.Random(7)


def write(target, name, data):
    os.makedirs(os.path.join(HERE, target), exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(HERE, target, name), "wb") as f:
        f.write(data)


def varint(v):
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def field(num, wire, payload):
    key = varint(num << 3 | wire)
    if wire == 0:
        return key + varint(payload)
    return key + varint(len(payload)) + payload


def record(node, kind, version, data):
    return field(1, 0, node) + field(2, 0, kind) + field(3, 0, version) + field(4, 2, data)


def header(key=1, version=2, sender=3, receiver=2, epoch=1, seq=1):
    """An envelope v2 header: `epoch` is the sender boot; the receiver boot
    echoed is 2, the fuzz target's own, so some seeds count as fresh."""
    return b"KR" + bytes([version, key]) + struct.pack(">IIQQQ", sender, receiver, epoch, 2, seq)


# --- envelope: headers of every kind, bodies of every size
for i in range(30):
    kind = i % 6
    body = bytes(rng.getrandbits(8) for _ in range(rng.choice([0, 16, 17, 40, 200, 1372])))
    if kind == 0:
        d = header(sender=rng.randrange(8), receiver=2, epoch=rng.randrange(1, 4), seq=rng.randrange(1, 3000)) + body
    elif kind == 1:
        d = header(receiver=rng.randrange(5)) + body
    elif kind == 2:
        d = header(key=rng.randrange(256)) + body
    elif kind == 3:
        d = header(version=rng.randrange(256)) + body
    elif kind == 4:
        d = header()[: rng.randrange(44)]
    else:
        d = header() + bytes(1400)
    write("envelope", f"seed-{i:02}", d)

# --- frame: one byte "from", then a protobuf Frame
hellos = [
    field(2, 0, 99) + field(3, 0, 4) + field(4, 2, varint(1) + varint(2)) + field(5, 0, 2000) + field(6, 0, 1),
    field(7, 0, 3) + field(8, 0, 9) + field(9, 0, 1),
    field(10, 0, 1),
    b"",
]
for i, h in enumerate(hellos):
    write("frame", f"hello-{i}", bytes([i]) + field(1, 2, h))
for i in range(16):
    recs = b"".join(
        field(2, 2, record(rng.randrange(10), rng.randrange(4), rng.randrange(1, 20), bytes(rng.randrange(30))))
        for _ in range(rng.randrange(1, 6))
    )
    upd = field(1, 0, rng.randrange(1, 100)) + recs + field(3, 2, varint(rng.randrange(100)))
    write("frame", f"update-{i:02}", bytes([rng.randrange(10)]) + field(2, 2, upd))
for i in range(4):
    write("frame", f"ack-{i}", bytes([i]) + field(3, 2, field(1, 2, varint(i + 1) + varint(7))))
    write("frame", f"gossip-{i}", bytes([i]) + field(4, 2, field(1, 0, i) + field(2, 2, bytes(rng.randrange(40)))))

# --- topology: the examples, the reference's snippets, small variations
for path in ["examples/small-cluster/cluster.yaml", "examples/bmc-cluster/cluster.yaml"]:
    with open(os.path.join(ROOT, path)) as f:
        write("topology", os.path.basename(os.path.dirname(path)), f.read())
BASE = """cluster: demo
root: { name: root, addr: "127.0.0.1:7000" }
{extra}groups:
  - name: r1
    sub_parent: { name: r1-sp, addr: "127.0.1.1:7000" }
    nodes:
      - { hosts: "{hosts}", addr: "{addr}" }
"""
hosts = ["n[01-10]", "n[1-5],m7", "gpu[001-128]-ib", "a.b[1-3]", "x"]
addrs = ["127.0.2.{n}:7000", "127.0.0.1:{n+8000}", "[::1]:{n+9000}", "127.{n/250}.{n%250}.1:7000"]
extras = ["", "defaults: { hello: 1s, dead: 4s, strategy: hybrid }\n",
          "defaults: { hello: 250ms, dead: 1s, jitter: 0.2, transport: quic, retake: false }\n"]
for i in range(24):
    text = BASE.replace("{extra}", extras[i % 3]).replace("{hosts}", hosts[i % 5]).replace("{addr}", addrs[i % 4])
    write("topology", f"variant-{i:02}", text)

# --- url: every form of the URL language
urls = ["/Id", "/Nodename", "/RunState", "/PhysState", "/Arch", "/Platform", "/ParentId", "/Busy",
        "/Services/pxe/State", "/Services/power/Module", "/Services/x/ErrorMsg",
        "type.googleapis.com/layercake.pxe.Pxe/State", "/type.googleapis.com/layercake.pxe.Pxe/Method",
        "type.googleapis.com/layercake.loadtest.Generation/generation",
        "type.googleapis.com/a.B/map/key/field", "n01:/PhysState", "n01:type.googleapis.com/a.B/c",
        "node-7:/Services/pxe/State", "/", "", ":", "a:", "/Services//State", "/Nope",
        "type.googleapis.com/", "type.googleapis.com/a.B/", "x:y:/Id", "/Services/a:b/State"]
for i, u in enumerate(urls):
    write("url", f"url-{i:02}", u)

# --- dhcp: what PXE firmware, iPXE and an OS client send (the fuzz target
# registers 52:54:00:12:34:56 as 10.0.0.11, server 10.0.0.1), and near misses
def dhcp(mtype, mac=b"\x52\x54\x00\x12\x34\x56", options=b"", ciaddr=b"\0" * 4, giaddr=b"\0" * 4):
    head = struct.pack("!BBBBIHH", 1, 1, 6, 0, 0x1234ABCD, 0, 0x8000)
    head += ciaddr + b"\0" * 8 + giaddr + mac + b"\0" * 10 + b"\0" * 192
    return head + bytes([99, 130, 83, 99, 53, 1, mtype]) + options + b"\xff"


def opt(code, value):
    return bytes([code, len(value)]) + value


PXE = (opt(57, struct.pack("!H", 1472)) + opt(93, b"\0\0") + opt(94, b"\x01\x02\x01")
       + opt(97, b"\0" + bytes(range(16))) + opt(60, b"PXEClient:Arch:00000:UNDI:002001")
       + opt(55, bytes([1, 3, 6, 12, 15, 43, 60, 66, 67, 128])))
IPXE = PXE + opt(77, b"iPXE") + opt(175, b"\xb1\x05\x01\x10\xec\x81\x39")
EFI = PXE.replace(opt(93, b"\0\0"), opt(93, b"\0\x07"))
PLAIN = opt(61, b"\x01\x52\x54\x00\x12\x34\x56") + opt(12, b"vm1") + opt(55, bytes([1, 3, 6, 12, 15, 28]))
REQ = opt(54, bytes([10, 0, 0, 1])) + opt(50, bytes([10, 0, 0, 11]))
write("dhcp", "discover-bios", dhcp(1, options=PXE))
write("dhcp", "discover-efi", dhcp(1, options=EFI))
write("dhcp", "discover-ipxe", dhcp(1, options=IPXE))
write("dhcp", "request-bios", dhcp(3, options=PXE + REQ))
write("dhcp", "request-ipxe", dhcp(3, options=IPXE + REQ))
write("dhcp", "request-wrong-ip", dhcp(3, options=PXE + opt(54, bytes([10, 0, 0, 1])) + opt(50, bytes([10, 0, 0, 99]))))
write("dhcp", "request-other-server", dhcp(3, options=PXE + opt(54, bytes([10, 0, 0, 2])) + opt(50, bytes([10, 0, 0, 11]))))
write("dhcp", "discover-plain", dhcp(1, options=PLAIN))
write("dhcp", "renew", dhcp(3, options=PLAIN, ciaddr=bytes([10, 0, 0, 11])))
write("dhcp", "relayed", dhcp(1, options=PXE, giaddr=bytes([10, 1, 0, 1])))
write("dhcp", "release", dhcp(7, options=PLAIN))
write("dhcp", "decline", dhcp(4, options=PLAIN + opt(50, bytes([10, 0, 0, 11]))))
write("dhcp", "inform", dhcp(8, options=PLAIN))
write("dhcp", "unknown-mac", dhcp(1, mac=b"\x02\0\0\0\0\x01", options=PXE))
write("dhcp", "joined-options", dhcp(1, options=opt(60, b"PXEClient") + opt(60, b":Arch:00000") + opt(94, b"\x01\x02") + opt(94, b"\x01")))
write("dhcp", "relay-agent", dhcp(1, options=PXE + opt(82, opt(1, b"eth0") + opt(2, b"sw1"))))
write("dhcp", "fqdn", dhcp(1, options=opt(81, b"\x01\0\0\x03vm1\x07example\x00")))
write("dhcp", "truncated", dhcp(1, options=PXE)[:250])

# --- tftp: requests with and without options, and what a client sends mid-transfer
def rrq(name, mode="octet", *options, op=1):
    out = struct.pack("!H", op) + name.encode() + b"\0" + mode.encode() + b"\0"
    for k, v in options:
        out += k.encode() + b"\0" + v.encode() + b"\0"
    return out


write("tftp", "rrq", rrq("undionly.kpxe"))
write("tftp", "rrq-options", rrq("ipxe.efi", "octet", ("blksize", "1468"), ("tsize", "0"), ("timeout", "3")))
write("tftp", "rrq-small-block", rrq("ipxe.efi", "octet", ("blksize", "8")))
write("tftp", "rrq-traversal", rrq("../../etc/passwd"))
write("tftp", "rrq-absolute", rrq("/etc/passwd"))
write("tftp", "rrq-netascii", rrq("ipxe.efi", "netascii"))
write("tftp", "wrq", rrq("ipxe.efi", op=2))
write("tftp", "ack", struct.pack("!HH", 4, 1))
write("tftp", "data", struct.pack("!HH", 3, 1) + b"x" * 512)
write("tftp", "error", struct.pack("!HH", 5, 8) + b"options refused\0")
write("tftp", "oack", struct.pack("!H", 6) + b"blksize\x001024\0")
