"""Reading media: opening every kind of picture and video a library holds (JPEG to camera RAW, HEIC,
JPEG XL, Live Photos, videos), their metadata (EXIF, XMP, IPTC, GPS and the place it names), and
which files of a folder are pictures, videos or sidecars.

It may import `core`'s top modules (settings, errors, threads) and nothing else of Sightline's.
"""
