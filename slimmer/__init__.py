"""slim: micro container images from fat build images."""

__version__ = "0.1.0"
