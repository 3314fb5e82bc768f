"""A phone's folder after five trips and a day at home, as the tests write it: each picture placed
by the GPS its format carries (EXIF in a JPEG and a HEIC, an XMP sidecar beside a JPEG without
GPS of its own, QuickTime metadata in a video) and dated by its camera.

    DCIM/tram.jpg        a red circle      Lisbon (the Alfama)   2022-05-14   JPEG, EXIF GPS
    DCIM/castle.heic     a blue square     Lisbon (the castle)   2021-03-02   HEIC, EXIF GPS
    DCIM/shrine.heic     a red circle      Tokyo (Meiji shrine)  2023-04-01   HEIC, EXIF GPS
    DCIM/tower.jpg       a green triangle  Paris (Eiffel Tower)  2020-08-10   JPEG + .xmp sidecar GPS
    DCIM/street.mp4      a yellow triangle New York (Times Sq.)  2019-12-24   MP4, QuickTime GPS
    DCIM/harbour.jpg     a red circle      Cape Town (harbour)   2024-01-15   JPEG, EXIF GPS
    DCIM/garden.jpg      a red circle      nowhere (no GPS)      2018-06-01   JPEG
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import stills
from PIL import Image
from shapes import Drawing, draw
from videos import quicktime_metadata, write_video

ITEMS = 7
RED_CIRCLES_NEWEST_FIRST = ["DCIM/harbour.jpg", "DCIM/shrine.heic", "DCIM/tram.jpg", "DCIM/garden.jpg"]
LISBON = {"DCIM/tram.jpg", "DCIM/castle.heic"}


def write_trips(folder: Path) -> None:
    roll = folder / "DCIM"
    roll.mkdir(parents=True, exist_ok=True)

    def facts(when: str, latitude: float | None = None, longitude: float | None = None) -> stills.Facts:
        return stills.Facts(taken_at=datetime.fromisoformat(when), latitude=latitude, longitude=longitude)

    def drawn(colour: str, shape: str) -> Image.Image:
        return draw(Drawing(colour, shape), width=160, height=120)

    stills.write_jpeg(roll / "tram.jpg", drawn("red", "circle"), facts("2022-05-14T09:30", 38.7112, -9.1277))
    stills.write_heic(roll / "castle.heic", drawn("blue", "square"), facts("2021-03-02T15:00", 38.7139, -9.1335))
    stills.write_heic(roll / "shrine.heic", drawn("red", "circle"), facts("2023-04-01T11:00", 35.6764, 139.6993))
    stills.write_jpeg(roll / "tower.jpg", drawn("green", "triangle"), facts("2020-08-10T19:45"))
    # 48.8584 N, 2.2945 E in XMP's "DD,MM.mmk" form
    stills.write_sidecar(roll / "tower.jpg.xmp", stills.xmp_packet(gps=("48,51.504N", "2,17.670E")))
    write_video(
        roll / "street.mp4",
        [(Drawing("yellow", "triangle"), 2)],
        metadata=quicktime_metadata(created="2019-12-24T18:00:00-0500", location="+40.7580-073.9855+010.000/"),
    )
    stills.write_jpeg(roll / "harbour.jpg", drawn("red", "circle"), facts("2024-01-15T08:10", -33.9036, 18.4207))
    stills.write_jpeg(roll / "garden.jpg", drawn("red", "circle"), facts("2018-06-01T12:00"))
