"""Decoder files: safe reading (checkpoint_io), key layouts and variant detection (detect), strict
loading and the dtype policy (loading), the known files (model_files), quantised repacks (quantised).
"""
