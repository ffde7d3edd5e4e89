"""Reading checkpoints made by other tools: Mozilla DeepSpeech 0.9's TensorFlow checkpoints."""
