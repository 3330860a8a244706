#!/usr/bin/env bash
# Two "nodes" on one machine: two launcher invocations with --num_nodes 2 --node_rank 0|1
# --no_ssh (one rank each, gloo on CPU) train together, exercising the rank / local-rank /
# world-size logic of a real multi-node job.
#   scripts/two_nodes.sh --config configs/synthetic.yaml data.dir=... run.out_dir=...
set -euo pipefail
cd "$(dirname "$0")/.."
hostfile=$(mktemp)
trap 'rm -f "$hostfile"' EXIT
printf 'node0 slots=1\nnode1 slots=1\n' >"$hostfile"
port=${MASTER_PORT:-29617}
launch() {
    "${VENV:-.venv}/bin/deepspeed" --hostfile "$hostfile" --num_nodes 2 --num_gpus 1 \
        --node_rank "$1" --master_addr 127.0.0.1 --master_port "$port" --no_ssh \
        launch/train.py "${@:2}"
}
launch 1 "$@" >/dev/null &  # node 1's errors still reach stderr
other=$!
node0=0
launch 0 "$@" || node0=$?
node1=0
wait "$other" || node1=$?  # always collected, whatever node 0 did
exit $((node0 ? node0 : node1))
