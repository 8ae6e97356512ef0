"""Scanning: the inverted lists (``lists``), the filter masks over them (``masks``) and the
kernels that score a query against the probed clusters (``kernels``, the scan seam)."""
