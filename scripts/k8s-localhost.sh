#!/usr/bin/env bash
# k8s-localhost.sh - a REAL Kubernetes on this machine, no Docker, no registry, no internet.
#
# kube-apiserver / kube-controller-manager / kube-scheduler / kubelet v1.20.2 are BUILT from Debian bookworm's
# `kubernetes` source package (full upstream tree with vendor/, fetched with `apt-get source`) with Debian's
# golang-go 1.19, then cached in $K8S_BIN_DIR (about 10 min once on 2 cores, 0 s afterwards). etcd 3.4.23 is
# Debian's etcd-server; containerd 1.6 and runc are Debian's.
#
# K8S_MODE=node (what a backend test wants): the node is its own host. The script makes a network namespace
# ($K8S_NETNS) joined to this one by a veth pair (this side $K8S_HOST_IP, the node $K8S_NODE_IP), runs containerd and
# the kubelet inside it (entered with nsenter --net, so cgroup mounts stay visible), and gives pods a real pod network
# there (CNI bridge + host-local IPAM on $K8S_POD_CIDR, routed from this namespace via the node). So pods get real pod
# IPs reachable from here, pods reach services bound on $K8S_HOST_IP here, and `kubectl logs` works (the node has a
# non-loopback InternalIP; with --node-ip=127.0.0.1 the kubelet refuses to publish any address, and pod IPs,
# host IPs and logs are all empty). No kube-proxy and no cluster DNS: use pod IPs, not Services.
# Images: none can be pulled. Two are imported locally: docker.io/local/pause:3.2 (the sandbox) and
# docker.io/local/busybox:1 (Debian's busybox-static). A pod that needs this machine's Python can mount the host's
# / read-only (hostPath) and run `/bin/busybox chroot /host /path/to/python ...` (seen working: http.server in a pod
# answered from this namespace; a pod fetched a URL served on $K8S_HOST_IP). A pod spec must say
# `imagePullPolicy: Never` (or IfNotPresent) for these local images.
# Idempotent; prints "k8s ready" and the kubeconfig path. Stop: k8s-localhost-stop.sh [--purge].
#
# Knobs:
#   K8S_DIR        state, logs, pids, kubeconfig   (default /tmp/k8s-localhost)
#   K8S_BIN_DIR    built binaries cache            (default /var/cache/k8s-localhost/v1.20.2)
#   K8S_MODE       apiserver | control-plane | node (default node; apiserver/control-plane bind 127.0.0.1)
#   K8S_PORT       apiserver port (16443)          ETCD_PORT (23790, on 127.0.0.1)
#   K8S_NETNS (k8s-node)  K8S_HOST_IP (10.213.0.1)  K8S_NODE_IP (10.213.0.2)  K8S_POD_CIDR (10.214.0.0/24)
#   These addresses exist only on the veth pair and bridge this script makes for its own test node.
set -euo pipefail
DIR=${K8S_DIR:-/tmp/k8s-localhost}
BIN=${K8S_BIN_DIR:-/var/cache/k8s-localhost/v1.20.2}
MODE=${K8S_MODE:-node}
PORT=${K8S_PORT:-16443}
EPORT=${ETCD_PORT:-23790}
# node mode: the node is its own host, a network namespace made here, joined to this one by a veth pair
NS=${K8S_NETNS:-k8s-node}
HOST_IP=${K8S_HOST_IP:-10.213.0.1}   # this namespace's end of the veth: apiserver address
NODE_IP=${K8S_NODE_IP:-10.213.0.2}   # the node's address (kubelet, hostNetwork pods)
POD_CIDR=${K8S_POD_CIDR:-10.214.0.0/24}
APISERVER_IP=127.0.0.1; [ "$MODE" = node ] && APISERVER_IP=$HOST_IP
export PATH="/usr/sbin:/usr/bin:/sbin:/bin:$PATH"
log() { printf '[k8s-localhost] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; for f in "$DIR"/log/*.log; do [ -f "$f" ] && { log "--- $f"; tail -n 15 "$f" >&2; }; done; exit 1; }
alive() { local pid; [ -s "$1" ] || return 1; pid=$(cat "$1"); kill -0 "$pid" 2>/dev/null && grep -q "$2" "/proc/$pid/comm" 2>/dev/null; }
start() { # start NAME COMM CMD... : background daemon with pid file and log
  local name=$1 comm=$2; shift 2
  alive "$DIR/pids/$name.pid" "$comm" && return 0
  log "starting $name"
  setsid "$@" </dev/null >"$DIR/log/$name.log" 2>&1 &
  echo $! > "$DIR/pids/$name.pid"
}
apt_install() {
  local tmp_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; tmp_policy=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y --no-install-recommends "$@" >>/tmp/k8s-localhost-apt.log 2>&1 || {
    apt-get -o DPkg::Lock::Timeout=600 update >>/tmp/k8s-localhost-apt.log 2>&1
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y --no-install-recommends "$@" >>/tmp/k8s-localhost-apt.log 2>&1 || { tail -30 /tmp/k8s-localhost-apt.log >&2; exit 1; }; }
  [ "$tmp_policy" = 1 ] && rm -f /usr/sbin/policy-rc.d; return 0
}
[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 1; }
case "$MODE" in apiserver|control-plane|node) ;; *) die "K8S_MODE=$MODE?" ;; esac

# ------------------------------------------------------------ 1. binaries
want=(kube-apiserver); [ "$MODE" != apiserver ] && want+=(kube-controller-manager kube-scheduler)
[ "$MODE" = node ] && want+=(kubelet pause)
missing=(); for b in "${want[@]}"; do [ -x "$BIN/$b" ] || missing+=("$b"); done
if [ ${#missing[@]} -gt 0 ]; then
  log "building ${missing[*]} from Debian's kubernetes source package (several minutes)"
  pk=(); for c in go:golang-go rsync:rsync jq:jq dpkg-source:dpkg-dev make:make gcc:gcc; do command -v "${c%%:*}" >/dev/null || pk+=("${c#*:}"); done
  [ ${#pk[@]} -gt 0 ] && apt_install "${pk[@]}"
  B=$(mktemp -d /tmp/k8s-build.XXXXXX)
  src_list=/etc/apt/sources.list.d/zz-k8s-localhost-src.sources
  printf 'Types: deb-src\nURIs: http://deb.debian.org/debian\nSuites: bookworm\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' > "$src_list"
  apt-get -o DPkg::Lock::Timeout=600 update >>/tmp/k8s-localhost-apt.log 2>&1
  (cd "$B" && apt-get source --download-only kubernetes >>/tmp/k8s-localhost-apt.log 2>&1) || { rm -f "$src_list"; die "apt-get source kubernetes failed"; }
  rm -f "$src_list"; apt-get -o DPkg::Lock::Timeout=600 update >>/tmp/k8s-localhost-apt.log 2>&1 || true
  (cd "$B" && dpkg-source -x ./*.dsc src >/dev/null)
  what=""; for b in "${missing[@]}"; do [ "$b" != pause ] && what="$what cmd/$b"; done
  if [ -n "$what" ]; then
    (cd "$B/src" && mkdir -p .go/src/k8s.io home && ln -sfn ../../.. .go/src/k8s.io/kubernetes &&
     env GOPATH="$B/src/.go" HOME="$B/src/home" CGO_ENABLED=0 GOPROXY=off GOFLAGS=-mod=vendor \
       make WHAT="${what# }" >"$B/build.log" 2>&1) || { tail -30 "$B/build.log" >&2; die "build failed (log in $B)"; }
  fi
  mkdir -p "$BIN"
  for b in "${missing[@]}"; do
    if [ "$b" = pause ]; then gcc -Os -static -o "$BIN/pause" "$B/src/build/pause/linux/pause.c"
    else cp "$B/src/_output/bin/$b" "$BIN/$b"; fi
  done
  rm -rf "$B"
fi
[ -x /usr/bin/etcd ] || apt_install etcd-server
command -v kubectl >/dev/null || apt_install kubernetes-client
if [ "$MODE" = node ]; then
  pk=(); [ -x /usr/bin/containerd ] || pk+=(containerd); command -v runc >/dev/null || pk+=(runc)
  [ -x /bin/busybox ] || pk+=(busybox-static); [ -x /usr/lib/cni/loopback ] || pk+=(containernetworking-plugins)
  [ ${#pk[@]} -gt 0 ] && apt_install "${pk[@]}"
fi

mkdir -p "$DIR"/{pids,log,certs,etcd}
if [ "$MODE" = node ] && ! ip netns exec "$NS" true 2>/dev/null; then
  ip netns add "$NS"
  ip link add vk8s-host type veth peer name vk8s-node
  ip link set vk8s-node netns "$NS"
  ip addr add "$HOST_IP/24" dev vk8s-host; ip link set vk8s-host up
  ip netns exec "$NS" ip addr add "$NODE_IP/24" dev vk8s-node
  ip netns exec "$NS" ip link set vk8s-node up; ip netns exec "$NS" ip link set lo up
  ip netns exec "$NS" sysctl -qw net.ipv4.ip_forward=1
  ip route add "$POD_CIDR" via "$NODE_IP" 2>/dev/null || true
fi
# ------------------------------------------------------------ 2. etcd + apiserver
if [ ! -s "$DIR/certs/sa.key" ]; then
  openssl genrsa -out "$DIR/certs/sa.key" 2048 2>/dev/null
  openssl rsa -in "$DIR/certs/sa.key" -pubout -out "$DIR/certs/sa.pub" 2>/dev/null
  echo "admin-token-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n'),admin,admin,system:masters" > "$DIR/certs/tokens.csv"
fi
TOKEN=$(cut -d, -f1 "$DIR/certs/tokens.csv")
cat > "$DIR/kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: local
  cluster: {server: "https://$APISERVER_IP:$PORT", insecure-skip-tls-verify: true}
users:
- name: admin
  user: {token: "$TOKEN"}
contexts:
- name: local
  context: {cluster: local, user: admin}
current-context: local
EOF
chmod 600 "$DIR/kubeconfig"
start etcd etcd /usr/bin/etcd --name default --data-dir "$DIR/etcd" \
  --listen-client-urls "http://127.0.0.1:$EPORT" --advertise-client-urls "http://127.0.0.1:$EPORT" \
  --listen-peer-urls "http://127.0.0.1:$((EPORT+10))" --initial-advertise-peer-urls "http://127.0.0.1:$((EPORT+10))" \
  --initial-cluster "default=http://127.0.0.1:$((EPORT+10))" --listen-metrics-urls "http://127.0.0.1:$((EPORT+20))"
for _ in $(seq 100); do curl -s "http://127.0.0.1:$EPORT/health" | grep -q true && break; sleep 0.1; done
adm=(); [ "$MODE" = apiserver ] && adm=(--disable-admission-plugins=ServiceAccount)  # no token controller
start kube-apiserver kube-apiserver "$BIN/kube-apiserver" --etcd-servers="http://127.0.0.1:$EPORT" \
  --bind-address="$APISERVER_IP" --advertise-address="$APISERVER_IP" --secure-port="$PORT" --insecure-port=0 \
  --cert-dir="$DIR/certs" --service-cluster-ip-range=10.96.0.0/24 \
  --service-account-issuer=https://kubernetes.default.svc --service-account-key-file="$DIR/certs/sa.pub" \
  --service-account-signing-key-file="$DIR/certs/sa.key" --token-auth-file="$DIR/certs/tokens.csv" \
  --authorization-mode=Node,RBAC --kubelet-preferred-address-types=InternalIP,Hostname "${adm[@]}"
ok=0; for _ in $(seq 600); do
  curl -sk -H "Authorization: Bearer $TOKEN" "https://$APISERVER_IP:$PORT/readyz" 2>/dev/null | grep -q '^ok' && { ok=1; break; }; sleep 0.1; done
[ $ok = 1 ] || die "kube-apiserver not ready after 60 s"

# ------------------------------------------------------------ 3. controllers
if [ "$MODE" != apiserver ]; then
  start kube-controller-manager kube-controller "$BIN/kube-controller-manager" --kubeconfig="$DIR/kubeconfig" \
    --bind-address=127.0.0.1 --secure-port=0 --port=0 --leader-elect=false \
    --service-account-private-key-file="$DIR/certs/sa.key" --root-ca-file="$DIR/certs/apiserver.crt" \
    --controllers='*,-nodeipam,-cloud-node-lifecycle,-route,-service'
  start kube-scheduler kube-scheduler "$BIN/kube-scheduler" --kubeconfig="$DIR/kubeconfig" \
    --bind-address=127.0.0.1 --secure-port=0 --port=0 --leader-elect=false
fi

# ------------------------------------------------------------ 4. node (containerd + kubelet)
if [ "$MODE" = node ]; then
  C="$DIR/containerd"; mkdir -p "$C"/{root,state} "$DIR/cni/net.d" "$DIR/cni/bin" "$DIR/kubelet" "$DIR/img"
  cp /usr/lib/cni/loopback /usr/lib/cni/bridge /usr/lib/cni/host-local /usr/lib/cni/portmap "$DIR/cni/bin/"
  cat > "$DIR/cni/net.d/10-pods.conflist" <<EOF
{"cniVersion": "0.4.0", "name": "pods", "plugins": [
  {"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": false,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "$POD_CIDR"}]], "routes": [{"dst": "0.0.0.0/0"}],
            "dataDir": "$DIR/cni/ipam"}},
  {"type": "portmap", "capabilities": {"portMappings": true}}]}
EOF
  cat > "$C/config.toml" <<EOF
version = 2
root = "$C/root"
state = "$C/state"
[grpc]
  address = "$C/containerd.sock"
[ttrpc]
  address = "$C/containerd.sock.ttrpc"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "docker.io/local/pause:3.2"
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "$DIR/cni/bin"
    conf_dir = "$DIR/cni/net.d"
EOF
  start containerd containerd nsenter --net=/run/netns/"$NS" /usr/bin/containerd --config "$C/config.toml"
  for _ in $(seq 100); do ctr -a "$C/containerd.sock" version >/dev/null 2>&1 && break; sleep 0.1; done
  # local images: pause (built from the k8s tree) and busybox (Debian busybox-static)
  python3 - "$DIR/img" "$BIN/pause" <<'PY'
import hashlib, io, json, os, sys, tarfile
out, pause = sys.argv[1], sys.argv[2]
def image(path, tag, files, cmd):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        for arc, kind, src in files:
            ti = tarfile.TarInfo(arc)
            if kind == "dir": ti.type, ti.mode = tarfile.DIRTYPE, 0o755; t.addfile(ti)
            elif kind == "link": ti.type, ti.linkname = tarfile.SYMTYPE, src; t.addfile(ti)
            elif kind == "text": b = src.encode(); ti.size, ti.mode = len(b), 0o644; t.addfile(ti, io.BytesIO(b))
            else:
                with open(src, "rb") as f: b = f.read()
                ti.size, ti.mode = len(b), 0o755; t.addfile(ti, io.BytesIO(b))
    layer = buf.getvalue()
    cfg = json.dumps({"architecture": "amd64", "os": "linux",
        "config": {"Cmd": cmd, "Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"]},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(layer).hexdigest()]}}).encode()
    ch = hashlib.sha256(cfg).hexdigest() + ".json"
    man = json.dumps([{"Config": ch, "RepoTags": [tag], "Layers": ["layer.tar"]}]).encode()
    with tarfile.open(path, "w") as t:
        for n, b in (("layer.tar", layer), (ch, cfg), ("manifest.json", man)):
            ti = tarfile.TarInfo(n); ti.size = len(b); t.addfile(ti, io.BytesIO(b))
image(os.path.join(out, "pause.tar"), "local/pause:3.2", [("pause", "file", pause)], ["/pause"])
bb = [("bin", "dir", None), ("tmp", "dir", None), ("etc", "dir", None), ("proc", "dir", None),
      ("sys", "dir", None), ("dev", "dir", None), ("bin/busybox", "file", "/bin/busybox"),
      ("etc/passwd", "text", "root:x:0:0:root:/root:/bin/sh\n")]
bb += [("bin/" + c, "link", "busybox") for c in "sh sleep echo cat ls httpd wget id env ps hostname".split()]
image(os.path.join(out, "busybox.tar"), "local/busybox:1", bb, ["/bin/sh"])
PY
  ctr -a "$C/containerd.sock" -n k8s.io images import "$DIR/img/pause.tar" >/dev/null
  ctr -a "$C/containerd.sock" -n k8s.io images import "$DIR/img/busybox.tar" >/dev/null
  NODE=$(hostname)
  start kubelet kubelet nsenter --net=/run/netns/"$NS" "$BIN/kubelet" --kubeconfig="$DIR/kubeconfig" --container-runtime=remote \
    --container-runtime-endpoint="unix://$C/containerd.sock" --root-dir="$DIR/kubelet" --cert-dir="$DIR/kubelet/pki" \
    --hostname-override="$NODE" --node-ip="$NODE_IP" --address="$NODE_IP" --port=10250 --read-only-port=0 \
    --healthz-bind-address=127.0.0.1 --fail-swap-on=false --cgroup-driver=cgroupfs \
    --pod-infra-container-image=docker.io/local/pause:3.2 --eviction-hard= \
    --image-gc-high-threshold=100 --image-gc-low-threshold=99
  ok=0; for _ in $(seq 120); do
    KUBECONFIG="$DIR/kubeconfig" kubectl get node "$NODE" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null | grep -q True && { ok=1; break; }
    sleep 0.5; done
  [ $ok = 1 ] || die "node $NODE not Ready after 60 s"
fi

echo "k8s ready: export KUBECONFIG=$DIR/kubeconfig"
