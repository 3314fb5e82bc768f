"""Indexing: files in IMAGE_DIR → CLIP embeddings → the `images` table."""

import os

# CocoIndex posts usage events on import unless this is set first; a self-hosted tool sends nothing.
os.environ.setdefault("COCOINDEX_DISABLE_USAGE_TRACKING", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
