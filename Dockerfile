# Latchkey's container image. Build:  docker build -t latchkey .   (or: podman build / buildah bud)
#
# Build and runtime stages start from the same node:24-bookworm-slim, so the native bcrypt module
# built or fetched in one runs against the same glibc in the other. The base is pinned by digest
# (the multi-platform index of node:24-bookworm-slim with Node 24.18.0), so a rebuild gets the same
# base until the pin is moved on purpose: look the new digest up with
# `docker buildx imagetools inspect node:24-bookworm-slim` (or `skopeo inspect`, `crane digest`)
# and replace it here, or let Renovate/Dependabot's docker updater do it. `--build-arg NODE_IMAGE=…`
# overrides it (the deploy tests build on a local stand-in, test/deploy/setup.sh).
ARG NODE_IMAGE=docker.io/library/node:24-bookworm-slim@sha256:6f7b03f7c2c8e2e784dcf9295400527b9b1270fd37b7e9a7285cf83b6951452d

# --- build: every dependency, generated code, TypeScript compiled into dist/ ---------------------
FROM ${NODE_IMAGE} AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY buf.yaml buf.gen.yaml tsconfig.json tsconfig.build.json ./
COPY proto ./proto
# Copies Envoy's ext_authz protos out of the @grpc/grpc-js-xds devDependency for `buf generate`.
COPY scripts/envoy-protos.mjs ./scripts/
COPY src ./src
RUN npm run build

# --- production dependencies only ------------------------------------------------------------------
FROM ${NODE_IMAGE} AS dependencies
# tini, to run as PID 1 in the final image: it forwards SIGTERM to Node (which drains and exits 0)
# and reaps zombies. The static build is copied, so the final stage needs no RUN step at all.
RUN apt-get update \
 && apt-get install -y --no-install-recommends tini \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY package.json package-lock.json ./
# Then what Node never loads at run time: TypeScript sources and declarations (`*.ts`, `*.d.ts`,
# `*.mts`, `*.cts`), source maps, Markdown, each package's own test folder, and @types. About half
# of what `npm ci --omit=dev` installs (48 MB to 20 MB); LICENSE files stay. PGlite and
# google-proto-files are development dependencies, so they are not installed here at all.
RUN npm ci --omit=dev --no-audit --no-fund && npm cache clean --force \
 && find node_modules -type f \( -name '*.ts' -o -name '*.mts' -o -name '*.cts' -o -name '*.map' -o -name '*.md' \) -delete \
 && find node_modules -type d \( -name test -o -name tests -o -name __tests__ \) -prune \
      -exec sh -c 'for dir; do if [ -f "$dir/../package.json" ]; then rm -rf "$dir"; fi; done' sh {} + \
 && rm -rf node_modules/@types
# The common-password list is read from one file (src/domain/passwords/policy.ts); its package's
# sources and browser bundle are not needed at run time (about 0.9 MB).
RUN rm -rf node_modules/@zxcvbn-ts/language-common/src node_modules/@zxcvbn-ts/language-common/dist/zxcvbn-ts.js*

# --- runtime ---------------------------------------------------------------------------------------
FROM ${NODE_IMAGE}
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG SOURCE=""
LABEL org.opencontainers.image.title="latchkey" \
      org.opencontainers.image.description="gRPC authentication and session service for internal service meshes" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"

ENV NODE_ENV=production
# V8's heap, sized for this service (live data stays near 40 MB under load): a 16 MB young
# generation keeps short-lived per-call objects from being promoted, and the old generation is
# collected before it passes 128 MB. Without them V8 sizes the heap from the node's memory and
# lets the RSS grow past 400 MB under load, or, in a small container, picks a young generation
# so small that throughput drops by a half. `npm run bench` runs the server with these flags.
ENV NODE_OPTIONS="--max-semi-space-size=16 --max-old-space-size=128"
WORKDIR /app
# Owned by root and read-only to the runtime user: the process cannot rewrite its own code.
COPY --from=dependencies /usr/bin/tini-static /usr/bin/tini
COPY --from=dependencies /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
# Read at run time for server reflection.
COPY proto ./proto
COPY package.json ./

# The official image's `node` user, by number so that Kubernetes' runAsNonRoot can verify it.
USER 1000:1000
# gRPC (GRPC_PORT) and HTTP probes, metrics and JWKS (HTTP_PORT).
EXPOSE 50051 8080
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["node", "dist/main.js", "serve"]
