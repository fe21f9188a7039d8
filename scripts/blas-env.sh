# Sourced by start.sh and test.sh: preload OpenBLAS into the dashboard / test process when
# installed, so in-process MLX work (generation, evaluation, fusion, the demo model build) gets
# the same ~20x as the training workers (DESIGN.md, "Speed on Linux").
lib=$(.venv/bin/python -c "from droidft.blas import find_openblas; print(find_openblas() or '')" 2>/dev/null || true)
if [ -n "$lib" ] && [ "$(uname -s)" = "Linux" ] && [ "${DROIDFT_BLAS:-}" != "reference" ]; then
  export LD_PRELOAD="$lib${LD_PRELOAD:+:$LD_PRELOAD}"
fi
