"""Indexing: files in IMAGE_DIR → CLIP embeddings → the `images` table."""

from core.privacy import reports_off

# CocoIndex posts usage events from its import on unless switched off first; a self-hosted tool sends nothing.
reports_off()
