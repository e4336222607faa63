#!/usr/bin/env bash
# One command on a lent GPU machine (nothing set up there): train world-zoo stage(s) on CUDA within a time budget,
# checkpointing often, resumable, then write a short summary.
#
#   zoo/gpu.sh [STAGE] [MINUTES] [RUNS]
#
# STAGE    any `python -m zoo train --only` value, comma-separated for several (default: vae-wide,export,adapters:
#          world v2's sharper VAE on the shipped latents (ZOO_VAE_STEPS steps, batch 128, exported into
#          RUNS/weights/base), then the adapters on the shipped base; all need nothing but this checkout; the unet*
#          stages need their earlier runs in RUNS, or `from-shipped,unet-long` to go on from the shipped base);
#          base-v2 (= vae-v2,unet-v2,export-v2,eval-v2, zoo/v2.py): a new VAE and base UNet from scratch, exported to
#          RUNS/weights/base-v2 and measured beside the shipped base (docs/zoo.md "GPU path: base v2")
# MINUTES  wall-clock budget of the whole script, setup included (default 12, decimals allowed); training stops early
#          enough (SIGTERM) to write the summary; rerun the same command and every stage resumes from its newest
#          complete checkpoint in RUNS
# RUNS     run folder (default: $OUT/zoo_runs when $OUT is set, else outputs/zoo_gpu); trained weights are exported
#          into RUNS/weights, never into the package
# Env: ZOO_ARGS (more `python -m zoo train` options, e.g. "--steps 2000 --adapters canny,seg"), ZOO_DEVICE (auto),
#      ZOO_CHECKPOINT_EVERY (50), ZOO_THREADS (8), ZOO_WORKERS (4: data workers of the diffusion stages),
#      ZOO_VAE_STEPS (1500: steps of vae-wide; its render processes: cpu_count - 2, at most 12),
#      ZOO_RESERVE_S (40: seconds kept for the summary), ZOO_WHEELS (.whl: carried wheels, see zoo/gpu_wheels.sh),
#      base v2: ZOO_V2_VAE_S / ZOO_V2_UNET_S (fixed training seconds; default: shares of the time left, see
#      zoo/v2.py SHARES), ZOO_V2_EXPORT_S (15) / ZOO_V2_EVAL_S (60) (kept for those stages), ZOO_V2_IMAGES
#      (60000: pool renders), ZOO_V2_VAE_BATCH / ZOO_V2_UNET_BATCH (256), ZOO_V2_EVAL_PROMPTS (32 per task),
#      PYTHON (default python3).
# Writes RUNS/gpu.log (the run's output) and gpu_summary.json (into $OUT when set, else RUNS); exits with the
# training's status (0 finished, 124 stopped at the budget: resumable).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
t0=$(date +%s)
STAGE=${1:-vae-wide,export,adapters}
MINUTES=${2:-12}
V2=""
case ",$STAGE," in *,base-v2,*|*,vae-v2,*|*,unet-v2,*|*,export-v2,*|*,eval-v2,*) V2=1 ;; esac
# base v2 writes ~60k pool images and checkpoints: its runs stay on the machine (outputs/ is kept between calls on a
# warm machine); what comes back to $OUT is packed by zoo/v2.py pack_results (at most 8 files of 16 MiB)
if [ -n "$V2" ]; then RUNS=${3:-outputs/zoo_gpu}; else RUNS=${3:-${OUT:+$OUT/zoo_runs}}; fi
RUNS=${RUNS:-outputs/zoo_gpu}
SUMMARY_DIR=${OUT:-$RUNS}
PY=${PYTHON:-python3}
mkdir -p "$RUNS" "$SUMMARY_DIR"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1

# 1. a python with what tailor needs: wheels carried in .whl/ (zoo/gpu_wheels.sh; the GPU image has no network and
#    no diffusers), then the system python's own packages, else pip installs what is missing
WHEELS=${ZOO_WHEELS:-.whl}
if compgen -G "$WHEELS/*.whl" >/dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/zoo-site \
        "$WHEELS"/*.whl \
        || { echo "could not install the carried wheels in .whl/"; exit 3; }
    export PYTHONPATH="/tmp/zoo-site:$PYTHONPATH"
fi
missing=$("$PY" - <<'EOF'
import importlib.util
mods = {"torch": "torch", "diffusers": "diffusers>=0.32", "transformers": "transformers>=4.45", "peft": "peft>=0.13",
        "accelerate": "accelerate>=1.0", "safetensors": "safetensors", "tokenizers": "tokenizers", "PIL": "pillow",
        "numpy": "numpy", "cv2": "opencv-python-headless", "typer": "typer>=0.12,<0.29", "rich": "rich",
        "yaml": "pyyaml"}
print(" ".join(p for m, p in mods.items() if importlib.util.find_spec(m) is None))
EOF
)
if [ -n "$missing" ]; then
    echo "installing: $missing"
    # shellcheck disable=SC2086
    "$PY" -m pip install -q --disable-pip-version-check $missing >"$RUNS/pip.log" 2>&1 \
        || { echo "pip could not install: $missing (see $RUNS/pip.log)"; exit 3; }
fi

# 2. the device
DEVICE=${ZOO_DEVICE:-auto}
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(),
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')"
command -v nvidia-smi >/dev/null && nvidia-smi -L

# 3. train until done or the budget (minus a reserve for the summary) runs out
budget=$(awk -v m="$MINUTES" 'BEGIN { printf "%d", m * 60 }')
left=$((budget - ($(date +%s) - t0) - ${ZOO_RESERVE_S:-40}))
if [ "$left" -lt 20 ]; then echo "no time left for training (${MINUTES} min budget)"; exit 3; fi
VAE_ARGS=""
case ",$STAGE," in *,vae-wide,*) VAE_ARGS="--vae-steps ${ZOO_VAE_STEPS:-1500}" ;; esac
case ",$STAGE," in
    *,base-v2,*|*,vae-v2,*|*,unet-v2,*)
        # the v2 stages share one deadline (zoo/v2.py stage_seconds): each takes its share of what is left
        export ZOO_V2_DEADLINE=$(($(date +%s) + left - 5))
        "$PY" -c "import json, sys; from zoo import v2; stages = v2.expand(tuple(sys.argv[2].split(',')));
print('planned split (s):', json.dumps(v2.split_budget(float(sys.argv[1]), tuple(s for s in stages if s in v2.STAGES))))" \
            "$((left - 5))" "$STAGE" ;;
esac
echo "== $STAGE on $DEVICE for at most ${left}s, runs in $RUNS"
# shellcheck disable=SC2086
CK_ARGS="--checkpoint-every ${ZOO_CHECKPOINT_EVERY:-50}"  # base v2 plans its own (about every 60 s) unless set
if [ -n "$V2" ] && [ -z "${ZOO_CHECKPOINT_EVERY:-}" ]; then CK_ARGS=""; fi
# shellcheck disable=SC2086
timeout --signal=TERM --kill-after=15 "$left" "$PY" -m zoo train --only "$STAGE" --runs "$RUNS" \
    --device "$DEVICE" $CK_ARGS --threads "${ZOO_THREADS:-8}" \
    --num-workers "${ZOO_WORKERS:-4}" --weights "$RUNS/weights" $VAE_ARGS ${ZOO_ARGS:-} 2>&1 | tee "$RUNS/gpu.log"
status=${PIPESTATUS[0]}

# 4. summary: per run folder its newest complete checkpoint and last logged line
"$PY" - "$RUNS" "$STAGE" "$status" "$(($(date +%s) - t0))" "$SUMMARY_DIR/gpu_summary.json" <<'EOF'
import json, sys
from pathlib import Path

from tailor.core.training.checkpoint import list_checkpoints

runs, stage, status, secs, dest = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
out = {"stage": stage, "exit": status, "stopped_at_budget": status in (124, 137), "wall_s": secs, "runs": {}}
for log in sorted(runs.rglob("log.jsonl")):
    folder = log.parent
    steps = [step for step, _ in list_checkpoints(folder)]
    lines = [ln for ln in log.read_text().splitlines() if ln.strip()]
    out["runs"][str(folder.relative_to(runs))] = {"newest_checkpoint": steps[-1] if steps else None,
                                                 "last_log": json.loads(lines[-1]) if lines else None}
Path(dest).write_text(json.dumps(out, indent=1))
print(json.dumps(out))
EOF
if [ -n "$V2" ] && [ "$SUMMARY_DIR" != "$RUNS" ]; then
    cp "$RUNS/gpu.log" "$SUMMARY_DIR/gpu.log" 2>/dev/null
    "$PY" -c "import sys; from zoo.v2 import pack_results; print(pack_results(sys.argv[1], sys.argv[2]))" \
        "$RUNS" "$SUMMARY_DIR"
fi
exit "$status"
