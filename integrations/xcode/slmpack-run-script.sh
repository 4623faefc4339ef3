#!/bin/sh
# Xcode "Run Script" build phase for slmpack packages (macOS only; NOT RUN on this Linux machine).
#
# In the target's Build Phases, add a Run Script phase before "Copy Bundle Resources":
#   Shell:               /bin/sh
#   Script:              "${SRCROOT}/slmpack-run-script.sh"
#   Input File Lists:    $(DERIVED_FILE_DIR)/slmpack-inputs.xcfilelist
#   Output File Lists:   $(DERIVED_FILE_DIR)/slmpack-outputs.xcfilelist
# and run `slmpack-run-script.sh --lists` once (or from a pre-action) to write both lists. Xcode
# then skips the phase when no input changed; slmpack's cache rebuilds only changed packages.
# Packages are copied into the app bundle's resources: Bundle.main.url(forResource: "slmpack",
# withExtension: nil)/<name>/coreml/model.mlpackage (compile with MLModel.compileModel at first run)
# or .../executorch/model.pte.
set -eu
SLMPACK="${SLMPACK:-slmpack}"
RECIPE="${SLMPACK_RECIPE:-${SRCROOT}/slmpack.toml}"
OUT="${DERIVED_FILE_DIR}/slmpack"
if [ "${1:-}" = "--lists" ]; then
  "$SLMPACK" build "$RECIPE" --out "$OUT" --list --json | /usr/bin/python3 -c '
import json, sys
d = json.load(sys.stdin)
open(sys.argv[1], "w").write("\n".join(sorted({f for p in d["packages"] for f in p["inputs"]})) + "\n")
open(sys.argv[2], "w").write("\n".join(p["path"] + "/manifest.json" for p in d["packages"]) + "\n")
' "${DERIVED_FILE_DIR}/slmpack-inputs.xcfilelist" "${DERIVED_FILE_DIR}/slmpack-outputs.xcfilelist"
  exit 0
fi
"$SLMPACK" build "$RECIPE" --out "$OUT"
DEST="${TARGET_BUILD_DIR}/${UNLOCALIZED_RESOURCES_FOLDER_PATH}/slmpack"
mkdir -p "$DEST"
rsync -a --delete --exclude '*.build.log' --exclude '.slmpack-build' --exclude 'build.log' "$OUT/" "$DEST/"
