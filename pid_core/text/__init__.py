"""The prompt: upstream's Gemma-2-2B recipe (recipe) and a transformers encoder for it (gemma_hf).
"""
