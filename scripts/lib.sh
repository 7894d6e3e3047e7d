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

# stop_redis DIR: stops the Redis that start_redis started in DIR, if any.
stop_redis() {
  local pidfile="$1/redis.pid"
  [ -f "$pidfile" ] || return 0
  kill "$(cat "$pidfile")" 2>/dev/null || true
  for _ in $(seq 1 50); do
    kill -0 "$(cat "$pidfile" 2>/dev/null)" 2>/dev/null || return 0
    sleep 0.1
  done
}
