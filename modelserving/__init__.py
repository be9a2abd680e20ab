"""ModelServing: a Kubernetes operator and sidecar for authenticated, logged TensorFlow Serving."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("modelserving")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"
