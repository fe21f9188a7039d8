# Sourced by start.sh and test.sh: preload OpenBLAS into the dashboard / test process when
# installed, with the kernels that suit this CPU (droidft/blas.py checks them once per machine),
# so in-process MLX work (generation, evaluation, fusion) gets the same speed as the training
# workers (DESIGN.md, "Speed on Linux"). A user's own OPENBLAS_CORETYPE is kept.
if [ "$(uname -s)" = "Linux" ] && [ "${DROIDFT_BLAS:-}" != "reference" ]; then
  eval "$(.venv/bin/python -m droidft.blas --env 2>/dev/null || true)"
fi
