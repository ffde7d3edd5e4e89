"""Measuring a trained model: WER/CER reports, and the alpha/beta search on dev WER."""
