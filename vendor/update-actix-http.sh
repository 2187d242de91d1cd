#!/usr/bin/env bash
# vendor/actix-http/ is the published actix-http crate (VERSION below), with
# only its files in KEEP, plus the patches in vendor/actix-http.patches/
# applied in name order, plus Sluice's own files in OWN. This script builds
# that from the published .crate (fetched by cargo, checked against SHA256):
#
#   check   compare it with vendor/actix-http/; exit 1 on any difference
#           (CI runs this; it changes nothing)
#   apply   write it to vendor/actix-http/
#   write-patch WORK PATCH
#           after a patch failed to apply (the script then keeps its work
#           directory WORK): rewrite PATCH, keeping its header, as the
#           difference between WORK/before and the fixed WORK/actix-http
#
# Upgrading: vendor/actix-http/SLUICE-PATCH.md.
set -euo pipefail

# --- what is vendored ---------------------------------------------------------
CRATE=actix-http
VERSION=3.20.0
# sha256 of actix-http-3.20.0.crate: the registry index's checksum, also in
# Cargo.lock before the crate was vendored (a [patch] path dependency has no
# checksum in Cargo.lock).
SHA256=d20a22850ea7fecad12c5f8cd97d246c3af1f04ef400033977c2f13425c45816
# Top-level entries of the .crate that are vendored.
KEEP=(Cargo.toml LICENSE-APACHE LICENSE-MIT README.md src)
# Top-level entries of the .crate that are not. An entry in neither list (a
# new file upstream, say a build.rs) stops the script: decide where it goes.
DROP=(.cargo_vcs_info.json CHANGES.md Cargo.lock Cargo.toml.orig benches examples tests)
# Sluice's own files inside vendor/actix-http/.
OWN=(SLUICE-PATCH.md)
# -------------------------------------------------------------------------------

usage() { echo "usage: $0 check | apply | write-patch WORK PATCH" >&2; exit 2; }
die() { echo "update-$CRATE: $*" >&2; exit 1; }

# The difference between two trees, as a patch git apply -p1 takes.
tree_diff() { # DIR BEFORE AFTER
  local rc=0
  (cd "$1" && git diff --no-index --no-color --no-ext-diff --full-index \
    -- "$2" "$3") >"$1/tree.diff" || rc=$?
  [ "$rc" -le 1 ] || die "git diff failed"
  sed -e "s#^diff --git a/$2/\\(.*\\) b/$3/#diff --git a/\\1 b/#" \
    -e "s#^--- a/$2/#--- a/#" -e "s#^+++ b/$3/#+++ b/#" "$1/tree.diff"
}

if [ "${1:-}" = write-patch ]; then
  [ $# -eq 3 ] || usage
  w=$2 p=$3
  if [ ! -d "$w/before" ] || [ ! -d "$w/$CRATE" ] || [ ! -f "$p" ]; then usage; fi
  find "$w/$CRATE" \( -name '*.rej' -o -name '*.orig' \) -print | grep . \
    && die "remove the files above first"
  {
    sed -n '/^diff --git /q;/^--- a\//q;p' "$p"
    tree_diff "$w" before "$CRATE"
  } >"$w/new.patch"
  mv "$w/new.patch" "$p"
  echo "wrote $p; now run: $0 apply"
  exit 0
fi

[ $# -eq 1 ] || usage
mode=$1
case $mode in check | apply) ;; *) usage ;; esac

root=$(cd "$(dirname "$0")/.." && pwd)
dest=$root/vendor/$CRATE
patches=$root/vendor/$CRATE.patches
work=$(mktemp -d "${TMPDIR:-/tmp}/sluice-vendor.XXXXXX")
keep_work=0
cleanup() { if [ "$keep_work" = 0 ]; then rm -rf "$work"; fi; }
trap cleanup EXIT

# --- the published .crate, through cargo ---------------------------------------
# A throwaway package that depends on exactly VERSION: `cargo fetch` puts the
# .crate in cargo's cache, with cargo's own registry settings, and checks it
# against the index. Offline, a copy already in the cache does.
mkdir -p "$work/fetch/src"
: >"$work/fetch/src/lib.rs"
cat >"$work/fetch/Cargo.toml" <<EOF
[package]
name = "sluice-vendor-fetch"
version = "0.0.0"
edition = "2021"
publish = false

[dependencies]
$CRATE = { version = "=$VERSION", default-features = false }

[workspace]
EOF
host=$(rustc -vV | sed -n 's/^host: //p')
if ! (cd "$work/fetch" && { cargo fetch --quiet --target "$host" 2>"$work/fetch.log" \
  || cargo fetch --quiet --offline --target "$host" 2>>"$work/fetch.log"; }); then
  cat "$work/fetch.log" >&2
  die "could not download $CRATE $VERSION from the registry (cargo's messages above), so vendor/$CRATE/ cannot be compared with it: failing rather than skipping the check"
fi
# The index's checksum, as cargo wrote it in the throwaway lockfile.
lock_sum=$(grep -A3 "^name = \"$CRATE\"\$" "$work/fetch/Cargo.lock" \
  | sed -n 's/^checksum = "\(.*\)"$/\1/p')
[ "$lock_sum" = "$SHA256" ] \
  || die "the registry index gives $CRATE $VERSION the checksum '$lock_sum', this script's SHA256 is $SHA256"
crate_file=
for f in "${CARGO_HOME:-$HOME/.cargo}"/registry/cache/*/"$CRATE-$VERSION.crate"; do
  [ -f "$f" ] || continue
  sum=$(sha256sum "$f" | cut -d' ' -f1)
  if [ "$sum" = "$SHA256" ]; then crate_file=$f; break; fi
  echo "update-$CRATE: $f has sha256 $sum, not $SHA256: ignored" >&2
done
[ -n "$crate_file" ] || die "no $CRATE-$VERSION.crate with sha256 $SHA256 in cargo's cache after cargo fetch"

# --- unpack, keep, patch ------------------------------------------------------
mkdir "$work/unpack"
tar -xzf "$crate_file" -C "$work/unpack"
src=$work/unpack/$CRATE-$VERSION
[ -d "$src" ] || die "$crate_file has no $CRATE-$VERSION/"
for entry in "$src"/* "$src"/.[!.]*; do
  [ -e "$entry" ] || continue
  name=${entry##*/}
  case " ${KEEP[*]} ${DROP[*]} " in
    *" $name "*) ;;
    *) die "$CRATE $VERSION has a top-level '$name' in neither KEEP nor DROP: add it to one of them in $0" ;;
  esac
done
tree=$work/$CRATE
mkdir "$tree"
for name in "${KEEP[@]}"; do
  [ -e "$src/$name" ] || die "$CRATE $VERSION has no '$name' (listed in KEEP)"
  cp -R "$src/$name" "$tree/"
done

# git apply outside any repository (the ceiling stops it from finding one
# above the work directory): whole patch or nothing, no fuzz.
git_apply() {
  (cd "$tree" && env -u GIT_DIR -u GIT_WORK_TREE -u GIT_INDEX_FILE \
    GIT_CEILING_DIRECTORIES="$work" git apply --whitespace=nowarn -p1 "$@")
}
shopt -s nullglob
patch_files=("$patches"/[0-9][0-9][0-9][0-9]-*.patch)
shopt -u nullglob
for p in "${patch_files[@]}"; do
  if ! git_apply "$p"; then
    keep_work=1
    cp -R "$tree" "$work/before"
    git_apply --reject "$p" 2>/dev/null || true
    die "${p##*/} does not apply to $CRATE $VERSION. $work/before is the crate with the patches before it; $tree has the hunks that applied, and a .rej file beside each file where one did not. Make the change in $tree, delete the .rej files, then run: $0 write-patch $work $p"
  fi
done

for name in "${OWN[@]}"; do
  if [ -e "$dest/$name" ]; then cp "$dest/$name" "$tree/"; fi
done

# The workspace cannot claim an older minimum Rust than a crate it builds.
msrv_of() { sed -n "/^\\[$2\\]/,/^\\[/s/^rust-version = \"\\(.*\\)\"\$/\\1/p" "$1"; }
crate_msrv=$(msrv_of "$tree/Cargo.toml" package)
ws_msrv=$(msrv_of "$root/Cargo.toml" workspace.package)
msrv_ok=1
if [ -n "$crate_msrv" ] \
  && [ "$(printf '%s\n%s\n' "$crate_msrv" "${ws_msrv:-0}" | sort -V | head -n 1)" != "$crate_msrv" ]; then
  msrv_ok=0
  echo "update-$CRATE: $CRATE $VERSION needs Rust $crate_msrv, but [workspace.package] rust-version in Cargo.toml is '$ws_msrv': raise it" >&2
fi

# --- check or apply -------------------------------------------------------------
exec_bits() { (cd "$1" && find . -type f -perm /111 | LC_ALL=C sort); }
if [ "$mode" = check ]; then
  [ -d "$dest" ] || die "vendor/$CRATE/ is missing (run: $0 apply)"
  if diff -r "$tree" "$dest" >"$work/diff" && [ "$(exec_bits "$tree")" = "$(exec_bits "$dest")" ]; then
    [ "$msrv_ok" = 1 ] || die "the workspace's rust-version is below $CRATE's (above)"
    echo "vendor/$CRATE/ is $CRATE $VERSION + the ${#patch_files[@]} patches in vendor/$CRATE.patches/"
  else
    sed "s#$tree#(generated)#g" "$work/diff" >"$work/diff.shown"
    head -n 200 "$work/diff.shown" >&2
    [ "$(exec_bits "$tree")" = "$(exec_bits "$dest")" ] || echo "(executable bits differ)" >&2
    die "vendor/$CRATE/ is not $CRATE $VERSION + vendor/$CRATE.patches/ (differences above: generated, then vendored). Change the vendored crate through a patch there, then run: $0 apply"
  fi
else
  rm -rf "$dest"
  cp -R "$tree" "$dest"
  echo "wrote vendor/$CRATE/: $CRATE $VERSION + the ${#patch_files[@]} patches in vendor/$CRATE.patches/"
  [ "$msrv_ok" = 1 ] || echo "update-$CRATE: and raise the workspace's rust-version (above)" >&2
fi
