"""CLIP-AGIQA (Tang et al., ICPR 2024): model, training, baselines and the study steps."""
