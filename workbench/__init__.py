"""workbench: transfer learning with the EfficientNet family on Keras 3.

Nothing heavy happens at import time: TensorFlow and Keras are imported by the
submodules that need them.
"""

__version__ = "0.1.0"
