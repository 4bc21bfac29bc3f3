#!/usr/bin/env bash
# `npm start`: a one-node Kubernetes cluster of real processes on this machine (etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler, the snapshot-controller, containerd + runc, a kubelet in
# its own network and mount namespace) with flashcsi installed by its Helm chart; prints the
# KUBECONFIG line and the first kubectl commands. Ctrl-C (or SIGTERM) removes every pod, stops
# everything and leaves nothing behind. Run as root. The plugin alone: `npm run start:plugin`.
set -euo pipefail
cd "$(dirname "$0")/.."
npm run build >/dev/null
exec node dist/test/cluster/up.js "$@"
