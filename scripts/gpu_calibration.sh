#!/bin/bash
# Resume (or start) the gpu scale's calibration on a GPU machine within a time cap, and pack its records so that
# the next session can resume again.
#
#   OUT=<folder> SECONDS_CAP=<s> JOBS=<runs at once> scripts/gpu_calibration.sh
#
# Unpacks reports/gpu/calibration_runs.tar.gz into runs/ (the records of the calibration so far, beside whatever
# runs/ holds: execute() reuses any run whose record exists), runs
# `armlib calibrate --scale gpu --iterations 750,1500,3000` for at most SECONDS_CAP (default 540; SIGTERM stops
# its runs cleanly), then writes to OUT:
#   calibration_runs.tar.gz   every finished run's record, log and ARM curve (no checkpoints, so a run cut off
#                             mid-training starts again): commit it as reports/gpu/calibration_runs.tar.gz
#   calibration/              the three files when calibrate finished (commit them as reports/gpu/calibration/);
#                             after a cut-off, `armlib calibrate --scale gpu --iterations 750,1500,3000
#                             --from-records` writes them from the records instead
#   calibrate.log             its progress bars
# Runs with the repository on PYTHONPATH, so a machine whose python has torch but not this package works too;
# wheels of missing dependencies under .whl/ are installed first (cityscapesscripts and pyquaternion were
# missing on the H200 machines of 2026-11).
set -u
OUT=${OUT:-gpu_calibration_out}
mkdir -p "$OUT"
if compgen -G ".whl/*.whl" > /dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/armlib_site .whl/*.whl || exit 1
    export PYTHONPATH="/tmp/armlib_site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
# every time, keeping what runs/ already holds: a runs/ left by an earlier call must not hide the committed records
tar xzf reports/gpu/calibration_runs.tar.gz --skip-old-files
timeout --signal=TERM "${SECONDS_CAP:-540}" python3 -m armlib calibrate --scale gpu --iterations 750,1500,3000 \
    --jobs "${JOBS:-10}" --out "$OUT/calibration" > "$OUT/calibrate.log" 2>&1
status=$?
case $status in
    0) what="finished" ;;
    124) what="cut off at ${SECONDS_CAP:-540} s: runs still training then start again next time" ;;
    *) what="failed: see $OUT/calibrate.log" ;;
esac
finished=()
for d in runs/gpu/calibration/*/; do [ -f "$d/record.json" ] && finished+=("${d%/}"); done
if [ ${#finished[@]} -gt 0 ]; then
    tar czf "$OUT/calibration_runs.tar.gz" --exclude='*.pt' "${finished[@]}" || status=$?
fi
echo "calibrate exit status $status ($what); runs with a record: ${#finished[@]}$([ ${#finished[@]} -gt 0 ] \
    && echo ", packed into $OUT/calibration_runs.tar.gz")"
exit $status
