"""The aiohttp sidecar in every serving pod: auth, :predict paths, proxy to TF Serving, inference log."""
