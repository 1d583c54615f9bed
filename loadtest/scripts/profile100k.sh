#!/bin/bash
# usage: [BIN=..] [OUT=dir] loadtest/scripts/profile100k.sh TAG (root, perf installed): runs the 100k UDP converge with metrics, perf-records steady and converge system-wide)
TAG=$1; BIN=$(realpath "${BIN:-./target/release/loadtest}")
D=${OUT:-./prof-out}/$TAG; mkdir -p $D; cd $D
uptime > uptime.txt
$BIN run --net udp --strategy tree --nodes 100000 --racks 200 --scenario converge --metrics 127.0.0.1:9464 --json run.json > out.txt 2>&1 &
RUN=$!
phase() { curl -s 127.0.0.1:9464/metrics | awk '/^loadtest_phase_total/{print $2}'; }
# wait for steady (phase 0 after initial sync)
seen_sync=0
while kill -0 $RUN 2>/dev/null; do p=$(phase); [ "$p" = "100000" ] && seen_sync=1; [ "$seen_sync" = 1 ] && [ "$p" = "0" ] && break; sleep 0.2; done
echo "steady at $(date +%T.%N)" >> times.txt
sleep 20
perf stat -a -e syscalls:sys_enter_recvfrom,syscalls:sys_enter_recvmmsg,syscalls:sys_enter_sendto,syscalls:sys_enter_epoll_wait -o steady-syscalls.txt -- sleep 5
perf record -a -g -F 999 -o steady.data -- sleep 6 2>/dev/null >/dev/null
while kill -0 $RUN 2>/dev/null; do p=$(phase); [ "$p" = "100000" ] && break; sleep 0.05; done
echo "converge at $(date +%T.%N)" >> times.txt
perf record -a -g -F 999 -o converge.data -- sleep 3 2>/dev/null >/dev/null
wait $RUN
uptime >> uptime.txt
