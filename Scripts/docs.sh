#!/usr/bin/env bash
# Builds the documentation of the ProcessPool module with the toolchain's own `docc` (no package
# plugin, so the package keeps no dependencies).
#
#   bash Scripts/docs.sh [--static-hosting] [--hosting-base-path PATH] [--output DIR]
#
# 1. Builds the ProcessPool target in .build-docs (its own scratch folder, git-ignored) and has
#    the compiler emit the module's symbol graph (public symbols only).
# 2. Runs `docc convert` on Sources/ProcessPool/ProcessPool.docc with that symbol graph.
#    Warnings are errors: a broken symbol link or a bad article fails the script.
#
# The archive is written to .build-docs/ProcessPool.doccarchive (or --output). Browse it with
# `docc preview Sources/ProcessPool/ProcessPool.docc --additional-symbol-graph-dir
# .build-docs/symbol-graphs`, or build with --static-hosting and serve the folder with any web
# server (the pages are then under /documentation/processpool).
set -euo pipefail
cd "$(dirname "$0")/.."

static_hosting=false
hosting_base_path=""
output=".build-docs/ProcessPool.doccarchive"
while [ $# -gt 0 ]; do
  case "$1" in
    --static-hosting) static_hosting=true ;;
    --hosting-base-path)
      hosting_base_path="${2:?--hosting-base-path needs a value}"
      shift
      ;;
    --output)
      output="${2:?--output needs a value}"
      shift
      ;;
    -h | --help)
      sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'
      exit 0
      ;;
    *)
      echo "docs.sh: unknown argument: $1" >&2
      exit 2
      ;;
  esac
  shift
done

scratch=".build-docs"
graphs="$scratch/symbol-graphs"
catalog="Sources/ProcessPool/ProcessPool.docc"

# `docc` sits next to `swift` in the toolchain; DOCC overrides it.
swift_bin="$(command -v swift || true)"
docc="${DOCC:-}"
if [ -z "$docc" ]; then
  if [ -n "$swift_bin" ] && [ -x "$(dirname "$(readlink -f "$swift_bin")")/docc" ]; then
    docc="$(dirname "$(readlink -f "$swift_bin")")/docc"
  elif command -v docc >/dev/null; then
    docc="$(command -v docc)"
  else
    echo "docs.sh: docc not found (it ships with the Swift toolchain; set DOCC to its path)" >&2
    exit 1
  fi
fi

echo "== symbol graph ($scratch)"
rm -rf "$graphs"
mkdir -p "$graphs"
# The graph is a side output the build system does not track: an up-to-date module would not be
# compiled again and would emit nothing. Removing the built module makes the build run the
# emit-module step again, which writes the graph from the current sources.
bin="$(swift build --scratch-path "$scratch" --show-bin-path)"
rm -f "$bin/Modules/ProcessPool.swiftmodule"
swift build --scratch-path "$scratch" --target ProcessPool \
  -Xswiftc -emit-symbol-graph \
  -Xswiftc -emit-symbol-graph-dir -Xswiftc "$PWD/$graphs" \
  -Xswiftc -symbol-graph-minimum-access-level -Xswiftc public
if [ ! -s "$graphs/ProcessPool.symbols.json" ]; then
  echo "docs.sh: the build wrote no symbol graph for ProcessPool in $graphs" >&2
  exit 1
fi

echo "== docc convert ($docc)"
hosting=(--no-transform-for-static-hosting)
if $static_hosting; then
  hosting=(--transform-for-static-hosting)
  if [ -n "$hosting_base_path" ]; then hosting+=(--hosting-base-path "$hosting_base_path"); fi
fi
rm -rf "$output"
mkdir -p "$(dirname "$output")"
log="$scratch/docc.log"
status=0
"$docc" convert "$catalog" \
  --additional-symbol-graph-dir "$graphs" \
  --output-path "$output" \
  --fallback-display-name ProcessPool \
  --fallback-bundle-identifier org.swift.processpool \
  --fallback-default-module-kind Library \
  --emit-digest \
  --warnings-as-errors \
  "${hosting[@]}" 2>&1 | tee "$log" || status=$?
# Belt and braces: fail on any diagnostic even if a docc version did not promote it.
if [ "$status" -ne 0 ] || grep -Eq "^(warning|error):|: (warning|error):" "$log"; then
  echo "docs.sh: docc reported problems (see above, or $log)" >&2
  exit 1
fi

echo "== done"
case "$output" in /*) ;; *) output="$PWD/$output" ;; esac
echo "documentation archive: $output"
if $static_hosting; then
  echo "serve that folder and open /documentation/processpool${hosting_base_path:+ under $hosting_base_path}"
else
  echo "preview: $docc preview $catalog --additional-symbol-graph-dir $PWD/$graphs"
fi
