"""Source connectors: one folder per connector plus the SDK they share (sdk.py)."""
