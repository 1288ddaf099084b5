#!/usr/bin/env bash
# Runs vmmsim with every role process in a network namespace of its own, as separate hosts on one
# machine: each namespace has its own loopback and one veth on a bridge (in a hub namespace, so the
# root namespace's firewall never sees the bridged traffic), with an address 10.A.B.N/24. Each role
# runs `vmmsim serve` on its own address; the controller runs in the root namespace with
# `--connect`, through a veth of the root namespace on the same bridge (10.A.B.1). Optional delays
# slow chosen links (tc netem, or a relay where the kernel has no netem). Everything is torn down on exit, on failure and on SIGINT/SIGTERM: no
# namespace, veth or process is left. Needs root, iproute2 (ip, and tc for --delay) and a built
# tree (npm run build).
set -euo pipefail

usage() {
  cat <<'EOF'
usage: deploy/netns/run.sh [options] [-- COMMAND [ARGS...]]

Starts one network namespace per role process (psmmu-0..N-1, vfio, qemu-0..M-1, kvm, guest-0..M-1),
runs `vmmsim serve` in each on its own address, writes the peers file, and runs
`vmmsim COMMAND ARGS --connect PEERS` from the root namespace (COMMAND: run, compare, sweep or
saturate; default: run). Every process gets the run's fresh token (--token-file, a private file
made for this run). Exits with the controller's exit code, after removing everything.

options:
  --psmmus N          pSMMU processes (default 1); the scenario must not need more
  --vms M             guest and qemu processes (default 1)
  --delay A-B=TIME    delay everything A sends B (one way), e.g. vfio-psmmu=2ms or
                      guest-0-kvm=500us; a role name without index means all its processes;
                      repeatable. Give B-A too for both directions.
  --delay-with HOW    auto (default: netem if the kernel has sch_netem, else relay), netem (tc netem
                      on the sender's veth, matched by the peer's address) or relay (the sender
                      dials a relay on its own loopback that holds each byte for the delay)
  --port P            the port every role listens on, in its namespace (default 7700)
  --serve-arg ARG     one more argument for every `vmmsim serve` (repeatable), e.g. TLS files:
                      --serve-arg --tls-ca --serve-arg ca.pem ... (the addresses are chosen per run,
                      so certificates name a host: add --tls-server-name to both sides)
  --id ID             the run's id (1-8 lowercase hex; default random): namespaces are
                      vmmsim-ID-NAME, the root veth vmr-ID
  --ready-timeout S   seconds each role may take to print its ready line (default 60)
  -h, --help          this text

example:
  sudo deploy/netns/run.sh --delay vfio-psmmu=2ms -- run --model nested-smmuv3 --ops 500
EOF
}

say() { printf 'vmmsim-netns: %s\n' "$*" >&2; }
die() {
  say "error: $*"
  exit 2
}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
NODE=${NODE:-node}
BIN="$ROOT/dist/services/controller/bin.js"
RELAY="$ROOT/dist/services/runtime/delay-relay-main.js"
PSMMUS=1
VMS=1
PORT=7700
ID=""
READY_TIMEOUT=60
DELAYS=()
DELAY_WITH=auto
SERVE_ARGS=()

while (($#)); do
  case $1 in
    --psmmus | --vms | --delay | --delay-with | --port | --serve-arg | --id | --ready-timeout)
      (($# >= 2)) || die "$1 needs a value"
      case $1 in
        --psmmus) PSMMUS=$2 ;;
        --vms) VMS=$2 ;;
        --delay) DELAYS+=("$2") ;;
        --delay-with) DELAY_WITH=$2 ;;
        --port) PORT=$2 ;;
        --serve-arg) SERVE_ARGS+=("$2") ;;
        --id) ID=$2 ;;
        --ready-timeout) READY_TIMEOUT=$2 ;;
      esac
      shift 2
      ;;
    -h | --help)
      usage
      exit 0
      ;;
    --)
      shift
      break
      ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done
CMD=("$@")
((${#CMD[@]} > 0)) || CMD=(run)

[[ $PSMMUS =~ ^[1-9][0-9]*$ ]] && ((PSMMUS <= 64)) || die "--psmmus must be 1..64, got $PSMMUS"
[[ $VMS =~ ^[1-9][0-9]*$ ]] && ((VMS <= 64)) || die "--vms must be 1..64, got $VMS"
[[ $PORT =~ ^[1-9][0-9]*$ ]] && ((PORT <= 65535)) || die "--port must be 1..65535, got $PORT"
[[ $READY_TIMEOUT =~ ^[1-9][0-9]*$ ]] || die "--ready-timeout must be a number of seconds, got $READY_TIMEOUT"
((EUID == 0)) || die "network namespaces need root: run it with sudo"
command -v ip >/dev/null || die "ip (iproute2) is not installed"
[[ $DELAY_WITH =~ ^(auto|netem|relay)$ ]] || die "--delay-with must be auto, netem or relay, got $DELAY_WITH"
((${#DELAYS[@]} == 0)) || [[ $DELAY_WITH == relay ]] || command -v tc >/dev/null || die "--delay needs tc (iproute2), or --delay-with relay"
[[ -f $BIN ]] || die "$BIN is missing: run npm run build"

if [[ -z $ID ]]; then ID=$(od -An -N4 -tx1 /dev/urandom | tr -d ' \n'); fi
[[ $ID =~ ^[0-9a-f]{1,8}$ ]] || die "--id must be 1-8 lowercase hex digits, got $ID"
PREFIX="vmmsim-$ID"
HUB="$PREFIX-hub"
ROOT_IF="vmr-$ID"
if ip netns list | grep -q "^$PREFIX-"; then die "namespaces $PREFIX-* exist already: another run has id $ID"; fi
if ip link show "$ROOT_IF" >/dev/null 2>&1; then die "interface $ROOT_IF exists already: another run has id $ID"; fi

# The processes, in the order the controller starts them (downstream first).
NAMES=()
for ((k = 0; k < PSMMUS; k++)); do NAMES+=("psmmu-$k"); done
NAMES+=(vfio)
for ((v = 0; v < VMS; v++)); do NAMES+=("qemu-$v"); done
NAMES+=(kvm)
for ((v = 0; v < VMS; v++)); do NAMES+=("guest-$v"); done

# The processes a name in --delay stands for: itself, or every process of a role.
expand() {
  local n
  for n in "${NAMES[@]}"; do
    if [[ $n == "$1" || ${n%-*} == "$1" ]]; then echo "$n"; fi
  done
}

# The delayed links, as "src dst delay" lines.
LINKS=()
for spec in "${DELAYS[@]}"; do
  [[ $spec =~ ^([a-z]+(-[0-9]+)?)-([a-z]+(-[0-9]+)?)=([0-9]+(\.[0-9]+)?(us|ms|s))$ ]] ||
    die "--delay $spec: expected A-B=TIME, such as vfio-psmmu=2ms"
  from=${BASH_REMATCH[1]} to=${BASH_REMATCH[3]} delay=${BASH_REMATCH[5]}
  srcs=$(expand "$from")
  dsts=$(expand "$to")
  [[ -n $srcs ]] || die "--delay $spec: no process $from in this run"
  [[ -n $dsts ]] || die "--delay $spec: no process $to in this run"
  for src in $srcs; do
    for dst in $dsts; do
      [[ $src != "$dst" ]] || die "--delay $spec: $src to itself"
      for l in "${LINKS[@]}"; do [[ $l != "$src $dst "* ]] || die "--delay $spec: $src -> $dst is delayed twice"; done
      LINKS+=("$src $dst $delay")
    done
  done
done

declare -A ADDR PID NS
RELAY_PIDS=()
TMP=""
CTL_PID=""
CLEANED=0

# Everything this run made goes, whatever happened; each step tolerates what is already gone.
cleanup() {
  local rc=$?
  ((CLEANED)) && return
  CLEANED=1
  set +e
  trap - INT TERM HUP
  if [[ -n $CTL_PID ]] && kill -0 "$CTL_PID" 2>/dev/null; then
    # SIGINT: the controller writes its partial results and releases the roles' run.
    kill -INT "$CTL_PID" 2>/dev/null
    for _ in $(seq 1 150); do kill -0 "$CTL_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$CTL_PID" 2>/dev/null
    wait "$CTL_PID" 2>/dev/null
  fi
  local name pid
  for name in "${!PID[@]}"; do kill -TERM "${PID[$name]}" 2>/dev/null; done
  for pid in "${RELAY_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null; done
  for name in "${!PID[@]}"; do
    pid=${PID[$name]}
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
  done
  for pid in "${RELAY_PIDS[@]}"; do
    kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
  done
  local ns
  for ns in $(ip netns list 2>/dev/null | awk -v p="^$PREFIX-" '$1 ~ p { print $1 }'); do
    # Anything else that entered the namespace goes with it.
    for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null; done
    ip netns del "$ns" 2>/dev/null
  done
  ip link del "$ROOT_IF" 2>/dev/null
  [[ -n $TMP ]] && rm -rf "$TMP"
  say "removed the namespaces $PREFIX-*, $ROOT_IF and every process"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

# A /24 in 10/8 that no route of the root namespace covers more specifically (another run's, a VPN's).
SUBNET=""
for _ in $(seq 1 64); do
  candidate="10.$((RANDOM % 200 + 50)).$((RANDOM % 256))"
  if [[ -z $(ip -4 route show root "$candidate.0/24") && -z $(ip -4 addr show to "$candidate.0/24") ]]; then
    SUBNET=$candidate
    break
  fi
done
[[ -n $SUBNET ]] || die "no free 10.x.y.0/24 found"

TMP=$(mktemp -d "${TMPDIR:-/tmp}/$PREFIX.XXXXXX")
PEERS="$TMP/peers.json"
# The run's token: every role and the controller prove their names with it (docs/security.md).
TOKEN="$TMP/token"
(umask 077 && "$NODE" -e 'process.stdout.write(require("node:crypto").randomBytes(32).toString("hex"))' >"$TOKEN")

say "id $ID: ${#NAMES[@]} namespaces $PREFIX-<name> on $SUBNET.0/24, hub $HUB, root veth $ROOT_IF ($SUBNET.1)"
ip netns add "$HUB"
ip -n "$HUB" link set lo up
ip -n "$HUB" link add br0 type bridge
ip -n "$HUB" link set br0 up
ip link add "$ROOT_IF" type veth peer name up0 netns "$HUB"
ip -n "$HUB" link set up0 master br0 up
ip addr add "$SUBNET.1/24" dev "$ROOT_IF"
ip link set "$ROOT_IF" up

i=0
for name in "${NAMES[@]}"; do
  ns="$PREFIX-$name"
  NS[$name]=$ns
  ADDR[$name]="$SUBNET.$((10 + i))"
  ip netns add "$ns"
  ip -n "$ns" link set lo up
  ip -n "$ns" link add eth0 type veth peer name "p$i" netns "$HUB"
  ip -n "$HUB" link set "p$i" master br0 up
  ip -n "$ns" addr add "${ADDR[$name]}/24" dev eth0
  ip -n "$ns" link set eth0 up
  i=$((i + 1))
done

if ((${#LINKS[@]} > 0)) && [[ $DELAY_WITH != relay ]]; then
  if ip netns exec "$HUB" tc qdisc add dev up0 root netem delay 1ms 2>/dev/null; then
    ip netns exec "$HUB" tc qdisc del dev up0 root
    DELAY_WITH=netem
  elif [[ $DELAY_WITH == netem ]]; then
    die "this kernel has no sch_netem (tc netem): use --delay-with relay"
  else
    DELAY_WITH=relay
    say "this kernel has no sch_netem: each delay is a relay in the sender's namespace"
  fi
fi

# netem: each sending namespace gets an htb qdisc on eth0 whose default class carries all other
# traffic, and a class with a netem leaf per delayed peer; a u32 filter on the peer's address sends
# its packets (and only those) there.
# relay: the sender's own peers file names a relay on its loopback instead of the peer; the relay
# holds each byte for the delay and forwards it to the peer's address (the way back is not delayed).
declare -A NCLASS RELAYED
k=0
for l in "${LINKS[@]}"; do
  read -r src dst delay <<<"$l"
  ns=${NS[$src]}
  if [[ $DELAY_WITH == netem ]]; then
    n=${NCLASS[$src]:-0}
    if ((n == 0)); then
      ip netns exec "$ns" tc qdisc add dev eth0 root handle 1: htb default 1
      ip netns exec "$ns" tc class add dev eth0 parent 1: classid 1:1 htb rate 10gbit quantum 60000
    fi
    class=$(printf %x $((16 + n)))
    ip netns exec "$ns" tc class add dev eth0 parent 1: classid "1:$class" htb rate 10gbit quantum 60000
    ip netns exec "$ns" tc qdisc add dev eth0 parent "1:$class" handle "$class:" netem delay "$delay"
    ip netns exec "$ns" tc filter add dev eth0 parent 1: protocol ip prio 1 u32 match ip dst "${ADDR[$dst]}/32" flowid "1:$class"
    NCLASS[$src]=$((n + 1))
    say "netem delay $delay on $src -> $dst (${ADDR[$src]} -> ${ADDR[$dst]})"
  else
    rport=$((PORT + 1000 + k))
    ip netns exec "$ns" "$NODE" "$RELAY" --listen "127.0.0.1:$rport" --to "${ADDR[$dst]}:$PORT" --delay "$delay" \
      </dev/null >"$TMP/relay-$k.ready" &
    RELAY_PIDS+=($!)
    RELAYED[$src]="${RELAYED[$src]:-} $dst=127.0.0.1:$rport"
    say "relay delay $delay on $src -> $dst (127.0.0.1:$rport in ${NS[$src]} -> ${ADDR[$dst]}:$PORT)"
  fi
  k=$((k + 1))
done

# A peers file: every process at its address, but for the NAME=ADDRESS overrides given.
write_peers() {
  local file=$1 name sep="" address o
  shift
  {
    printf '{"endpoints": ['
    for name in "${NAMES[@]}"; do
      address="${ADDR[$name]}:$PORT"
      for o in "$@"; do [[ ${o%%=*} == "$name" ]] && address=${o#*=}; done
      printf '%s{"name": "%s", "address": "%s"}' "$sep" "$name" "$address"
      sep=", "
    done
    printf ']}\n'
  } >"$file"
}
write_peers "$PEERS"

for name in "${NAMES[@]}"; do
  role=${name%%-*}
  index=0
  [[ $name == *-* ]] && index=${name##*-}
  peers=$PEERS
  if [[ -n ${RELAYED[$name]:-} ]]; then
    peers="$TMP/peers-$name.json"
    # shellcheck disable=SC2086 # the overrides are one word each
    write_peers "$peers" ${RELAYED[$name]}
  fi
  ip netns exec "${NS[$name]}" "$NODE" "$BIN" serve "$role" --index "$index" --listen "${ADDR[$name]}:$PORT" --peers "$peers" --token-file "$TOKEN" "${SERVE_ARGS[@]}" \
    </dev/null >"$TMP/$name.ready" &
  PID[$name]=$!
done

deadline=$((SECONDS + READY_TIMEOUT))
for ((r = 0; r < ${#RELAY_PIDS[@]}; r++)); do
  until [[ -s $TMP/relay-$r.ready ]]; do
    kill -0 "${RELAY_PIDS[$r]}" 2>/dev/null || die "a delay relay exited before it was ready (see its log above)"
    ((SECONDS < deadline)) || die "a delay relay was not ready within ${READY_TIMEOUT}s"
    sleep 0.1
  done
done
for name in "${NAMES[@]}"; do
  until [[ -s $TMP/$name.ready ]]; do
    kill -0 "${PID[$name]}" 2>/dev/null || die "$name exited before it was ready (see its log above)"
    ((SECONDS < deadline)) || die "$name did not print its ready line within ${READY_TIMEOUT}s"
    sleep 0.1
  done
  say "ready: $(head -n 1 "$TMP/$name.ready") in ${NS[$name]}"
done

# In the background, so a signal to this script is handled at once (cleanup stops the controller).
"$NODE" "$BIN" "${CMD[@]}" --connect "$PEERS" --token-file "$TOKEN" </dev/null &
CTL_PID=$!
set +e
wait "$CTL_PID"
rc=$?
set -e
CTL_PID=""
exit "$rc"
