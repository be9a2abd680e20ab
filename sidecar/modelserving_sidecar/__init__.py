"""The aiohttp sidecar of every serving pod: auth, :predict paths, proxy, inference log."""
