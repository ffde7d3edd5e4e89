"""Training-time augmentation: its options (torch-free) and the transforms on clips, batches and features."""
