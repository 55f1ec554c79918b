"""crystal-psd trainer: synthetic data, dataset reader, training, evaluation, ONNX export.

Only ``trainer.train``-family modules import torch; data, synth and weights are numpy + OpenCV.
"""

__version__ = "0.1.0"
