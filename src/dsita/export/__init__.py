"""Turning a checkpoint into release files: ONNX graphs and the release archives."""
