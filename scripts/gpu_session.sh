#!/bin/bash
# One session on a lent GPU machine for the gpu scale (issue 23): the next most valuable pieces, in order, within a
# time cap, every record written to OUT to be committed. Run it as the device's one prepared command:
#
#   run(command="OUT=$OUT SECONDS_CAP=540 bash scripts/gpu_session.sh", carry=[".whl"], timeout_s=600)
#
# (.whl/: the wheels the device lacks, downloaded here first by scripts/gpu_wheels.sh.) With the device's own
# python3 and torch, the repository on PYTHONPATH, no papermill. In order, each given what is left of the cap:
#
#   1. bench     benchmarks/bench_gpu_loss.py: ARM's cost on an idle GPU (smp DeepLabV3+ R101 OS 16, bf16, batch 8,
#                512×1024), about 3 min. Skipped once a GPU record is committed in benchmarks/results/gpu_loss/
#                (BENCH=1 runs it anyway, BENCH=0 never).
#   2. calibrate scripts/gpu_calibration.sh: resumes the calibration from reports/gpu/calibration_runs.tar.gz.
#                Skipped once reports/gpu/calibration/calibration.json has a chosen T.
#   3. reference scripts/gpu_reference.py: one chunk of `armlib reproduce --scale gpu`'s runs, resumable from
#                reports/gpu/reference_runs.tar.gz; it trains nothing until the calibration is committed and
#                configs/gpu.yaml uses its T and unresolved classes (it says so in one line).
#
# Writes to OUT at most 7 files (the device returns 8, each ≤ 16 MiB):
#   session.log                    what ran, for how long, with what exit status, and where each file is committed
#   <device>-<date>.json           the bench's record      -> benchmarks/results/gpu_loss/, then
#                                                             `python benchmarks/bench_gpu_loss.py --render`
#   bench_gpu_loss_profile.tar.gz  only when ARM missed its target: torch.profiler traces and op tables
#   calibration_runs.tar.gz        every finished calibration run -> reports/gpu/calibration_runs.tar.gz, then
#                                  `armlib calibrate --scale gpu --iterations 750,1500,3000 --from-records`
#   reference_runs.tar.gz          every finished reference run   -> reports/gpu/reference_runs.tar.gz
#   reference_sections.tar.gz      once every run is done: results/ and figures/ -> unpack into reports/gpu/, then
#                                  `armlib report --out-dir reports/gpu`
#   logs.tar.gz                    every piece's full log, the calibration's files, logs of unfinished runs
set -u
OUT=${OUT:?set OUT to the folder whose files come back}
CAP=${SECONDS_CAP:-540}
RESERVE=25   # seconds kept for packing the logs at the end
if ! [[ $CAP =~ ^[0-9]+$ ]] || [ "$CAP" -gt 540 ] || [ "$CAP" -lt 60 ]; then
    echo "gpu_session: SECONDS_CAP must be whole seconds in 60..540 (a device command may run 600 s), got $CAP" >&2
    exit 1
fi
mkdir -p "$OUT"
start=$SECONDS
work=$(mktemp -d)
log="$OUT/session.log"
left() { echo $((CAP - (SECONDS - start) - RESERVE)); }
say() { echo "[gpu_session +$((SECONDS - start)) s] $*" | tee -a "$log"; }
py() { python3 - "$@"; }

if compgen -G ".whl/*.whl" > /dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/armlib_site .whl/*.whl || exit 1
    export PYTHONPATH="/tmp/armlib_site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 MPLBACKEND=Agg
if ! python3 -c 'import sys, torch; sys.exit(not torch.cuda.is_available())' 2>/dev/null; then
    # Without a GPU the calibration and the reference would train R101 runs on the CPU for days.
    say "no CUDA device (or no torch) for python3: this script is for the lent GPU machine; nothing was run"
    exit 1
fi
say "cap $CAP s; $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null \
    || echo 'no nvidia-smi'); $(python3 -c 'import torch; print("torch", torch.__version__, "cuda",
    torch.cuda.is_available())' 2>&1 | tail -1); $(nproc) cores; commit $(git rev-parse --short HEAD 2>/dev/null)"

# 1. ARM's cost on an idle GPU
have_bench=$(py <<'EOF'
import glob, json
print(int(any(r["device"]["type"] == "cuda" and not r["settings"]["tiny"]
              for r in map(lambda p: json.load(open(p)), glob.glob("benchmarks/results/gpu_loss/*.json")))))
EOF
)
if [ "${BENCH:-auto}" = 1 ] || { [ "${BENCH:-auto}" = auto ] && [ "$have_bench" = 0 ]; }; then
    t=$(( $(left) < 300 ? $(left) : 300 ))
    timeout --signal=TERM --kill-after=10 "$t" python3 benchmarks/bench_gpu_loss.py --results-dir "$OUT" \
        --trace-dir "$OUT" --no-markdown > "$work/bench.log" 2>&1
    status=$?
    say "bench: exit $status$([ $status = 124 ] && echo " (cut at $t s)"): $(grep -E '^\[bench_gpu_loss\] target' \
        "$work/bench.log" | tail -1)"
else
    say "bench: skipped (a GPU record is committed in benchmarks/results/gpu_loss/; BENCH=1 runs it again)"
fi

# 2. The calibration, until it has chosen a T
chosen=$(py <<'EOF'
import json, pathlib
path = pathlib.Path("reports/gpu/calibration/calibration.json")
print(json.loads(path.read_text()).get("chosen_T") if path.exists() else None)
EOF
)
if [ "$chosen" != None ]; then
    say "calibrate: skipped (T = $chosen chosen and committed)"
elif [ "$(left)" -lt 90 ]; then
    say "calibrate: not started (only $(left) s left)"
else
    OUT="$work/calibration" SECONDS_CAP=$(left) JOBS="${JOBS:-10}" bash scripts/gpu_calibration.sh \
        > "$work/calibration.log" 2>&1
    status=$?
    say "calibrate: $(tail -1 "$work/calibration.log")"
    [ -f "$work/calibration/calibration_runs.tar.gz" ] && cp "$work/calibration/calibration_runs.tar.gz" "$OUT/"
fi

# 3. One chunk of the reference
if [ "$(left)" -lt 60 ]; then
    say "reference: not started (only $(left) s left)"
else
    t=$(left)
    timeout --signal=KILL $((t + 15)) python3 scripts/gpu_reference.py --seconds $((t - 10)) --out "$OUT" \
        --require-calibration --jobs "${JOBS:-10}" > "$work/reference.log" 2>&1
    status=$?
    say "reference: exit $status; $(grep -E '^reference: ' "$work/reference.log" | tail -2 | tr '\n' ' ')"
fi

# Logs of every piece, the calibration's files, and the logs of runs that did not finish (cut off or failed).
mkdir -p "$work/unfinished"
for d in runs/gpu/*/ runs/gpu/calibration/*/; do
    if [ -f "$d/train.log" ] && [ ! -f "$d/record.json" ]; then
        cp "$d/train.log" "$work/unfinished/$(basename "$d").train.log"
    fi
done
tar czf "$OUT/logs.tar.gz" -C "$work" .
say "done in $((SECONDS - start)) s; files in OUT: $(cd "$OUT" && ls | tr '\n' ' ')"
exit 0
