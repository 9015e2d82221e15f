"""GPIC: a reproducible pipeline from permissively licensed web images to an image-text corpus."""

__version__ = "0.1.0"
