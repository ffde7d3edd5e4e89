"""The whole augmentation chain of a training batch, in the order sound takes, and the per-clip transforms.

On the training device, per batch (`augment_batch`): the talker (speaker variation: VTLP, pitch, formant),
the other talkers around it (babble), the room (reverberation, then noise, then gain), then the channel
(microphone, clipping, compression, EQ and band limit, 8 kHz, mu-law). Babble goes in before the room, so
that the talkers share its reverberation, and after the speaker variation, so that they sound unlike the
training voices too. Per clip, in the DataLoader workers (`clip_transforms`): tempo, then a codec round trip.
"""

from __future__ import annotations

import torch
from torch import Tensor

from dsita.data.augmentation.channel import CodecRoundTrip, babble_waveforms, channel_waveforms
from dsita.data.augmentation.options import AugmentOptions
from dsita.data.augmentation.speaker import TempoPerturbation, speaker_waveforms
from dsita.data.augmentation.waveform import NoiseBank, augment_waveforms
from dsita.data.dataset import ClipTransform


def augment_batch(
    waveforms: Tensor,
    lengths: Tensor,
    options: AugmentOptions,
    noise_bank: NoiseBank | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Every batch augmentation `options` turns on, on a zero-padded (B, samples) batch; shape and padding
    kept. With all of them off the batch is returned as it is and nothing is drawn."""
    out = speaker_waveforms(waveforms, lengths, options.speaker, generator)
    out = babble_waveforms(out, lengths, options.channel, generator)
    out = augment_waveforms(out, lengths, options, noise_bank, generator)
    return channel_waveforms(out, lengths, options.channel, generator)


def clip_transforms(options: AugmentOptions) -> list[ClipTransform]:
    """The per-clip transforms `options` turns on, for `SpeechDataset(clip_transforms=...)`, whose workers
    seed them per (seed, epoch, clip). Speed perturbation stays the dataset's own."""
    transforms: list[ClipTransform] = []
    if options.speaker.tempo > 0:
        transforms.append(TempoPerturbation(options.speaker))
    if options.channel.codec > 0:
        transforms.append(CodecRoundTrip(options.channel))
    return transforms
