"""The pipeline's stages, one module (or package) per command."""
