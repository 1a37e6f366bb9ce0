"""Level 2: pretrained backbones in three weight profiles (CLIP, IQA backbone, MLLM)."""
