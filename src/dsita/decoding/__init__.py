"""Per-step CTC logits to text: greedy and beam-search decoding, alignment, and the transcript types."""
