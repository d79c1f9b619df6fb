"""Export-format families, one module each (`savedmodel`, `keras_file`, `tflite`); `base` defines the interface.

The formats are listed once, in `workbench.serving.registry`; nothing is imported here.
"""
