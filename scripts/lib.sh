#!/usr/bin/env bash
# Helpers shared by the scripts: installing what is missing and starting
# throw-away dependencies on free loopback ports.

step() { printf '\n==> %s\n' "$*"; }

die() {
  printf 'error: %s\n' "$*" >&2
  exit 1
}

ensure_cargo() {
  command -v cargo >/dev/null 2>&1 || die "cargo is not installed: install the Rust toolchain (rustup) first"
}

# ensure_apt_package COMMAND PACKAGE: installs PACKAGE when COMMAND is missing.
apt_updated=""
ensure_apt_package() {
  local command="$1" package="$2"
  command -v "$command" >/dev/null 2>&1 && return 0
  step "installing $package"
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  if [ -z "$apt_updated" ]; then
    $sudo apt-get update -qq
    apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$package" >/dev/null
  command -v "$command" >/dev/null 2>&1 || die "$package installed but $command is still missing"
}

# free_port: prints a TCP port that is free on 127.0.0.1 right now.
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# start_redis DIR: starts a private, non-persistent Redis and prints its URL.
start_redis() {
  local dir="$1" port
  port="$(free_port)"
  redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no \
    --daemonize yes --dir "$dir" --pidfile "$dir/redis.pid" \
    --logfile "$dir/redis.log" >/dev/null
  for _ in $(seq 1 50); do
    if redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null | grep -q PONG; then
      echo "redis://127.0.0.1:$port"
      return 0
    fi
    sleep 0.1
  done
  cat "$dir/redis.log" >&2 || true
  die "Redis did not start on port $port"
}

# stop_pidfile FILE: stops the process whose pid FILE holds, if any: politely
# first, then for good after five seconds.
stop_pidfile() {
  local pidfile="$1" pid
  [ -f "$pidfile" ] || return 0
  pid="$(cat "$pidfile")"
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 50); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  kill -9 "$pid" 2>/dev/null || true
}

# stop_redis DIR: stops the Redis that start_redis started in DIR, if any.
stop_redis() { stop_pidfile "$1/redis.pid"; }

# The MongoDB-wire server for tests. No MongoDB server package is reachable
# from here, so tests use SecantusDB, a MongoDB-compatible server that runs a
# one-node replica set with real transactions. Pinned: its behaviour (error
# codes, labels) is part of what the tests check.
secantus_version="0.7.0b3"

# ensure_secantus: prints the path of a virtualenv holding the pinned
# SecantusDB, creating it under target/ (kept between runs, removed by
# `cargo clean`) the first time. Expects $root, as the scripts set it.
ensure_secantus() {
  local venv="$root/target/secantus-venv"
  if [ -x "$venv/bin/secantusd-py" ] &&
    [ "$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("SecantusDB"))' 2>/dev/null)" = "$secantus_version" ]; then
    echo "$venv"
    return 0
  fi
  step "installing SecantusDB $secantus_version (MongoDB wire server for tests)" >&2
  rm -rf "$venv"
  if ! python3 -m venv "$venv" >/dev/null 2>&1; then
    # Debian splits venv support out of python3.
    rm -rf "$venv"
    local python_minor
    python_minor="$(python3 -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
    ensure_apt_package_quiet "python$python_minor-venv" >&2
    python3 -m venv "$venv" >&2 || die "cannot create a Python virtualenv at $venv"
  fi
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    "SecantusDB==$secantus_version" >&2 || die "cannot install SecantusDB $secantus_version from PyPI"
  [ -x "$venv/bin/secantusd-py" ] || die "SecantusDB installed but secantusd-py is missing"
  echo "$venv"
}

# ensure_apt_package_quiet PACKAGE: installs PACKAGE when dpkg lacks it
# (for packages that ship no command to look for).
ensure_apt_package_quiet() {
  local package="$1"
  dpkg -s "$package" >/dev/null 2>&1 && return 0
  step "installing $package"
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  if [ -z "$apt_updated" ]; then
    $sudo apt-get update -qq
    apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$package" >/dev/null
}

# start_mongo_wire DIR: starts a private, in-memory MongoDB wire server and
# prints its connection string.
start_mongo_wire() {
  local dir="$1" venv port
  venv="$(ensure_secantus)" || exit 1
  port="$(free_port)"
  "$venv/bin/secantusd-py" --host 127.0.0.1 --port "$port" --storage-path ':memory:' \
    >"$dir/mongo-wire.log" 2>&1 &
  echo $! >"$dir/mongo-wire.pid"
  # Python start-up and the replica-set bootstrap take a few seconds.
  for _ in $(seq 1 200); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "mongodb://127.0.0.1:$port/?replicaSet=secantus"
      return 0
    fi
    kill -0 "$(cat "$dir/mongo-wire.pid")" 2>/dev/null || break
    sleep 0.1
  done
  cat "$dir/mongo-wire.log" >&2 || true
  die "the MongoDB wire server (SecantusDB) did not start on port $port"
}

# stop_mongo_wire DIR: stops the server that start_mongo_wire started in DIR, if any.
stop_mongo_wire() { stop_pidfile "$1/mongo-wire.pid"; }
