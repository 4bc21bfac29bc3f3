# syntax=docker/dockerfile:1
# The flashcsi image: one image for every flashcsi container (node plugin + agent, controller-mode
# plugin, coordinator); the chart picks the role with the first argument (plugin, coordinator, …).
#
#   docker build -t ghcr.io/flashcsi/flashcsi:$(node -p 'require("./package.json").version') .
#
# Base: Node.js 24 LTS ("Krypton") on Debian 12 slim, pinned to a patch release. Debian 12 is the
# distribution the test suite runs on, so the image gets the same nbd-client/libnbd/e2fsprogs
# versions the data path is tested with. (Pin by digest too where a registry is reachable:
# docker buildx imagetools inspect node:24.22.3-bookworm-slim.)
#
# Layer order: what changes least comes first, so a source change rebuilds only the TypeScript
# compile and the small layers that copy its output (dist/), never apt-get or an npm install.
ARG NODE_IMAGE=node:24.22.3-bookworm-slim

# ---- build: compile TypeScript --------------------------------------------------------------
FROM ${NODE_IMAGE} AS build
WORKDIR /app
ENV NODE_ENV=development
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json ./
COPY cmd ./cmd
COPY src ./src
COPY proto ./proto
RUN npm run build

# ---- runtime -------------------------------------------------------------------------------
FROM ${NODE_IMAGE} AS runtime
# The data path's tools: libnl-genl-3-200 (the plugin attaches kernel NBD devices through netlink
# with it), nbd-client (to inspect or detach nbd devices by hand), libnbd-bin (nbdfuse, the fallback
# without the nbd module), fuse3 (fusermount3), e2fsprogs and xfsprogs (mkfs, fsck, resize2fs, xfs_growfs),
# util-linux and mount (losetup, blockdev, mount, umount), kmod (modprobe nbd).
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      libnl-genl-3-200 nbd-client libnbd-bin fuse3 e2fsprogs xfsprogs util-linux mount kmod ca-certificates tini \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
ENV NODE_ENV=production
# The production dependencies, installed from the lock file alone (a source change keeps this layer).
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund \
 && rm -rf /root/.npm
COPY proto ./proto
COPY --from=build /app/dist/cmd ./dist/cmd
COPY --from=build /app/dist/src ./dist/src
# Non-root by default (the image's "node" user, uid 1000): the coordinator and the controller-mode
# plugin run as it. Only the node DaemonSet's flashcsi container overrides this to root + privileged.
USER node
# tini as PID 1 reaps the orphaned data-path processes of a restarted plugin (see cmd/supervise-cli.ts).
ENTRYPOINT ["tini", "--", "node", "/app/dist/cmd/flashcsi.js"]
CMD ["--help"]
# Last, so that a version bump rebuilds no layer above.
ARG NODE_IMAGE
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="flashcsi" \
      org.opencontainers.image.description="Kubernetes CSI driver with O(1) copy-on-write checkpoints, in-place rollback and multi-volume transactions" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/flashcsi/flashcsi" \
      org.opencontainers.image.base.name="${NODE_IMAGE}"
