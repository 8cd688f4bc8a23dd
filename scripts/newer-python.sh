#!/usr/bin/env bash
# Build the newest CPython 3.13 patch release that Debian serves (the upstream
# tarball inside forky's python3.13 source package) into
# ~/.cache/thunderhelm/cpython-<version>, so CI can test on it besides the
# pyenv 3.13.0. Prints the interpreter's path as the last stdout line.
# Exit 3 (not 1) when the source is not served or the build fails, so that the
# caller can carry on with 3.13.0 alone. Safe to run again: a working build is
# reused without touching the network.
set -euo pipefail

cache="$HOME/.cache/thunderhelm"
log="$cache/newer-python.log"
work="$cache/newer-python-work"
mkdir -p "$cache"

say() { echo "newer-python: $*" >&2; }
skip() { say "$1; testing on 3.13.0 only"; exit 3; }
# apt's first error line, to say in one line why the source was not fetched.
apt_error() { grep -m1 '^E: ' "$log" | cut -c4-160 || echo "apt-get failed"; }
# The modules the test run needs (pip needs ssl); a build missing one is no use.
works() { "$1" -c 'import ssl, ctypes, sqlite3, lzma, bz2, zlib, _interpreters' >/dev/null 2>&1; }

# One build at a time: CI and a developer may start this together.
exec 9>"$cache/newer-python.lock"
flock 9

# Reuse the newest cached build that works; the version is only known from the
# downloaded source, so look at every cpython-3.13.N already built.
for dir in $(ls -d "$cache"/cpython-3.13.* 2>/dev/null | sort -V -r); do
  if works "$dir/bin/python3.13"; then
    echo "$dir/bin/python3.13"
    exit 0
  fi
done

# A fresh log for each build attempt.
: >"$log"

# Build dependencies for the modules above (and readline, curses, uuid, gdbm),
# from the system's own apt sources; its lists are updated only if the install
# fails without.
deps=(build-essential pkg-config xz-utils libssl-dev zlib1g-dev libffi-dev libsqlite3-dev
      libbz2-dev liblzma-dev libreadline-dev libncurses-dev uuid-dev libgdbm-dev)
missing=()
for p in "${deps[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing build deps: ${missing[*]}"
  { apt-get install -y "${missing[@]}" || { apt-get update && apt-get install -y "${missing[@]}"; }; } \
    >>"$log" 2>&1 || say "could not install ${missing[*]} (see $log); trying anyway"
fi

# Fetch the source with apt's own private sources list, lists and cache, so the
# system's apt state stays as it is.
rm -rf "$work"
mkdir -p "$work/apt/lists/partial" "$work/apt/cache/archives/partial" "$work/src"
echo 'deb-src http://deb.debian.org/debian forky main' >"$work/apt/sources.list"
apt=(-o Dir::Etc::SourceList="$work/apt/sources.list" -o Dir::Etc::SourceParts=/dev/null
     -o Dir::State::Lists="$work/apt/lists" -o Dir::Cache="$work/apt/cache"
     -o APT::Sandbox::User=root -o APT::Update::Error-Mode=any)
say "downloading forky's python3.13 source (log: $log)"
apt-get "${apt[@]}" update >>"$log" 2>&1 \
  || skip "CPython 3.13 source not served here ($(apt_error); see $log)"
(cd "$work/src" && apt-get "${apt[@]}" source --download-only python3.13) >>"$log" 2>&1 \
  || skip "CPython 3.13 source not served here ($(apt_error); see $log)"

# python3.13_3.13.15.orig.tar.xz is the upstream release tarball; its name
# gives the version (Debian's own patches are in the .debian.tar.xz, unused).
orig=$(ls "$work/src"/python3.13_*.orig.tar.* 2>/dev/null | head -n1 || true)
version=$(basename "${orig:-none}" | sed -n 's/^python3\.13_\(3\.13\.[0-9]*\)\.orig\.tar\..*$/\1/p')
[ -n "$version" ] || skip "CPython 3.13 source not served here (no 3.13.N orig tarball in ${orig:-the download})"
prefix="$cache/cpython-$version"

start=$SECONDS
say "building CPython $version into $prefix (about 6 min on 2 cores)"
build() {
  tar -xf "$orig" -C "$work/src" &&
  cd "$work/src/Python-$version" &&
  ./configure --prefix="$prefix" &&
  make -j"$(nproc)" &&
  # Install into a staging tree, then move it in whole: an interrupted install
  # never leaves a half-built interpreter where the cache check looks.
  make install DESTDIR="$work/stage"
}
(build) >>"$log" 2>&1 || skip "CPython $version build failed (see $log)"
rm -rf "$prefix"
mv "$work/stage$prefix" "$prefix"
works "$prefix/bin/python3.13" \
  || { rm -rf "$prefix"; skip "CPython $version built without ssl/ctypes/sqlite3/lzma/bz2/zlib (see $log)"; }
rm -rf "$work"
say "built CPython $version in $((SECONDS - start)) s"
echo "$prefix/bin/python3.13"
