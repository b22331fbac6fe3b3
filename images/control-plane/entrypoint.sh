#!/bin/sh
# Starts the control plane as the unprivileged `paddock` user. Started as
# root (the default), it first gives `paddock` the data directory (a freshly
# mounted volume is owned by root; a volume written by an image that ran as
# root holds root's files), then drops to it with setpriv
# (util-linux, part of every Debian base). `exec` keeps the control plane
# the process that receives SIGTERM.
set -eu
data_dir="${PADDOCK_DATA_DIR:-/data}"
if [ "$(id -u)" = 0 ]; then
    mkdir -p "$data_dir"
    if [ "$(stat -c %U "$data_dir")" != paddock ]; then
        chown -R paddock:paddock "$data_dir"
    fi
    # With the Docker engine's socket mounted (the docker provider), the
    # control plane also gets the socket's group, and only that one.
    groups=--init-groups
    if [ -S /var/run/docker.sock ]; then
        groups="--groups=$(stat -c %g /var/run/docker.sock)"
    fi
    exec setpriv --reuid=paddock --regid=paddock "$groups" -- \
        /usr/local/bin/control-plane "$@"
fi
exec /usr/local/bin/control-plane "$@"
