"""Stand-in model files for running the shipped workflows in a real, CPU-only ComfyUI."""
