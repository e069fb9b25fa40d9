"""The networks: a U-Net segmenter and an EfficientNet regressor, and their weight files."""
