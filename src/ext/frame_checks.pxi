# The per-call shape checks of the frame kernels (csr_integrate, csc_integrate): one rule, a
# ValueError naming the argument, never an out-of-bounds read. Included, not imported: each
# extension keeps it module-level.

def _check_frame_args(Py_ssize_t npix, Py_ssize_t nframes, Py_ssize_t nbins, Py_ssize_t nnorm,
                      per_bin, Py_ssize_t ndark, bint has_dark, Py_ssize_t var_rows,
                      Py_ssize_t var_cols, int error_mode, int max_error_mode, str modes,
                      Py_ssize_t nbounds, outputs):
    """``per_bin``: (name, length) of the arrays of one value per bin; ``modes``: the error
    modes the kernel takes (0 .. ``max_error_mode``), as its error message says them."""
    if nnorm != npix:
        raise ValueError(f"norm: expected {npix} values (one per pixel), got {nnorm}")
    for name, n in per_bin:
        if n != nbins:
            raise ValueError(f"{name}: expected {nbins} values (one per bin), got {n}")
    if has_dark and ndark != npix:
        raise ValueError(f"dark: expected {npix} values (one per pixel), got {ndark}")
    if not 0 <= error_mode <= max_error_mode:
        raise ValueError(f"error_mode: expected {modes}, got {error_mode}")
    if error_mode == 2 and (var_cols != npix or var_rows not in (1, nframes)):
        raise ValueError(f"variance: expected shape (1 or {nframes}, {npix}), got "
                         f"({var_rows}, {var_cols})")
    if nbounds != 2:
        raise ValueError(f"dummy_bounds: expected 2 values, got {nbounds}")
    for out in outputs:
        if out.shape[0] != nframes or out.shape[1] != nbins:
            raise ValueError(f"out: expected shape ({nframes}, {nbins}), got "
                             f"({out.shape[0]}, {out.shape[1]})")
