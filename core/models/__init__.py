"""The models: reading a checkpoint, embedding pictures and texts (CLIP, SigLIP), the text tower
compiled for queries, and reading the text in pictures (OCR).

It may import `core.media` (pixels prepared as the model wants them) and `core`'s top modules.
"""
