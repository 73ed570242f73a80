"""One module per benchmark format as its authors release it; each `load(path, args, opts)` returns a Loaded."""
