"""The image catalog: content-addressed, immutable, versioned disk images, each one
inspected before it is accepted."""

from .catalog import Catalog, Image
from .formats import FORMATS, ImageInfo, inspect_image

__all__ = ["Catalog", "FORMATS", "Image", "ImageInfo", "inspect_image"]
