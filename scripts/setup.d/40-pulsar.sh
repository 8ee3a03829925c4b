#!/usr/bin/env bash
# A real Apache Pulsar for the tests (tests/support/real_pulsar.rs): the broker, bookie and
# ZooKeeper jars of Pulsar 4.0.7 from Maven Central (tests/pulsar/pom.xml), and the official
# Python client (PyPI pulsar-client) that tests/pulsar/load.py drives as the load generator.
# Both are cached per user, keyed by a hash of their inputs; locations go to target/test-env.
set -euo pipefail
cd "$(dirname "$0")/../.."

PULSAR_CLIENT_VERSION=3.13.0
cache="${XDG_CACHE_HOME:-$HOME/.cache}/pulsar-autoscaler"
mkdir -p "$cache" target

for tool in java mvn python3; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "40-pulsar: $tool is needed (Java 17 with Maven, Python 3 with pip)" >&2
    exit 1
  fi
done

inputs=$(sha256sum tests/pulsar/pom.xml | cut -c1-12)
lib="$cache/pulsar-jars-$inputs"
if [ -f "$lib/.complete" ]; then
  echo "40-pulsar: reusing $lib"
else
  echo "40-pulsar: resolving Pulsar's jars from Maven Central"
  start=$(date +%s)
  tmp="$lib.tmp.$$"
  rm -rf "$tmp"
  mvn -q -B -f tests/pulsar/pom.xml dependency:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$tmp"
  touch "$tmp/.complete"
  rm -rf "$lib"
  mv "$tmp" "$lib"
  echo "40-pulsar: $(ls "$lib" | wc -l) jars, $(du -sh "$lib" | cut -f1) in $(($(date +%s) - start))s"
fi

client="$cache/pulsar-client-$PULSAR_CLIENT_VERSION"
if [ -d "$client/pulsar" ]; then
  echo "40-pulsar: reusing $client"
else
  echo "40-pulsar: installing pulsar-client $PULSAR_CLIENT_VERSION"
  tmp="$client.tmp.$$"
  rm -rf "$tmp"
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
    --target "$tmp" "pulsar-client==$PULSAR_CLIENT_VERSION"
  rm -rf "$client"
  mv "$tmp" "$client"
fi
PYTHONPATH="$client" python3 -c 'import pulsar; print("40-pulsar: python client", pulsar.__name__, "ok")'
java -version 2>&1 | head -n 1

env_file=target/test-env
touch "$env_file"
grep -v -e '^PULSAR_LIB=' -e '^PULSAR_PYTHONPATH=' "$env_file" >"$env_file.tmp" || true
{
  echo "PULSAR_LIB=$lib"
  echo "PULSAR_PYTHONPATH=$client"
} >>"$env_file.tmp"
mv "$env_file.tmp" "$env_file"
