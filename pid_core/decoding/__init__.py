"""Running a decode: latent formats, output sizes, memory and the plan, tiles, noise, the sampler
loop, progress and previews, the public decoder, the image, colour check and anchoring.
"""
