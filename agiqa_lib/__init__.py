"""agiqa-study: reproducible study of AI-generated image quality assessment.

The library holds everything the notebooks call: datasets, splits, metrics, model
backbones in three weight profiles, feature caches, and the CLIP-AGIQA / MA-AGIQA models.
"""

from agiqa_lib.core.errors import AgiqaError

__version__ = "0.1.0"
__all__ = ["AgiqaError", "__version__"]
