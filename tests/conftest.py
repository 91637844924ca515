import os

# Ray reads this at import: bind 127.0.0.1 only, never the machine's external address (set before any import).
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
