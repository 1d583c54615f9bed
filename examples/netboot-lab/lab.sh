#!/usr/bin/env bash
# The network boot lab: two virtual machines behind real (emulated) BMCs
# that power on, boot layer 0 from the network and join a layercake cluster,
# on this one machine. See docs/boot.md.
#
#   sudo examples/netboot-lab/lab.sh [up]   build layer 0, set everything up, start layercake
#   sudo examples/netboot-lab/lab.sh down   stop everything and remove the namespace
#
# What `up` builds, in the network namespace $LAB_NS (default lclab):
#   br0        a bridge: 10.0.0.1 (the root) and 10.0.0.2 (the sub-parent `sp`,
#              which runs the DHCP, TFTP and HTTP boot servers on it)
#   vm1, vm2   QEMU (TCG) machines on tap1 and tap2 whose NIC boots Debian's
#              iPXE ROM; each behind an OpenIPMI ipmi_sim BMC on 127.0.0.1:9601
#              and :9602 whose chassis power starts and stops the QEMU process
#   a cluster CA, a certificate for each instance (the nodes' are served by
#   the sub-parent once per boot window), layer 0 (build-layer0.sh), and the
#   nodes' BMC and network settings in their Cfg.
# Files, logs and the machines' serial consoles go to $LAB_DIR (default
# /tmp/netboot-lab). The binary is $LAYERCAKE_BIN, else target/release/layercake,
# else target/debug/layercake (build one with `cargo build --release -p layercake`).
#
# Needs root and Debian's qemu-system-x86, ipxe-qemu, linux-image-amd64,
# busybox-static, cpio, kmod, openipmi and ipmitool (`bash .ci/deps`);
# socat, if installed, forwards the dashboard to http://127.0.0.1:7180/.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
work="${LAB_DIR:-/tmp/netboot-lab}"
ns="${LAB_NS:-lclab}"
port=7400
api=127.0.0.1:7180
rom=/usr/lib/ipxe/qemu/pxe-virtio.rom
vms=("vm1 52:54:00:4c:42:01 10.0.0.11/24" "vm2 52:54:00:4c:42:02 10.0.0.12/24")

die() { echo "lab: $*" >&2; exit 1; }

binary="${LAYERCAKE_BIN:-}"
if [ -z "$binary" ]; then
  for b in "$repo/target/release/layercake" "$repo/target/debug/layercake"; do
    if [ -x "$b" ]; then binary="$b"; break; fi
  done
fi

down() {
  if [ -d "$work" ]; then
    for pidfile in "$work"/*.pid; do
      [ -f "$pidfile" ] || continue
      kill "$(cat "$pidfile")" 2>/dev/null || true
      rm -f "$pidfile"
    done
  fi
  ip netns del "$ns" 2>/dev/null || true
}

in_ns() { ip netns exec "$ns" "$@"; }

start_bg() { # NAME COMMAND...: runs COMMAND in the namespace, log in NAME.log
  local name="$1"; shift
  ip netns exec "$ns" "$@" >"$work/$name.log" 2>&1 </dev/null &
  echo $! > "$work/$name.pid"
}

bmc() { # N MAC: the VM's start script and its ipmi_sim
  local n="$1" mac="$2"
  cat > "$work/vm$n.sh" <<EOF
#!/bin/sh
# ipmi_sim's startcmd for vm$n: its pid becomes QEMU's (exec).
echo \$\$ > $work/vm$n.pid
exec qemu-system-x86_64 -machine pc,accel=tcg -m 512 -nographic -monitor none \\
  -chardev file,id=con,path=$work/vm$n.console,append=on -serial chardev:con \\
  -netdev tap,id=n0,ifname=tap$n,script=no,downscript=no \\
  -device virtio-net-pci,disable-legacy=on,netdev=n0,mac=$mac,romfile=$rom -boot n
EOF
  mkdir -p "$work/bmc$n"
  cat > "$work/bmc$n/lan.conf" <<EOF
name "bmc$n"
set_working_mc 0x20
  startlan 1
    addr 127.0.0.1 960$n
    priv_limit admin
    allowed_auths_callback none md5 straight
    allowed_auths_user none md5 straight
    allowed_auths_operator none md5 straight
    allowed_auths_admin none md5 straight
    guid a123456789abcdefa123456789abcd0$n
  endlan
  serial kcs 127.0.0.1 970$n codec VM ipmb 0x20
  startcmd "/bin/sh $work/vm$n.sh"
  startnow false
  poweroff_wait 1
  kill_wait 2
  user 2 true "admin" "secret" admin 32 none md5 straight
EOF
  start_bg "bmc$n" ipmi_sim -c "$work/bmc$n/lan.conf" \
    -f "$repo/layercake/tests/fixtures/ipmi_sim/bmc.emu" -s "$work/bmc$n" -n
}

up() {
  [ "$(id -u)" -eq 0 ] || die "run me as root (network namespaces, tap devices)"
  for pkg in qemu-system-x86 ipxe-qemu linux-image-amd64 busybox-static cpio kmod openipmi ipmitool; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" ||
      die "Debian package $pkg is missing (bash .ci/deps installs it)"
  done
  [ -n "$binary" ] || die "no layercake binary: cargo build --release -p layercake (or LAYERCAKE_BIN=...)"
  down
  rm -rf "$work"
  mkdir -p "$work"
  lc() { "$binary" "$@"; }

  echo "==> network namespace $ns: bridge br0 (10.0.0.1, 10.0.0.2), taps tap1 tap2"
  ip netns add "$ns"
  ip -n "$ns" link set lo up
  ip -n "$ns" link add br0 type bridge
  ip -n "$ns" addr add 10.0.0.1/24 dev br0
  ip -n "$ns" addr add 10.0.0.2/24 dev br0
  ip -n "$ns" link set br0 up
  for n in 1 2; do
    ip -n "$ns" tuntap add dev "tap$n" mode tap
    ip -n "$ns" link set "tap$n" master br0
    ip -n "$ns" link set "tap$n" up
  done

  echo "==> cluster CA, certificates, topology, key, BMC credentials"
  lc certs init --dir "$work/ca" --cluster netboot-lab >/dev/null
  lc certs issue --dir "$work/ca" --name root --out "$work/pki-root" >/dev/null
  lc certs issue --dir "$work/ca" --name sp --out "$work/pki-sp" >/dev/null
  for vm in "${vms[@]}"; do
    set -- $vm
    lc certs issue --dir "$work/ca" --name "$1" --out "$work/identities" >/dev/null
  done
  cat > "$work/topology.yaml" <<EOF
# The netboot lab: a root, one rack whose sub-parent boots vm1 and vm2.
cluster: netboot-lab
key_file: cluster.key
sync: { hello: 1s, dead: 4s }
root: { name: root, addr: "10.0.0.1:$port" }
groups:
  - name: rack1
    sub_parent: { name: sp, addr: "10.0.0.2:$port" }
    nodes:
      - { hosts: "vm[1-2]", addr: "10.0.0.{n+10}:$port" }
EOF
  (umask 077; lc topo key > "$work/cluster.key"; echo "bmc 127.0.0.1,10.0.0.* secret" > "$work/credentials")

  echo "==> layer 0"
  bash "$here/build-layer0.sh" -b "$binary" -o "$work/boot"
  cp "$work/topology.yaml" "$work/boot/topology.yaml"
  # For firmware that PXE-boots over TFTP first (real machines; these VMs
  # run iPXE in their NIC ROM and go straight to HTTP): Debian's ipxe.
  for f in undionly.kpxe ipxe.efi; do
    if [ -f "/usr/lib/ipxe/$f" ]; then cp "/usr/lib/ipxe/$f" "$work/boot/"; fi
  done

  echo "==> BMCs (ipmi_sim) and layercake (root, sub-parent)"
  for n in 1 2; do
    set -- ${vms[$((n - 1))]}
    bmc "$n" "$2"
  done
  start_bg root env LAYERCAKE_LOG=info "$binary" run --topology "$work/topology.yaml" --id root \
    --pki "$work/pki-root" --data-dir "$work/data" --api "$api"
  start_bg sp env LAYERCAKE_LOG=info "$binary" run --topology "$work/topology.yaml" --id sp \
    --pki "$work/pki-sp" --credentials "$work/credentials" --bmc-poll 1s \
    --metrics 10.0.0.2:9480 --boot-server 10.0.0.2 --boot-interface br0 \
    --boot-root "$work/boot" --boot-identities "$work/identities" \
    --boot-kernel-arg console=ttyS0 --boot-kernel-arg panic=5

  cat > "$work/ctl" <<EOF
#!/bin/sh
# layercake ctl against the lab's root (its API is inside the namespace).
exec ip netns exec $ns $binary ctl --api $api "\$@"
EOF
  chmod 755 "$work/ctl"
  for _ in $(seq 60); do
    "$work/ctl" get nodes >/dev/null 2>&1 && break
    sleep 1
  done
  "$work/ctl" get nodes >/dev/null || die "the root did not start; see $work/root.log"

  echo "==> the nodes' BMCs and boot networks (their Cfg)"
  power=type.googleapis.com/layercake.power.Power
  net=type.googleapis.com/layercake.network.Network
  for n in 1 2; do
    set -- ${vms[$((n - 1))]}
    "$work/ctl" set "$1" "$power/Protocol=ipmi" "$power/Address=127.0.0.1:960$n" \
      "$power/User=admin" "$power/Credential=bmc" "$net/Mac=$2" "$net/Address=$3" >/dev/null
  done

  dashboard="(install socat to forward the dashboard to this host)"
  if command -v socat >/dev/null; then
    socat TCP-LISTEN:7180,bind=127.0.0.1,fork,reuseaddr \
      EXEC:"ip netns exec $ns socat STDIO TCP\:$api" >/dev/null 2>&1 &
    echo $! > "$work/socat.pid"
    dashboard="http://127.0.0.1:7180/"
  fi

  cat <<EOF

The lab runs. Power both machines on and boot them:

  $work/ctl set 'vm[1-2]' /PhysState=POWER_ON /RunState=SYNC

then watch them (Dsc PhysState POWER_ON, PXE WAIT -> INIT -> COMP, RunState SYNC;
about a minute under TCG):

  $work/ctl watch            # or: $work/ctl get nodes
  dashboard: $dashboard
  serial consoles: tail -f $work/vm1.console
  boot servers, boot times: ip netns exec $ns curl -s http://10.0.0.2:9480/metrics | grep -E 'pxe|boot'

Kill a machine behind layercake's back and watch it come back by itself:

  kill -9 \$(cat $work/vm1.pid)

Power one off through its BMC:  $work/ctl set vm1 /PhysState=POWER_OFF
Stop everything:                 sudo $0 down
EOF
}

case "${1:-up}" in
  up) up ;;
  down) down; echo "lab: stopped" ;;
  -h|--help) sed -n '2,24p' "$0" ;;
  *) die "unknown command $1 (up, down)" ;;
esac
