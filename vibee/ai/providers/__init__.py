"""Provider implementations, one per wire format, and :func:`build` to make them."""
