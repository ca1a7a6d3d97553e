"""Benchmarks: scripts that print figures (``python -m bench.<name> --help``), not tests."""

import dataclasses


def unbounded(decoder):
    """``decoder`` sharing its net, with no trained-size envelope: any size decodes whole."""
    new = type(decoder)(decoder.net, dataclasses.replace(decoder.info, envelope=None))
    new.compile, new.network = decoder.compile, decoder.network   # the same (compiled) network call
    return new
