#!/usr/bin/env bash
# `npm run start:plugin`: the flashcsi CSI plugin alone, on embedded defaults, to drive CSI by hand
# (README "Drive it with grpcurl"):
#   flashcsi plugin --mode all
#     CSI socket               ./.local/csi.sock
#     SnapshotMetadata socket  ./.local/metadata.sock
#     state (volumes, run/ sockets, stage records, logs)   ./.local/state
#     node id                  this host's name
# Override the directory with FLASHCSI_STATE, the node id with NODE_ID. Ctrl-C (SIGINT) or SIGTERM
# drains the plugin; volumes staged meanwhile keep running and are adopted by the next start.
set -euo pipefail
cd "$(dirname "$0")/.."
npm run build >/dev/null
local_dir=${FLASHCSI_STATE:-$PWD/.local}
mkdir -p "$local_dir" && chmod 700 "$local_dir"
node_id=${NODE_ID:-$(hostname)}
echo "flashcsi plugin: CSI socket $local_dir/csi.sock, SnapshotMetadata $local_dir/metadata.sock, state $local_dir/state, node $node_id (Ctrl-C to stop)" >&2
exec node dist/cmd/flashcsi.js plugin --mode all \
  --endpoint "unix://$local_dir/csi.sock" \
  --snapshot-metadata-endpoint "unix://$local_dir/metadata.sock" \
  --state-dir "$local_dir/state" \
  --node-id "$node_id"
