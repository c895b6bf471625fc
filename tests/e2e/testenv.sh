#!/usr/bin/env bash
# The end-to-end test environment: a real kube-apiserver (Kubernetes 1.20, built
# from Debian bookworm's `kubernetes` source package) and Debian's etcd, both on
# loopback, in the manner of controller-runtime's envtest. The suite's kubectl is
# built from the same source (the machine's own kubectl, if any, is never used), and
# so is a kube-controller-manager that runs three controllers: clusterrole-aggregation
# (the built-in view/edit/admin roles gather the chart's aggregated ClusterRoles),
# garbagecollector (ownerReferences and the propagation policies of a deletion:
# orphan, background, foreground) and resourcequota (a quota's usage, so that the
# API server can refuse a create over it, as in a real cluster).
#
#   testenv.sh install   apt packages (idempotent)
#   testenv.sh build     build kube-apiserver, kubectl and kube-controller-manager into the
#                        cache (once per machine; only the missing ones)
#   testenv.sh up        start etcd, kube-apiserver and the controller-manager, print the
#                        kubeconfig path
#   testenv.sh env       print export lines (KUBECONFIG, E2E_*) for eval
#   testenv.sh kubectl   print the path of the suite's kubectl (building it if needed)
#   testenv.sh down      stop them (by recorded PID) and remove the state
#
# Cache: $AMPERITY_E2E_CACHE (default /var/cache/amperity-operator-e2e).
# State: $AMPERITY_E2E_DIR (default /tmp/amperity-e2e).
# Ports: $AMPERITY_E2E_PORT (kube-apiserver, default 6443) and $AMPERITY_E2E_ETCD_PORT
# (etcd clients, default 2379; peers use the next port), so that two environments
# (two checkouts) can run side by side with different state directories.
set -euo pipefail

CACHE=${AMPERITY_E2E_CACHE:-/var/cache/amperity-operator-e2e}
STATE=${AMPERITY_E2E_DIR:-/tmp/amperity-e2e}
APISERVER=$CACHE/bin/kube-apiserver
KUBECTL=$CACHE/bin/kubectl
CONTROLLER_MANAGER=$CACHE/bin/kube-controller-manager
K8S_VERSION_PKG="1.20.5+really1.20.2-1.1+deb12u1"
PORT=${AMPERITY_E2E_PORT:-6443}
ETCD_PORT=${AMPERITY_E2E_ETCD_PORT:-2379}
ETCD_PEER_PORT=$((ETCD_PORT + 1))

die() { echo "testenv: $*" >&2; exit 1; }
log() { echo "testenv: $*" >&2; }

install() {
  local need=()
  command -v etcd >/dev/null || need+=(etcd-server)
  command -v openssl >/dev/null || need+=(openssl)
  # The Argo CD health checks are tested under both (Argo CD runs Lua 5.1).
  command -v lua5.1 >/dev/null || need+=(lua5.1)
  command -v lua5.4 >/dev/null || need+=(lua5.4)
  command -v curl >/dev/null || need+=(curl)
  # promtool checks and unit-tests the chart's alerting rules (the chart tests).
  command -v promtool >/dev/null || need+=(prometheus)
  if [ ! -x "$APISERVER" ] || [ ! -x "$KUBECTL" ] || [ ! -x "$CONTROLLER_MANAGER" ]; then
    [ -x /usr/lib/go-1.19/bin/go ] || need+=(golang-1.19-go)
    command -v dpkg-source >/dev/null || need+=(dpkg-dev)
    [ -d /usr/share/gocode/src/github.com/modern-go/reflect2 ] || need+=(golang-github-modern-go-reflect2-dev)
  fi
  [ ${#need[@]} -eq 0 ] && return 0
  log "installing ${need[*]}"
  # etcd-server's and prometheus's packages would start system services (etcd on 2379,
  # prometheus on 9090): forbid service starts.
  local policy=/usr/sbin/policy-rc.d created_policy=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy"; chmod +x "$policy"; created_policy=1
  fi
  apt-get update -qq >/dev/null || die "apt-get update failed"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null \
    || die "apt-get install ${need[*]} failed"
  [ "$created_policy" = 1 ] && rm -f "$policy"
  # If a system etcd got started anyway, it must not hold our ports.
  if command -v systemctl >/dev/null 2>&1; then systemctl stop etcd prometheus >/dev/null 2>&1 || true; fi
  return 0
}

add_deb_src() {
  local list=/etc/apt/sources.list.d/amperity-e2e-src.sources
  [ -f "$list" ] && return 0
  # Mirror apt's own Debian entry (same URIs), for source packages only.
  local uri
  uri=$(awk '/^URIs:/ && $2 ~ /debian\/?$/ {print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
  [ -n "$uri" ] || uri=$(awk '/^deb / && $0 ~ /debian\/? / {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
  [ -n "$uri" ] || die "cannot find apt's Debian entry to mirror for deb-src"
  printf 'Types: deb-src\nURIs: %s\nSuites: bookworm\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' "$uri" > "$list"
  apt-get update -qq >/dev/null || die "apt-get update (deb-src) failed"
}

build() {
  local missing=()
  [ -x "$APISERVER" ] || missing+=(kube-apiserver)
  [ -x "$KUBECTL" ] || missing+=(kubectl)
  [ -x "$CONTROLLER_MANAGER" ] || missing+=(kube-controller-manager)
  [ ${#missing[@]} -eq 0 ] && { log "kube-apiserver, kubectl and kube-controller-manager cached in $CACHE/bin"; return 0; }
  install
  add_deb_src
  mkdir -p "$CACHE/bin"
  # A work tree of its own, so that builds started from two checkouts at once cannot
  # delete each other's tree (each binary is moved into place whole).
  local work
  work=$(mktemp -d "$CACHE/build.XXXXXX")
  trap 'rm -rf "'"$work"'"' EXIT
  local logf=$work.log
  mkdir -p "$work/src"
  log "fetching the kubernetes source package (log: $logf)"
  ( cd "$work/src" && apt-get source -qq --download-only "kubernetes=$K8S_VERSION_PKG" ) >"$logf" 2>&1 \
    || { tail -20 "$logf" >&2; die "apt-get source kubernetes failed"; }
  ( cd "$work/src" && dpkg-source --no-check -x ./*.dsc tree ) >>"$logf" 2>&1 \
    || { tail -20 "$logf" >&2; die "unpacking the source package failed"; }
  local gopath=$work/gopath
  mkdir -p "$gopath/src/k8s.io"
  mv "$work/src/tree" "$gopath/src/k8s.io/kubernetes"
  local tree=$gopath/src/k8s.io/kubernetes
  # reflect2 1.0.1 crashes under Go >= 1.18: use Debian's 1.0.2.
  rm -rf "$tree/vendor/github.com/modern-go/reflect2"
  cp -r /usr/share/gocode/src/github.com/modern-go/reflect2 "$tree/vendor/github.com/modern-go/reflect2"
  rm -f "$tree/vendor/github.com/modern-go/reflect2/go.mod"
  export GOPATH=$gopath GO111MODULE=off CGO_ENABLED=0 GOFLAGS= GOCACHE=$CACHE/gocache
  local go=/usr/lib/go-1.19/bin/go
  if [ ! -x "$APISERVER" ]; then
    log "generating the OpenAPI definitions"
    (
      cd "$tree"
      "$go" build -o "$work/openapi-gen" k8s.io/kubernetes/vendor/k8s.io/kube-openapi/cmd/openapi-gen
      # Every package tagged +k8s:openapi-gen=, staging ones by their vendor/ path.
      pkgs=$(grep -rl --include='*.go' --exclude='*_test.go' -e '+k8s:openapi-gen=' pkg staging/src vendor/k8s.io 2>/dev/null \
        | xargs -n1 dirname | sort -u \
        | sed -e 's#^staging/src/#k8s.io/kubernetes/vendor/#' -e 's#^vendor/#k8s.io/kubernetes/vendor/#' -e 's#^pkg/#k8s.io/kubernetes/pkg/#' \
        | sort -u | paste -sd, -)
      "$work/openapi-gen" --input-dirs "$pkgs" \
        --output-package k8s.io/kubernetes/pkg/generated/openapi \
        --output-base "$gopath/src" \
        --go-header-file hack/boilerplate/boilerplate.generatego.txt \
        -O zz_generated.openapi \
        --report-filename /dev/null
    ) >>"$logf" 2>&1 || { tail -30 "$logf" >&2; die "openapi-gen failed"; }
    log "building kube-apiserver (a few minutes on 2 cores)"
    ( cd "$tree" && nice "$go" build -o "$APISERVER.tmp.$$" k8s.io/kubernetes/cmd/kube-apiserver ) >>"$logf" 2>&1 \
      || { tail -30 "$logf" >&2; die "building kube-apiserver failed"; }
    mv "$APISERVER.tmp.$$" "$APISERVER"
  fi
  if [ ! -x "$KUBECTL" ]; then
    log "building kubectl"
    ( cd "$tree" && nice "$go" build -o "$KUBECTL.tmp.$$" k8s.io/kubernetes/cmd/kubectl ) >>"$logf" 2>&1 \
      || { tail -30 "$logf" >&2; die "building kubectl failed"; }
    mv "$KUBECTL.tmp.$$" "$KUBECTL"
  fi
  if [ ! -x "$CONTROLLER_MANAGER" ]; then
    log "building kube-controller-manager (a few minutes on 2 cores)"
    ( cd "$tree" && nice "$go" build -o "$CONTROLLER_MANAGER.tmp.$$" k8s.io/kubernetes/cmd/kube-controller-manager ) >>"$logf" 2>&1 \
      || { tail -30 "$logf" >&2; die "building kube-controller-manager failed"; }
    mv "$CONTROLLER_MANAGER.tmp.$$" "$CONTROLLER_MANAGER"
  fi
  rm -rf "$work" "$logf"
  log "built ${missing[*]} into $CACHE/bin"
}

healthy() {
  [ -f "$STATE/admin-token" ] || return 1
  curl -fsS --max-time 2 --cacert "$STATE/pki/ca.crt" \
    -H "Authorization: Bearer $(cat "$STATE/admin-token")" "https://127.0.0.1:$PORT/readyz" >/dev/null 2>&1
}

up() {
  if healthy && kill -0 "$(cat "$STATE/controller-manager.pid" 2>/dev/null)" 2>/dev/null; then
    echo "$STATE/kubeconfig"; return 0
  fi
  down >/dev/null 2>&1 || true
  install
  build
  mkdir -p "$STATE/pki" "$STATE/etcd"
  local pki=$STATE/pki
  openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=amperity-e2e-ca" \
    -keyout "$pki/ca.key" -out "$pki/ca.crt" >/dev/null 2>&1
  openssl req -newkey rsa:2048 -nodes -subj "/CN=kube-apiserver" \
    -keyout "$pki/server.key" -out "$pki/server.csr" >/dev/null 2>&1
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' > "$pki/san.ext"
  openssl x509 -req -in "$pki/server.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial \
    -days 30 -extfile "$pki/san.ext" -out "$pki/server.crt" >/dev/null 2>&1
  openssl genrsa -out "$pki/sa.key" 2048 >/dev/null 2>&1
  openssl rsa -in "$pki/sa.key" -pubout -out "$pki/sa.pub" >/dev/null 2>&1
  local token; token=$(openssl rand -hex 24)
  echo "$token" > "$STATE/admin-token"
  # The admin, and users with no group that scenarios bind to roles (e2e-editor,
  # e2e-viewer): each a line "token,user,uid[,groups]".
  {
    echo "$token,admin,admin,system:masters"
    local user
    for user in e2e-editor e2e-viewer; do echo "$(openssl rand -hex 24),$user,$user"; done
  } > "$STATE/tokens.csv"

  etcd --name e2e --data-dir "$STATE/etcd" \
    --listen-client-urls http://127.0.0.1:$ETCD_PORT --advertise-client-urls http://127.0.0.1:$ETCD_PORT \
    --listen-peer-urls http://127.0.0.1:$ETCD_PEER_PORT --initial-advertise-peer-urls http://127.0.0.1:$ETCD_PEER_PORT \
    --initial-cluster e2e=http://127.0.0.1:$ETCD_PEER_PORT >"$STATE/etcd.log" 2>&1 &
  echo $! > "$STATE/etcd.pid"

  "$APISERVER" --bind-address=127.0.0.1 --secure-port=$PORT --insecure-port=0 \
    --etcd-servers=http://127.0.0.1:$ETCD_PORT \
    --tls-cert-file="$pki/server.crt" --tls-private-key-file="$pki/server.key" \
    --client-ca-file="$pki/ca.crt" --token-auth-file="$STATE/tokens.csv" \
    --authorization-mode=RBAC \
    --service-account-key-file="$pki/sa.pub" --service-account-signing-key-file="$pki/sa.key" \
    --service-account-issuer=https://kubernetes.default.svc --api-audiences=https://kubernetes.default.svc \
    --service-cluster-ip-range=10.0.0.0/24 --endpoint-reconciler-type=none \
    --disable-admission-plugins=ServiceAccount >"$STATE/apiserver.log" 2>&1 &
  echo $! > "$STATE/apiserver.pid"

  local i ready=
  for i in $(seq 1 120); do
    if healthy; then ready=1; break; fi
    if ! kill -0 "$(cat "$STATE/apiserver.pid")" 2>/dev/null; then
      tail -30 "$STATE/apiserver.log" >&2; die "kube-apiserver exited"
    fi
    sleep 0.5
  done
  # Decided by the loop's own look: a second one can fail where the first passed
  # (a request timing out on a loaded machine), and fail the run for nothing.
  [ -n "$ready" ] || { tail -30 "$STATE/apiserver.log" >&2; die "kube-apiserver not ready after 60s"; }

  cat > "$STATE/kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: e2e
  cluster:
    server: https://127.0.0.1:$PORT
    certificate-authority: $pki/ca.crt
users:
- name: admin
  user:
    token: $token
contexts:
- name: e2e
  context: {cluster: e2e, user: admin}
current-context: e2e
EOF

  : > "$STATE/controller-manager.log"
  start_controller_manager
  # The built-in edit role has no rules until the controller aggregates them. Its
  # first try can lose a race with the API server's own bootstrap of that role (a
  # conflict it does not always retry): touching a role it aggregates makes it look
  # again, and when even that is not enough (seen on a loaded machine), a new
  # controller-manager starts from a fresh look at every role.
  local filled=
  for i in $(seq 1 120); do
    if aggregated; then filled=1; break; fi
    if ! kill -0 "$(cat "$STATE/controller-manager.pid")" 2>/dev/null; then
      tail -30 "$STATE/controller-manager.log" >&2; die "kube-controller-manager exited"
    fi
    [ $((i % 10)) = 0 ] && nudge_aggregation "$i"
    if [ $((i % 40)) = 0 ]; then
      log "the edit ClusterRole is not aggregated yet: restarting kube-controller-manager"
      kill "$(cat "$STATE/controller-manager.pid")" 2>/dev/null || true
      sleep 1
      start_controller_manager
    fi
    sleep 0.5
  done
  [ -n "$filled" ] || { tail -30 "$STATE/controller-manager.log" >&2; die "the edit ClusterRole was not aggregated after 60s"; }
  echo "$STATE/kubeconfig"
}

# The clusterrole-aggregation, garbage-collector and resource-quota controllers, as
# the admin, serving nothing (no ports, so environments side by side cannot collide).
# Quotas are recounted every 10 s (not 5 min): a quota on a CRD's objects gets its
# usage soon after the CRD is discovered (every 30 s).
start_controller_manager() {
  "$CONTROLLER_MANAGER" --kubeconfig="$STATE/kubeconfig" \
    --controllers=clusterrole-aggregation,garbagecollector,resourcequota \
    --resource-quota-sync-period=10s \
    --leader-elect=false --bind-address=127.0.0.1 --port=0 --secure-port=0 \
    >>"$STATE/controller-manager.log" 2>&1 &
  echo $! > "$STATE/controller-manager.pid"
}

# Changes an annotation of a role the edit role aggregates, so that the
# aggregation controller reconciles edit again.
nudge_aggregation() {
  curl -fsS --max-time 2 --cacert "$STATE/pki/ca.crt" -X PATCH \
    -H "Authorization: Bearer $(cat "$STATE/admin-token")" \
    -H "Content-Type: application/merge-patch+json" \
    --data "{\"metadata\":{\"annotations\":{\"amperity.dev/e2e-nudge\":\"$1\"}}}" \
    "https://127.0.0.1:$PORT/apis/rbac.authorization.k8s.io/v1/clusterroles/system:aggregate-to-edit" >/dev/null 2>&1 || true
}

# True once the clusterrole-aggregation controller filled the built-in edit role.
aggregated() {
  curl -fsS --max-time 2 --cacert "$STATE/pki/ca.crt" \
    -H "Authorization: Bearer $(cat "$STATE/admin-token")" \
    "https://127.0.0.1:$PORT/apis/rbac.authorization.k8s.io/v1/clusterroles/edit" 2>/dev/null \
    | grep -q '"verbs"'
}

down() {
  local f
  for f in controller-manager apiserver etcd; do
    if [ -f "$STATE/$f.pid" ]; then
      local pid; pid=$(cat "$STATE/$f.pid")
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
      kill -9 "$pid" 2>/dev/null || true
    fi
  done
  rm -rf "$STATE"
}

env_lines() {
  [ -f "$STATE/kubeconfig" ] || die "not up: run $0 up"
  echo "export KUBECONFIG=$STATE/kubeconfig"
  echo "export E2E_ADMIN_TOKEN=$(cat "$STATE/admin-token")"
  echo "export E2E_CA_FILE=$STATE/pki/ca.crt"
  echo "export E2E_APISERVER_URL=https://127.0.0.1:$PORT"
  echo "export E2E_KUBECTL=$KUBECTL"
}

case "${1:-}" in
  install) install ;;
  build) build ;;
  up) up ;;
  down) down ;;
  env) env_lines ;;
  kubectl) build >&2; echo "$KUBECTL" ;;
  *) echo "usage: $0 install|build|up|down|env|kubectl" >&2; exit 2 ;;
esac
