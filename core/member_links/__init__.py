"""One member across platforms: account-link codes (service.py) and the exact member merge (merge.py)."""
