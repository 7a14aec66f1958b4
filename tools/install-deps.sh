#!/bin/sh
# Installs the Debian packages spruce needs, only those that are missing.
# As root it runs apt-get; otherwise through sudo when available; otherwise it
# prints the command to run and fails.
# libcli11-dev and nlohmann-json3-dev (header-only) are the tools' command-line
# parser and JSON writer.
# libopenmpi-dev and openmpi-bin are optional (Meson option mpi = auto):
# they let one job run as several processes under mpirun. libonnx-dev and
# libprotobuf-dev are optional too (Meson option onnx = auto): the ONNX export
# (spruce-export) writes its files with ONNX's own schema classes and protobuf;
# python3-onnx lets the tests check those files with onnx.checker.
set -eu
packages="g++ meson ninja-build pkg-config libopenblas-dev zlib1g-dev libstb-dev doctest-dev libyaml-cpp-dev libcli11-dev nlohmann-json3-dev dataset-fashion-mnist libopenmpi-dev openmpi-bin libonnx-dev libprotobuf-dev python3-onnx"
missing=""
for p in $packages; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
echo "spruce: installing missing packages:$missing" >&2
if [ "$(id -u)" = 0 ]; then
  sudo=""
elif command -v sudo >/dev/null 2>&1; then
  sudo="sudo"
else
  echo "spruce: please run as root: apt-get update && apt-get install -y$missing" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq $missing
