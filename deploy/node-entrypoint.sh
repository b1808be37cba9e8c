#!/bin/sh
# Entry point of the bgpnet node image: wait for the node address, then run the agent.
#
# containerlab starts the container before it creates the eth1 link and runs the
# topology's exec lines (ip addr add ...), so the node address from the agent config
# appears only later. The agent binds its BGP sessions to that address, so wait for it
# (BGPNET_ADDRESS_WAIT seconds, default 60) instead of letting the agent start without it.
set -eu

config=${BGPNET_CONFIG:-/etc/bgpnet/agent.yaml}
wait_seconds=${BGPNET_ADDRESS_WAIT:-60}

address=$(python3 -c 'import sys
from bgpnet import config
print(config.load_file(sys.argv[1]).node.address)' "$config")

tries=$((wait_seconds * 2))
while ! ip -o addr show | grep -qF " $address/"; do
    tries=$((tries - 1))
    if [ "$tries" -le 0 ]; then
        echo "bgpnet-node: node address $address from $config is not on any interface" \
             "after $wait_seconds s; add it (for example with a containerlab exec line)" >&2
        exit 1
    fi
    sleep 0.5
done

exec bgpnet agent --config "$config" "$@"
