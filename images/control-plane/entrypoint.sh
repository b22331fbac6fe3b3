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
    exec setpriv --reuid=paddock --regid=paddock --init-groups -- \
        /usr/local/bin/control-plane "$@"
fi
exec /usr/local/bin/control-plane "$@"
