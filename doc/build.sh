#!/usr/bin/env bash
# Build the documentation as docs.ros.org does (rosdoc2) and fail on any warning or error.
#
#   bash doc/build.sh [OUTPUT_DIR]     # default: docs_output/ (rosdoc2's), from the repo root
#
# Needs rosdoc2 and the packages of doc/requirements.txt on PATH (a venv's bin/). rosdoc2 0.2.1
# has no option to turn Sphinx warnings into errors, so this script reads its log: any line
# with WARNING or ERROR fails the build (exit 1) after printing those lines.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="${1:-$root}"
mkdir -p "$out"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
cd "$out"
rosdoc2 build --package-path "$root" >"$log" 2>&1 || { cat "$log"; exit 1; }
problems=$(grep -E 'WARNING|ERROR|CRITICAL|Traceback' "$log" || true)
if [ -n "$problems" ]; then
  echo "$problems" >&2
  echo "docs: $(echo "$problems" | wc -l) warning/error line(s) (full log above them)" >&2
  exit 1
fi
echo "docs: 0 warnings; $(find "$out/docs_output/darknet53_ros" -name '*.html' | wc -l) pages in $out/docs_output/darknet53_ros"
