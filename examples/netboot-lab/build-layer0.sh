#!/usr/bin/env bash
# Builds layer 0, the small persistent OS a node boots from the network:
# Debian's kernel (linux-image-amd64) and an initramfs (cpio, gzip) holding
# busybox (busybox-static), the layercake binary with the shared libraries it
# needs, the NIC drivers, and an /init that brings the network up from the
# kernel command line (or DHCP) and runs `layercake run` as that node.
#
#   build-layer0.sh [-o OUT_DIR] [-b LAYERCAKE_BINARY] [--check]
#
#   -o DIR     where vmlinuz and initrd.img go (default: out/ beside this script)
#   -b FILE    the layercake binary (default: target/release/layercake)
#   --check    then boot the result in QEMU (TCG) in its test mode
#              (layercake.test=marker: network up by DHCP, print a marker,
#              power off) and print the time from QEMU's start to the marker
#
# Extra kernel modules (real hardware NICs) go in LAYER0_MODULES, e.g.
# LAYER0_MODULES="ixgbe mlx5_core"; virtio_net and e1000 are always in.
#
# The kernel command line layer 0 reads (written by the pxe module's
# script.rs, kernel_cmdline):
#   layercake.name=NAME            the instance id (`layercake run --id`)
#   layercake.ip=ADDR/PREFIX       static address (else DHCP with udhcpc)
#   layercake.gw=ADDR              default gateway
#   layercake.mac=MAC              the NIC to configure (else the first one)
#   layercake.parent=ADDR:PORT     the parent's sync address
#   layercake.server=URL           the boot server's HTTP base
#   layercake.topology=URL         the topology file, fetched over HTTP
#   layercake.identity=fetch       fetch this node's certificate and key from
#                                  $SERVER/boot/identity (served once per boot
#                                  window to this node's address and MAC) and
#                                  join with --pki
#   layercake.test=marker          test mode (see --check)
# Nothing secret belongs on it: anyone on the boot network can read it.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
out="$here/out"
binary="$repo/target/release/layercake"
check=0
while [ $# -gt 0 ]; do
  case "$1" in
    -o) out="$2"; shift 2 ;;
    -b) binary="$2"; shift 2 ;;
    --check) check=1; shift ;;
    -h|--help) sed -n '2,33p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done

die() { echo "build-layer0: $*" >&2; exit 1; }
need_pkg() {
  dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed" ||
    die "Debian package $1 is missing: apt-get install -y --no-install-recommends $1"
}
need_pkg linux-image-amd64
need_pkg busybox-static
need_pkg cpio
need_pkg kmod
[ -x "$binary" ] || die "no layercake binary at $binary (cargo build --release, or -b FILE)"

# The kernel linux-image-amd64 points at.
kver="$(dpkg-query -W -f='${Depends}' linux-image-amd64 | sed -n 's/^linux-image-\([^ ,]*\).*/\1/p')"
[ -n "$kver" ] || die "cannot tell which kernel linux-image-amd64 depends on"
vmlinuz="/boot/vmlinuz-$kver"
[ -r "$vmlinuz" ] || die "$vmlinuz is missing (reinstall linux-image-$kver)"

stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage"/{bin,sbin,etc/layer0,etc/layercake,proc,sys,dev,run,tmp,var/lib/layercake,root}

# busybox and its applets.
cp /bin/busybox "$stage/bin/busybox"
for applet in $(/bin/busybox --list); do
  [ -e "$stage/bin/$applet" ] || ln -s busybox "$stage/bin/$applet"
done

# layercake and the shared libraries (and loader) it links.
cp "$binary" "$stage/bin/layercake"
strip "$stage/bin/layercake" 2>/dev/null || true
ldd "$binary" | awk '/=> \//{print $3} /^\t\/[^ ]+ \(/{print $1}' | while read -r lib; do
  mkdir -p "$stage$(dirname "$lib")"
  cp -L "$lib" "$stage$lib"
done

# NIC drivers with their dependencies, in load order.
: > "$stage/etc/layer0/modules"
for module in virtio_pci virtio_net e1000 ${LAYER0_MODULES:-}; do
  modprobe -S "$kver" --show-depends "$module" | awk '$1 == "insmod" {print $2}'
done | awk '!seen[$0]++' | while read -r ko; do
  dest="/lib/modules/$kver/$(basename "${ko%.xz}")"
  mkdir -p "$stage/lib/modules/$kver"
  case "$ko" in
    *.xz) xz -dc "$ko" > "$stage$dest" ;;
    *) cp "$ko" "$stage$dest" ;;
  esac
  echo "$dest" >> "$stage/etc/layer0/modules"
done

cat > "$stage/etc/layer0/udhcpc.sh" <<'EOF'
#!/bin/sh
# udhcpc's hook: apply the lease to the interface.
case "$1" in
  deconfig) ip addr flush dev "$interface"; ip link set "$interface" up ;;
  bound|renew)
    ip addr flush dev "$interface"
    ip addr add "$ip/${mask:-24}" dev "$interface"
    if [ -n "${router:-}" ]; then ip route replace default via "${router%% *}" dev "$interface"; fi
    echo "$ip/${mask:-24}" > /run/layer0-address ;;
esac
EOF

cat > "$stage/init" <<'EOF'
#!/bin/sh
# Layer 0's init: mount, load the NIC drivers, configure the network from
# the kernel command line (or DHCP), then become the node's layercake agent.
export PATH=/bin:/sbin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs run /run
mount -t tmpfs tmp /tmp
echo "layer0: init on $(uname -r)"

for arg in $(cat /proc/cmdline); do
  case "$arg" in
    layercake.name=*) NAME="${arg#*=}" ;;
    layercake.ip=*) ADDRESS="${arg#*=}" ;;
    layercake.gw=*) GATEWAY="${arg#*=}" ;;
    layercake.mac=*) MAC="${arg#*=}" ;;
    layercake.parent=*) PARENT="${arg#*=}" ;;
    layercake.server=*) SERVER="${arg#*=}" ;;
    layercake.topology=*) TOPOLOGY_URL="${arg#*=}" ;;
    layercake.identity=*) IDENTITY="${arg#*=}" ;;
    layercake.test=*) TEST="${arg#*=}" ;;
  esac
done

for ko in $(cat /etc/layer0/modules); do insmod "$ko" 2>/dev/null; done

# The NIC: the one with layercake.mac, else the first that is not lo
# (drivers may take a moment to register it).
nic=""
tries=0
while [ -z "$nic" ] && [ "$tries" -lt 50 ]; do
  for path in /sys/class/net/*; do
    name="${path##*/}"
    [ "$name" = lo ] && continue
    if [ -z "${MAC:-}" ] || [ "$(cat "$path/address")" = "$MAC" ]; then nic="$name"; break; fi
  done
  [ -n "$nic" ] || { sleep 0.1; tries=$((tries + 1)); }
done
ip link set lo up
if [ -z "$nic" ]; then
  echo "layer0: no network interface found"
else
  ip link set "$nic" up
  if [ -n "${ADDRESS:-}" ]; then
    ip addr add "$ADDRESS" dev "$nic"
    if [ -n "${GATEWAY:-}" ]; then ip route add default via "$GATEWAY" dev "$nic"; fi
    echo "$ADDRESS" > /run/layer0-address
  else
    udhcpc -i "$nic" -s /etc/layer0/udhcpc.sh -q -n -t 10 -T 1 -x hostname:"${NAME:-layer0}"
  fi
  echo "layer0: $nic is $(cat /run/layer0-address 2>/dev/null || echo unconfigured)"
fi

if [ "${TEST:-}" = marker ]; then
  if /bin/layercake --version >/dev/null 2>&1 || /bin/layercake --help >/dev/null 2>&1; then
    runs=yes
  else
    runs=no
  fi
  echo "LAYER0-MARKER name=${NAME:-} nic=${nic:-none} address=$(cat /run/layer0-address 2>/dev/null) layercake-runs=$runs"
  poweroff -f
fi

# wget with a few retries (the link may still be settling).
fetch() {
  for _ in 1 2 3 4 5; do
    wget -q -O "$2" "$1" && return 0
    sleep 1
  done
  return 1
}

if [ -n "${TOPOLOGY_URL:-}" ]; then
  fetch "$TOPOLOGY_URL" /etc/layercake/topology.yaml ||
    echo "layer0: could not fetch the topology from $TOPOLOGY_URL"
fi

# ---------------------------------------------------------------------------
# JOIN FLAGS: the one place that says how layer 0's agent joins the cluster.
# With layercake.identity=fetch, this node's identity (the cluster CA's
# certificate, its own certificate and private key, in that order) is
# fetched once from the boot server, which serves it only to this node's
# registered address and MAC during its boot window, and the agent joins
# over QUIC with mutual TLS (`--pki`), getting the cluster key from the root.
JOIN_FLAGS=""
if [ "${IDENTITY:-}" = fetch ] && [ -n "${SERVER:-}" ]; then
  pki=/etc/layercake/pki
  mkdir -p "$pki"
  old_umask=$(umask)
  umask 077
  if fetch "$SERVER/boot/identity" /run/identity.pem; then
    awk -v d="$pki" -v n="${NAME:-}" '
      /-----BEGIN/ { i++; f = (i == 1) ? d "/ca.crt" : (i == 2) ? d "/" n ".crt" : d "/" n ".key" }
      f { print > f }
      /-----END/ { f = "" }' /run/identity.pem
    rm -f /run/identity.pem
    JOIN_FLAGS="--pki $pki"
    echo "layer0: identity fetched"
  else
    echo "layer0: could not fetch this node's identity from $SERVER/boot/identity"
  fi
  umask "$old_umask"
fi
# ---------------------------------------------------------------------------

echo "layer0: exec layercake run --id ${NAME:-?}"
# shellcheck disable=SC2086 # JOIN_FLAGS is a list of words
export LAYERCAKE_LOG="${LAYERCAKE_LOG:-info}"
exec /bin/layercake run --topology /etc/layercake/topology.yaml --id "${NAME:-}" $JOIN_FLAGS
EOF
chmod 755 "$stage/init" "$stage/etc/layer0/udhcpc.sh"

mkdir -p "$out"
cp "$vmlinuz" "$out/vmlinuz"
(cd "$stage" && find . -print0 | cpio --null -o -H newc --quiet) | gzip -6 > "$out/initrd.img"
echo "layer0: kernel $kver -> $out/vmlinuz ($(du -h "$out/vmlinuz" | cut -f1))"
echo "layer0: initramfs -> $out/initrd.img ($(du -h "$out/initrd.img" | cut -f1))"

if [ "$check" = 1 ]; then
  need_pkg qemu-system-x86
  console="$(mktemp)"
  start=$(date +%s.%N)
  qemu-system-x86_64 -machine pc,accel=tcg -m 512 -nographic -no-reboot \
    -monitor none -serial "file:$console" \
    -kernel "$out/vmlinuz" -initrd "$out/initrd.img" \
    -append "console=ttyS0 panic=-1 layercake.name=vm1 layercake.test=marker" \
    -netdev user,id=n0 -device virtio-net-pci,netdev=n0 </dev/null >/dev/null 2>&1 &
  qemu=$!
  init_at=""
  marker_at=""
  for _ in $(seq 1200); do
    if [ -z "$init_at" ] && grep -aq 'layer0: init on' "$console"; then init_at=$(date +%s.%N); fi
    if [ -z "$marker_at" ] && grep -aq 'LAYER0-MARKER' "$console"; then marker_at=$(date +%s.%N); fi
    kill -0 "$qemu" 2>/dev/null || break
    sleep 0.1
  done
  kill "$qemu" 2>/dev/null || true
  wait "$qemu" 2>/dev/null || true
  end=$(date +%s.%N)
  if [ -z "$marker_at" ]; then
    tail -n 30 "$console" >&2
    rm -f "$console"
    die "the check boot did not print its marker"
  fi
  elapsed() { awk -v s="$start" -v e="$1" 'BEGIN { printf "%.1f", e - s }'; }
  echo "layer0 check: $(grep -a 'LAYER0-MARKER' "$console" | tr -d '\r')"
  echo "layer0 check (TCG): QEMU start -> /init $(elapsed "${init_at:-$marker_at}") s, -> marker (network up) $(elapsed "$marker_at") s, -> powered off $(elapsed "$end") s"
  rm -f "$console"
fi
