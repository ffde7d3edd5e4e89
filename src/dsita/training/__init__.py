"""Training an acoustic model: the loop, where it runs (device, precision, ranks), and checkpoint files."""
