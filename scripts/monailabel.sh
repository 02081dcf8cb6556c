#!/usr/bin/env bash
# MONAI Label for the CrossMatch bundles, offline, in one command.
#
#   bash scripts/monailabel.sh setup            # create the MONAI Label environment and the app (once; 7-10 min, 8.2 GB)
#   bash scripts/monailabel.sh start [STUDIES]  # place the bundles in the app and serve STUDIES on 127.0.0.1
#   bash scripts/monailabel.sh place            # (re)copy the bundles' configs from the repository into the app
#   bash scripts/monailabel.sh env              # print the environment's python (for tests and scripts)
#
# MONAI Label lives in its own environment: monailabel 0.8.5 needs torchvision (hence torch 2.14.1 + torchvision
# 0.29.1 on x86_64), numpy<2 and jsonschema<4 (pydicom-seg), and pydicom 2 (pydicom-seg imports pydicom's private
# modules that pydicom 3 removed). The package crossmatch-ext is then installed into it with every package already
# there held at its version, so MONAI Label's own dependencies stay intact (`pip check` must stay clean).
#
# Environment variables:
#   MONAILABEL_VENV       the environment (default: <repo>/.venv-monailabel)
#   MONAILABEL_WORKSPACE  app and default studies (default: <repo>/.monailabel; the app is <workspace>/apps/monaibundle)
#   MONAILABEL_HOST       default 127.0.0.1; set 0.0.0.0 only to serve other machines on purpose
#   MONAILABEL_PORT       default 8000
#   MONAILABEL_MODELS     comma-separated bundles to serve (default: crossmatch_la,crossmatch_acdc)
#   MONAILABEL_TORCH      torch requirements installed first (default: "torch==2.14.1 torchvision==0.29.1";
#                         on aarch64 use "torch==2.9.1 torchvision==0.24.1")
# Extra arguments after STUDIES go to `monailabel start_server` (e.g. --conf preload true).
set -euo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${MONAILABEL_VENV:-$repo_root/.venv-monailabel}"
workspace="${MONAILABEL_WORKSPACE:-$repo_root/.monailabel}"
app="$workspace/apps/monaibundle"
host="${MONAILABEL_HOST:-127.0.0.1}"
port="${MONAILABEL_PORT:-8000}"
models="${MONAILABEL_MODELS:-crossmatch_la,crossmatch_acdc}"
python_bin="${PYTHON:-python3}"
monailabel_version="0.8.5"
# What monailabel 0.8.5 needs beside itself (measured): pydicom 2 with the DICOM clients of its time.
monailabel_pins=("pydicom<3" "pynetdicom<2.1" "dicomweb-client<0.60")

log() { echo "[monailabel.sh] $*"; }

setup() {
    local start_s=$SECONDS
    # One setup at a time per environment (CI runs may share a cached one): hold a lock beside it until the end.
    mkdir -p "$(dirname "$venv")"
    exec 9>"$venv.lock"
    flock 9
    # What the environment was built from; a cached environment built from other pins is built again.
    local recipe
    recipe="${MONAILABEL_TORCH:-torch==2.14.1 torchvision==0.29.1} monailabel==$monailabel_version ${monailabel_pins[*]}"
    local stamp="$venv/.monailabel-installed"
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" != "$recipe" ]; then
        log "the environment in $venv was built from '$(cat "$stamp")', not '$recipe': building it again"
        rm -rf "$venv"
    fi
    if [ ! -x "$venv/bin/python" ]; then
        log "creating the MONAI Label environment in $venv"
        "$python_bin" -m venv "$venv"
    fi
    local py="$venv/bin/python"
    if [ ! -f "$stamp" ]; then
        # pip 23.2.1, the one these steps were measured with: pip 26.3 aborts any later install into this environment
        # with `InvalidTag: Tag 'itk-5.4.7-cp311-abi3-manylinux_2_28_x86_64' must have exactly three components`
        # (the WHEEL file of itk 5.4.7, which monai[itk] pulls in).
        "$py" -m pip install --quiet "pip==23.2.1"
        # torch first and pinned, or the resolver picks a torch/torchvision pair that does not import together.
        log "installing ${MONAILABEL_TORCH:-torch==2.14.1 torchvision==0.29.1}"
        # shellcheck disable=SC2086
        "$py" -m pip install --quiet ${MONAILABEL_TORCH:-torch==2.14.1 torchvision==0.29.1}
        log "installing monailabel==$monailabel_version ${monailabel_pins[*]}"
        "$py" -m pip install --quiet "monailabel==$monailabel_version" "${monailabel_pins[@]}"
        echo "$recipe" >"$stamp"
    fi
    # crossmatch-ext: hold every installed package at its version, install only what is missing.
    local held="$venv/monailabel-held.txt"
    "$py" -m pip freeze --exclude-editable | grep -v -i '^crossmatch' >"$held"
    log "installing crossmatch-ext (editable) with MONAI Label's packages held ($held)"
    "$py" -m pip install --quiet -c "$held" -e "$repo_root"
    "$py" -m pip check
    ensure_app
    log "ready in $((SECONDS - start_s)) s; environment size: $(du -sh "$venv" | cut -f1)"
}

ensure_app() {
    # the monaibundle sample app ships inside the monailabel wheel: copying it needs no network
    if [ ! -f "$app/main.py" ]; then
        log "copying the monaibundle sample app to $app"
        mkdir -p "$workspace/apps"
        "$venv/bin/python" -m monailabel.main apps --download --name monaibundle --output "$workspace/apps" >/dev/null
    fi
}

ensure_strategies() {
    # CrossMatch's active-learning strategies (/activelearning/crossmatch_disagreement, .../crossmatch_entropy):
    # lib/activelearning/crossmatch.py, registered in main.py's init_strategies (once; marked "crossmatch strategies").
    ensure_app
    mkdir -p "$app/lib/activelearning"
    [ -f "$app/lib/activelearning/__init__.py" ] || touch "$app/lib/activelearning/__init__.py"
    cat >"$app/lib/activelearning/crossmatch.py" <<'PY'
"""CrossMatch active learning for MONAI Label: the next study is the unlabeled one whose perturbed decoders disagree
most (or whose prediction has the highest entropy); see crossmatch_ext.active_learning for the definitions."""

import logging
import os

from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.strategy import Strategy

from crossmatch_ext.active_learning import rank_studies, score_studies

logger = logging.getLogger(__name__)


class CrossMatchStrategy(Strategy):
    def __init__(self, strategy, bundles):
        super().__init__(f"CrossMatch: the unlabeled study with the highest {strategy} score")
        self.strategy = strategy
        self.bundles = bundles  # {name: bundle folder}, the first is the default

    def __call__(self, request, datastore: Datastore):
        name = request.get("model") or next(iter(self.bundles))
        if name not in self.bundles:
            raise ValueError(f"active learning: unknown model {name!r}; served: {list(self.bundles)}")
        bundle = self.bundles[name]
        model = os.path.join(bundle, "models", "model.pt")
        images = datastore.get_unlabeled_images()
        if not images or not os.path.isfile(model):
            logger.info(f"active learning: nothing to rank ({len(images)} unlabeled studies, weights {model})")
            return None
        paths = {datastore.get_image_uri(i): i for i in images}
        scores, cache = score_studies(bundle, model, list(paths), device=request.get("device", "cpu"),
                                      progress=logger.info)
        ranked = rank_studies(scores, self.strategy)
        logger.info(f"active learning ({self.strategy}): {cache['hits']} of {len(scores)} scores from {cache['path']}")
        best = ranked[0]
        return {"id": paths[best.image], "strategy": self.strategy, "model": name,
                "score": getattr(best, self.strategy), "cache": cache,
                "ranking": [{"id": paths[s.image], "score": getattr(s, self.strategy)} for s in ranked]}
PY
    "$venv/bin/python" - "$app/main.py" <<'PY'
import re, sys
path = sys.argv[1]
text = open(path).read()
if "crossmatch strategies" not in text:
    start = text.index("def init_strategies")
    # before the line logging the strategies (else before `return strategies`), so the log lists ours too
    match = (re.compile(r"\n([ \t]+)logger\.info\(f?\"Active Learning Strategies").search(text, start)
             or re.compile(r"\n([ \t]+)return strategies").search(text, start))
    indent = match.group(1)
    code = (f"\n{indent}# crossmatch strategies\n"
            f"{indent}import importlib.util as _util\n"
            f"{indent}_spec = _util.spec_from_file_location('crossmatch_strategy', "
            f"os.path.join(os.path.dirname(os.path.abspath(__file__)), 'lib', 'activelearning', 'crossmatch.py'))\n"
            f"{indent}_module = _util.module_from_spec(_spec)\n"
            f"{indent}_spec.loader.exec_module(_module)\n"
            f"{indent}CrossMatchStrategy = _module.CrossMatchStrategy\n"
            f"{indent}_bundles = {{n: b for n, b in self.models.items() if n.startswith('crossmatch')}}\n"
            f"{indent}if _bundles:\n"
            f"{indent}    for _s in ('disagreement', 'entropy'):\n"
            f"{indent}        strategies[f'crossmatch_{{_s}}'] = CrossMatchStrategy(_s, _bundles)")
    text = text[: match.start()] + code + text[match.start():]
    open(path, "w").write(text)
PY
}

place_bundles() {
    # Each bundle goes to <app>/model/<name> (the monaibundle app's local bundles). `place` copies configs and docs
    # from the repository (overwriting the app's copies); `start` does so only for a bundle not placed yet, so
    # MONAI Label-specific edits of the app's copy survive restarts. The app's models/ (written by /train) is kept.
    local refresh="$1" name target
    ensure_app
    mkdir -p "$app/model"
    for name in ${models//,/ }; do
        if [ ! -d "$repo_root/bundles/$name/configs" ]; then
            echo "error: bundle '$name' not found in $repo_root/bundles (MONAILABEL_MODELS=$models)" >&2
            exit 2
        fi
        target="$app/model/$name"
        if [ "$refresh" = 1 ] || [ ! -d "$target/configs" ]; then
            log "placing bundle $name in $target"
            mkdir -p "$target/models"
            rm -rf "$target/configs" "$target/docs"
            cp -r "$repo_root/bundles/$name/configs" "$repo_root/bundles/$name/docs" "$target/"
            cp "$repo_root/bundles/$name/LICENSE" "$target/" 2>/dev/null || true
        fi
        if [ ! -f "$target/models/model.pt" ] && [ -f "$repo_root/bundles/$name/models/model.pt" ]; then
            cp "$repo_root/bundles/$name/models/model.pt" "$target/models/model.pt"
        fi
        if [ ! -f "$target/models/model.pt" ] && [ ! -f "$target/models/model.ts" ]; then
            log "note: $name has no trained weights ($target/models/model.pt): /train works, /infer is offered" \
                "after weights exist there and the server restarts"
        fi
    done
}

start() {
    local studies="${1:-$workspace/studies}"
    shift || true
    if [ ! -x "$venv/bin/python" ]; then
        echo "error: no MONAI Label environment at $venv; run: bash scripts/monailabel.sh setup" >&2
        exit 2
    fi
    mkdir -p "$studies"
    place_bundles 0
    ensure_strategies
    log "serving $studies on http://$host:$port (models: $models)"
    # zoo_source local: no model-zoo index download at start-up; sam2 false: no SAM2 tasks / weight downloads.
    exec "$venv/bin/python" -m monailabel.main start_server --app "$app" --studies "$studies" --host "$host" --port "$port" \
        --conf models "$models" --conf zoo_source local --conf sam2 false "$@"
}

case "${1:-}" in
    setup) setup ;;
    start) shift; start "$@" ;;
    place) place_bundles 1 ;;
    env) echo "$venv/bin/python" ;;
    *)
        sed -n '2,9p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
        exit 2
        ;;
esac
