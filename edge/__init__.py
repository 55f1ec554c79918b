"""crystal-psd edge runtime: segmentation -> crystals -> PSD -> MQTT. Never imports torch."""

__version__ = "0.1.0"
