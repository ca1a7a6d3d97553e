"""Benchmarks: scripts that print figures (``python -m bench.<name> --help``), not tests."""

import dataclasses


def unbounded(decoder):
    """``decoder`` sharing its net, with no trained-size envelope: any size decodes whole."""
    return type(decoder)(decoder.net, dataclasses.replace(decoder.info, envelope=None), decoder.compile)
