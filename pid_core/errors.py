"""Typed errors raised by pid_core.

Every message says what was seen, what was expected and how to fix it, in terms of the API.
``input_name`` names the input to change (an API keyword: "checkpoint", "latent_format", ...),
which each front end spells its own way (a CLI flag, a node widget or model folder). Errors
about user input also derive from ``ValueError`` so generic callers can catch them.
"""

from __future__ import annotations


class PiDError(Exception):
    """Base class of every error raised on purpose by pid_core."""

    input_name: str | None = None

    def __init__(self, message: str = "", *, input_name: str | None = None):
        super().__init__(message)
        if input_name is not None:
            self.input_name = input_name


class CheckpointError(PiDError):
    """A decoder file could not be read or is not a usable PiD checkpoint."""

    input_name = "checkpoint"


class CheckpointReadError(CheckpointError):
    """The file is missing, empty, truncated or not in a format we read."""


class NotAPiDCheckpointError(CheckpointError):
    """The file holds tensors, but they are not a PiD decoder (e.g. a VAE or an LDM UNet)."""


class UnsupportedCheckpointError(CheckpointError):
    """A PiD file in a layout we deliberately do not support (e.g. a quantised repack)."""


class StateDictMismatchError(CheckpointError):
    """Strict loading failed: keys are missing, unexpected, or have the wrong shape."""

    def __init__(self, message: str, missing=(), unexpected=(), mismatched=()):
        super().__init__(message, input_name="checkpoint")
        self.missing = tuple(missing)
        self.unexpected = tuple(unexpected)
        self.mismatched = tuple(mismatched)


class PiDInputError(PiDError, ValueError):
    """A decode argument (latent, sigma, size, steps, seed, text) is invalid."""


class LatentMismatchError(PiDInputError):
    """The latent does not fit the loaded checkpoint (channels, format, size)."""


class TextEncodingError(PiDError):
    """The prompt could not be turned into PiD text features."""

    input_name = "text"


class DownloadError(PiDError):
    """A requested model download failed; the message carries the manual steps."""


class PiDOutOfMemoryError(PiDError, MemoryError):
    """Even the smallest tile does not fit in the available memory."""


class NonFiniteOutputError(PiDError):
    """The network produced NaN/Inf pixels (fp16 overflow or a checkpoint with NaN weights)."""
