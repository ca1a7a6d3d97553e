"""The PiD network: hyper-parameters and released variants (config), layers (blocks, rope, adapter),
the model, its analytic size and cost (flops) and random-weight nets with real key names.
"""
