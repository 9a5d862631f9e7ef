#!/usr/bin/env bash
# Run once by docker-compose.cluster.yml's `rabbitmq-cluster` service: wait until the three
# nodes form one cluster, then give every quorum queue a replica on each node.
set -euo pipefail
nodes=(rabbit@rabbitmq rabbit@rabbitmq2 rabbit@rabbitmq3)

for _ in $(seq 1 60); do
  running=$(rabbitmqctl -q -n "${nodes[0]}" eval \
    'length(rabbit_nodes:all_running()).' 2>/dev/null || echo 0)
  [ "$running" = "${#nodes[@]}" ] && break
  sleep 2
done
if [ "$running" != "${#nodes[@]}" ]; then
  echo "the cluster did not form: ${running} of ${#nodes[@]} nodes running" >&2
  exit 1
fi

for node in "${nodes[@]}"; do
  # `grow` adds a member on $node to every quorum queue of every vhost that lacks one there.
  rabbitmq-queues -q -n "${nodes[0]}" grow "$node" all
done
rabbitmqctl -q -n "${nodes[0]}" list_queues name type members
