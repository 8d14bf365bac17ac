#!/usr/bin/env bash
# Stands in for `nft` on rampart's PATH during one `rampart reload` / `status` at 10k
# rules: runs the real nft ($NFT_REAL) unchanged and appends how long the call took to
# $NFT_SHIM_LOG, so the report can say where rampart's time goes.
set -uo pipefail
start=$EPOCHREALTIME
"$NFT_REAL" "$@"
rc=$?
end=$EPOCHREALTIME
printf '%s\tnft %s\n' "$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.3f", b - a }')" \
    "$*" >>"$NFT_SHIM_LOG"
exit $rc
