"""MA-AGIQA (Wang et al., 2024): MANIQA, MoE fusion, semantic vectors, training, study steps."""
