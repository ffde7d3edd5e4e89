"""Training-time augmentation, drawn per utterance and applied on the fly (never to dev or test).

- `options`: what to do (torch-free): `AugmentOptions`, holding `SpeakerOptions` and `ChannelOptions`.
- `batch`: the chain on a training batch (`augment_batch`) and the per-clip transforms (`clip_transforms`).
- `speaker`: VTLP, pitch and formant shift on the batch; tempo (WSOLA) per clip.
- `channel`: babble; microphone, clipping, compression, EQ and band limits, 8 kHz, mu-law; codecs per clip.
- `waveform`: the room: reverberation, noise (synthetic or a `NoiseBank` of files) and gain.
- `specaugment`: time and frequency masks on the features.
- `common`: the random draws and masks they share.
"""
