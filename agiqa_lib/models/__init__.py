"""Model backbones (three weight profiles) and the two papers' models."""
