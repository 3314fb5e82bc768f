"""Face regions with names read from XMP as digiKam, Lightroom, Picasa and Windows Live Photo Gallery
write them: both MWG forms (attributes and elements), Microsoft's rectangles, sidecars and a packet
inside a real JPEG, turned pictures checked against the pixels Pillow shows, and hostile or broken
packets reading as no regions."""

from __future__ import annotations

import io
import math

import pytest
from PIL import Image, ImageDraw, ImageOps

from core.media.face_regions import MAX_REGIONS, FaceRegion, dedupe, face_regions
from core.media.xmp import MAX_PACKET_BYTES, embedded_xmp

Box = tuple[float, float, float, float]

NS = """xmlns:mwg-rs="http://www.metadataworkinggroup.com/schemas/regions/"
    xmlns:stDim="http://ns.adobe.com/xap/1.0/sType/Dimensions#"
    xmlns:stArea="http://ns.adobe.com/xmp/sType/Area#"
    xmlns:MP="http://ns.microsoft.com/photo/1.2/"
    xmlns:MPRI="http://ns.microsoft.com/photo/1.2/t/RegionInfo#"
    xmlns:MPReg="http://ns.microsoft.com/photo/1.2/t/Region#\""""

# digiKam through ExifTool (and ExifTool itself): a sidecar, every struct in element form
DIGIKAM_SIDECAR = """<?xpacket begin='\ufeff' id='W5M0MpCehiHzreSzNTczkc9d'?>
<x:xmpmeta xmlns:x='adobe:ns:meta/' x:xmptk='Image::ExifTool 13.10'>
<rdf:RDF xmlns:rdf='http://www.w3.org/1999/02/22-rdf-syntax-ns#'>
 <rdf:Description rdf:about=''
  xmlns:mwg-rs='http://www.metadataworkinggroup.com/schemas/regions/'
  xmlns:stArea='http://ns.adobe.com/xmp/sType/Area#'
  xmlns:stDim='http://ns.adobe.com/xap/1.0/sType/Dimensions#'>
  <mwg-rs:Regions rdf:parseType='Resource'>
   <mwg-rs:AppliedToDimensions rdf:parseType='Resource'>
    <stDim:h>700</stDim:h>
    <stDim:unit>pixel</stDim:unit>
    <stDim:w>840</stDim:w>
   </mwg-rs:AppliedToDimensions>
   <mwg-rs:RegionList>
    <rdf:Bag>
     <rdf:li rdf:parseType='Resource'>
      <mwg-rs:Area rdf:parseType='Resource'>
       <stArea:h>0.1</stArea:h>
       <stArea:unit>normalized</stArea:unit>
       <stArea:w>0.2</stArea:w>
       <stArea:x>0.3</stArea:x>
       <stArea:y>0.6</stArea:y>
      </mwg-rs:Area>
      <mwg-rs:Name>  Marie Curie </mwg-rs:Name>
      <mwg-rs:Type>Face</mwg-rs:Type>
     </rdf:li>
     <rdf:li rdf:parseType='Resource'>
      <mwg-rs:Area rdf:parseType='Resource'>
       <stArea:h>0.1</stArea:h>
       <stArea:unit>normalized</stArea:unit>
       <stArea:w>0.24</stArea:w>
       <stArea:x>0.24</stArea:x>
       <stArea:y>0.3</stArea:y>
      </mwg-rs:Area>
      <mwg-rs:Name>Pierre Curie</mwg-rs:Name>
      <mwg-rs:Type>Face</mwg-rs:Type>
     </rdf:li>
    </rdf:Bag>
   </mwg-rs:RegionList>
  </mwg-rs:Regions>
 </rdf:Description>
 <rdf:Description rdf:about='' xmlns:tiff='http://ns.adobe.com/tiff/1.0/'>
  <tiff:Orientation>1</tiff:Orientation>
 </rdf:Description>
</rdf:RDF>
</x:xmpmeta>
<?xpacket end='w'?>"""

# digiKam through Exiv2 (embedded): both schemas for the same face, compact attribute form, and a
# face it found but nobody has named
DIGIKAM_EXIV2 = f"""<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>
<x:xmpmeta xmlns:x="adobe:ns:meta/" x:xmptk="XMP Core 4.4.0-Exiv2">
 <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
  <rdf:Description rdf:about=""
    xmlns:digiKam="http://www.digikam.org/ns/1.0/"
    {NS}
   digiKam:ColorLabel="0">
   <digiKam:TagsList>
    <rdf:Seq>
     <rdf:li>People/Ada Lovelace</rdf:li>
    </rdf:Seq>
   </digiKam:TagsList>
   <MP:RegionInfo rdf:parseType="Resource">
    <MPRI:Regions>
     <rdf:Bag>
      <rdf:li
       MPReg:PersonDisplayName="Ada Lovelace"
       MPReg:Rectangle="0.1, 0.2, 0.15, 0.2"/>
      <rdf:li
       MPReg:PersonDisplayName=""
       MPReg:Rectangle="0.6, 0.25, 0.1, 0.15"/>
     </rdf:Bag>
    </MPRI:Regions>
   </MP:RegionInfo>
   <mwg-rs:Regions rdf:parseType="Resource">
    <mwg-rs:AppliedToDimensions
     stDim:w="4000"
     stDim:h="3000"
     stDim:unit="pixel"/>
    <mwg-rs:RegionList>
     <rdf:Bag>
      <rdf:li>
       <rdf:Description
        mwg-rs:Name="Ada Lovelace"
        mwg-rs:Type="Face">
       <mwg-rs:Area
        stArea:x="0.175"
        stArea:y="0.3"
        stArea:w="0.15"
        stArea:h="0.2"
        stArea:unit="normalized"/>
       </rdf:Description>
      </rdf:li>
      <rdf:li>
       <rdf:Description
        mwg-rs:Type="Face">
       <mwg-rs:Area
        stArea:x="0.65"
        stArea:y="0.325"
        stArea:w="0.1"
        stArea:h="0.15"
        stArea:unit="normalized"/>
       </rdf:Description>
      </rdf:li>
     </rdf:Bag>
    </mwg-rs:RegionList>
   </mwg-rs:Regions>
  </rdf:Description>
 </rdf:RDF>
</x:xmpmeta>
<?xpacket end="w"?>"""

# Lightroom Classic: a named face, an unnamed one, and regions that are not faces (a pet, the
# camera's focus point, a barcode) which must not come back
LIGHTROOM = """<x:xmpmeta xmlns:x="adobe:ns:meta/" x:xmptk="Adobe XMP Core 7.0-c000 1.000000, 0000/00/00-00:00:00">
 <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
  <rdf:Description rdf:about=""
    xmlns:xmp="http://ns.adobe.com/xap/1.0/"
    xmlns:mwg-rs="http://www.metadataworkinggroup.com/schemas/regions/"
    xmlns:stDim="http://ns.adobe.com/xap/1.0/sType/Dimensions#"
    xmlns:stArea="http://ns.adobe.com/xmp/sType/Area#"
   xmp:Rating="3">
   <mwg-rs:Regions rdf:parseType="Resource">
    <mwg-rs:AppliedToDimensions
     stDim:w="6000"
     stDim:h="4000"
     stDim:unit="pixel"/>
    <mwg-rs:RegionList>
     <rdf:Bag>
      <rdf:li>
       <rdf:Description
        mwg-rs:Type="Face"
        mwg-rs:Name="Grace Hopper">
       <mwg-rs:Area
        stArea:x="0.5"
        stArea:y="0.4"
        stArea:w="0.2"
        stArea:h="0.3"
        stArea:unit="normalized"/>
       </rdf:Description>
      </rdf:li>
      <rdf:li>
       <rdf:Description
        mwg-rs:Type="Face">
       <mwg-rs:Area
        stArea:x="0.85"
        stArea:y="0.5"
        stArea:w="0.1"
        stArea:h="0.15"
        stArea:unit="normalized"/>
       </rdf:Description>
      </rdf:li>
      <rdf:li>
       <rdf:Description
        mwg-rs:Type="Pet"
        mwg-rs:Name="Rex">
       <mwg-rs:Area stArea:x="0.2" stArea:y="0.7" stArea:w="0.2" stArea:h="0.2" stArea:unit="normalized"/>
       </rdf:Description>
      </rdf:li>
      <rdf:li>
       <rdf:Description
        mwg-rs:Type="Focus"
        mwg-rs:Name="AF point">
       <mwg-rs:Area stArea:x="0.5" stArea:y="0.4" stArea:w="0.05" stArea:h="0.05" stArea:unit="normalized"/>
       </rdf:Description>
      </rdf:li>
      <rdf:li>
       <rdf:Description
        mwg-rs:Type="BarCode">
       <mwg-rs:Area stArea:x="0.1" stArea:y="0.1" stArea:w="0.1" stArea:h="0.1" stArea:unit="normalized"/>
       </rdf:Description>
      </rdf:li>
     </rdf:Bag>
    </mwg-rs:RegionList>
   </mwg-rs:Regions>
  </rdf:Description>
 </rdf:RDF>
</x:xmpmeta>"""

# Picasa 3.9: attribute form, and a region with a name but no Type
PICASA = """<x:xmpmeta xmlns:x="adobe:ns:meta/" x:xmptk="XMP Core 5.1.2">
  <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
    <rdf:Description rdf:about=""
        xmlns:mwg-rs="http://www.metadataworkinggroup.com/schemas/regions/"
        xmlns:stDim="http://ns.adobe.com/xap/1.0/sType/Dimensions#"
        xmlns:stArea="http://ns.adobe.com/xmp/sType/Area#">
      <mwg-rs:Regions rdf:parseType="Resource">
        <mwg-rs:AppliedToDimensions stDim:w="3264" stDim:h="2448" stDim:unit="pixel"/>
        <mwg-rs:RegionList>
          <rdf:Bag>
            <rdf:li>
              <rdf:Description mwg-rs:Name="Alan Turing" mwg-rs:Type="Face">
                <mwg-rs:Area stArea:x="0.25" stArea:y="0.25" stArea:w="0.1" stArea:h="0.1" stArea:unit="normalized"/>
              </rdf:Description>
            </rdf:li>
            <rdf:li>
              <rdf:Description mwg-rs:Name="Joan Clarke">
                <mwg-rs:Area stArea:x="0.75" stArea:y="0.25" stArea:w="0.1" stArea:h="0.1" stArea:unit="normalized"/>
              </rdf:Description>
            </rdf:li>
            <rdf:li>
              <rdf:Description>
                <mwg-rs:Area stArea:x="0.5" stArea:y="0.75" stArea:w="0.1" stArea:h="0.1" stArea:unit="normalized"/>
              </rdf:Description>
            </rdf:li>
          </rdf:Bag>
        </mwg-rs:RegionList>
      </mwg-rs:Regions>
    </rdf:Description>
  </rdf:RDF>
</x:xmpmeta>"""

# Windows Live Photo Gallery through WIC: the namespaces declared where they are used, Microsoft's
# rdf:about, a named face, one found but not identified, and a name with no rectangle
WLPG = (
    """<?xpacket begin='\ufeff' id='W5M0MpCehiHzreSzNTczkc9d'?>
<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
<rdf:Description rdf:about="uuid:faf5bdd5-ba3d-11da-ad31-d33d75182f1b" xmlns:MP="http://ns.microsoft.com/photo/1.2/">
<MP:RegionInfo rdf:parseType="Resource">
<MPRI:Regions xmlns:MPRI="http://ns.microsoft.com/photo/1.2/t/RegionInfo#">
<rdf:Bag xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
<rdf:li rdf:parseType="Resource">
<MPReg:Rectangle
 xmlns:MPReg="http://ns.microsoft.com/photo/1.2/t/Region#">0.369792, 0.256944, 0.135417, 0.180556</MPReg:Rectangle>
<MPReg:PersonDisplayName xmlns:MPReg="http://ns.microsoft.com/photo/1.2/t/Region#">John Doe</MPReg:PersonDisplayName>
</rdf:li>
<rdf:li rdf:parseType="Resource">
<MPReg:Rectangle xmlns:MPReg="http://ns.microsoft.com/photo/1.2/t/Region#">0.7, 0.3, 0.1, 0.12</MPReg:Rectangle>
</rdf:li>
<rdf:li rdf:parseType="Resource">
<MPReg:PersonDisplayName xmlns:MPReg="http://ns.microsoft.com/photo/1.2/t/Region#">Jane Doe</MPReg:PersonDisplayName>
</rdf:li>
</rdf:Bag>
</MPRI:Regions>
</MP:RegionInfo>
</rdf:Description>
</rdf:RDF></x:xmpmeta>
"""
    + " " * 2048
    + "\n<?xpacket end='w'?>"
)

# Microsoft's own sample (People Tagging Overview): each region an rdf:Description inside its rdf:li
MICROSOFT_SAMPLE = """<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
<rdf:Description rdf:about="" xmlns:MP="http://ns.microsoft.com/photo/1.2/">
<MP:RegionInfo>
<rdf:Description xmlns:MPRI="http://ns.microsoft.com/photo/1.2/t/RegionInfo#">
   <MPRI:Regions>
       <rdf:Bag>
          <rdf:li>
       <rdf:Description xmlns:MPReg="http://ns.microsoft.com/photo/1.2/t/Region#">
           <MPReg:Rectangle>0.790650, 0.441734, 0.209350, 0.279133
           </MPReg:Rectangle>
           <MPReg:PersonDisplayName>John Doe</MPReg:PersonDisplayName>
           <MPReg:PersonEmailDigest>2FD4E1C67A2D28FCED849EE1BB76E7391B93EB13</MPReg:PersonEmailDigest>
           <MPReg:PersonLiveIdCID>1234567890123456789</MPReg:PersonLiveIdCID>
       </rdf:Description>
         </rdf:li>
         <rdf:li>
             <rdf:Description xmlns:MPReg="http://ns.microsoft.com/photo/1.2/t/Region#">
                  <MPReg:Rectangle>0.222656, 0.302083, 0.378906, 0.505208</MPReg:Rectangle>
                  <MPReg:PersonDisplayName>Jane Doe</MPReg:PersonDisplayName>
              </rdf:Description>
         </rdf:li>
</rdf:Bag>
</MPRI:Regions></rdf:Description></MP:RegionInfo></rdf:Description>
</rdf:RDF></x:xmpmeta>"""


def mwg_packet(*areas: str, dimensions: str = "") -> str:
    """A Lightroom-shaped packet with one face per `stArea` attribute string."""
    items = "".join(
        f'<rdf:li><rdf:Description mwg-rs:Type="Face" mwg-rs:Name="P{i}">'
        f"<mwg-rs:Area {area}/></rdf:Description></rdf:li>"
        for i, area in enumerate(areas)
    )
    return (
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        f'<rdf:Description rdf:about="" {NS}><mwg-rs:Regions rdf:parseType="Resource">{dimensions}'
        f"<mwg-rs:RegionList><rdf:Bag>{items}</rdf:Bag></mwg-rs:RegionList></mwg-rs:Regions>"
        "</rdf:Description></rdf:RDF></x:xmpmeta>"
    )


def mwg_box(box: Box) -> str:
    x0, y0, x1, y1 = box
    return (
        f'stArea:x="{(x0 + x1) / 2}" stArea:y="{(y0 + y1) / 2}" stArea:w="{x1 - x0}" stArea:h="{y1 - y0}" '
        'stArea:unit="normalized"'
    )


def mp_packet(*rectangles: str) -> str:
    items = "".join(
        f'<rdf:li rdf:parseType="Resource"><MPReg:PersonDisplayName>P{i}</MPReg:PersonDisplayName>'
        f"<MPReg:Rectangle>{rectangle}</MPReg:Rectangle></rdf:li>"
        for i, rectangle in enumerate(rectangles)
    )
    return (
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        f'<rdf:Description rdf:about="" {NS}><MP:RegionInfo rdf:parseType="Resource"><MPRI:Regions>'
        f"<rdf:Bag>{items}</rdf:Bag></MPRI:Regions></MP:RegionInfo></rdf:Description></rdf:RDF></x:xmpmeta>"
    )


def assert_box(actual: Box, expected: Box, tolerance: float = 1e-6) -> None:
    assert actual == pytest.approx(expected, abs=tolerance), (actual, expected)


# --- the shapes programs write -------------------------------------------------------------------


def test_digikam_sidecar_in_element_form() -> None:
    marie, pierre = face_regions(DIGIKAM_SIDECAR)
    assert (marie.name, marie.source) == ("Marie Curie", "mwg")
    assert_box(marie.box, (0.2, 0.55, 0.4, 0.65))
    assert pierre.name == "Pierre Curie"
    assert_box(pierre.box, (0.12, 0.25, 0.36, 0.35))


def test_digikam_writes_both_schemas_which_dedupe_merges() -> None:
    regions = face_regions(DIGIKAM_EXIV2.encode("utf-8"))
    assert [(r.name, r.source) for r in regions] == [
        ("Ada Lovelace", "mwg"),
        (None, "mwg"),
        ("Ada Lovelace", "microsoft"),
        (None, "microsoft"),
    ]
    for mwg, microsoft in zip(regions[:2], regions[2:]):
        assert_box(mwg.box, microsoft.box)
    assert_box(regions[0].box, (0.1, 0.2, 0.25, 0.4))
    assert dedupe(regions) == regions[:2]


def test_lightroom_faces_kept_pets_focus_and_barcodes_left_out() -> None:
    grace, unnamed = face_regions(LIGHTROOM)
    assert grace == FaceRegion("Grace Hopper", grace.box, "mwg")
    assert_box(grace.box, (0.4, 0.25, 0.6, 0.55))
    assert unnamed.name is None
    assert_box(unnamed.box, (0.8, 0.425, 0.9, 0.575))


def test_picasa_untyped_region_counts_when_it_names_someone() -> None:
    assert [r.name for r in face_regions(PICASA)] == ["Alan Turing", "Joan Clarke"]
    assert_box(face_regions(PICASA)[1].box, (0.7, 0.2, 0.8, 0.3))


def test_windows_live_photo_gallery_rectangles() -> None:
    named, unnamed = face_regions(WLPG)
    assert (named.name, named.source) == ("John Doe", "microsoft")
    assert_box(named.box, (0.369792, 0.256944, 0.369792 + 0.135417, 0.256944 + 0.180556))
    assert unnamed.name is None
    assert_box(unnamed.box, (0.7, 0.3, 0.8, 0.42))


def test_microsofts_sample_with_nested_descriptions() -> None:
    john, jane = face_regions(MICROSOFT_SAMPLE)
    assert (john.name, jane.name) == ("John Doe", "Jane Doe")
    assert_box(john.box, (0.79065, 0.441734, 1.0, 0.720867))
    assert_box(jane.box, (0.222656, 0.302083, 0.601562, 0.807291))


def test_pixel_units_are_converted_with_the_applied_dimensions() -> None:
    element_form = (
        '<mwg-rs:AppliedToDimensions rdf:parseType="Resource"><stDim:w>4000</stDim:w><stDim:h>2000</stDim:h>'
        "<stDim:unit>pixel</stDim:unit></mwg-rs:AppliedToDimensions>"
    )
    area = 'stArea:x="1000" stArea:y="500" stArea:w="400" stArea:h="200" stArea:unit="pixel"'
    (region,) = face_regions(mwg_packet(area, dimensions=element_form))
    assert_box(region.box, (0.2, 0.2, 0.3, 0.3))
    # without the dimensions a pixel area means nothing; an unknown unit is not guessed at
    assert face_regions(mwg_packet(area)) == ()
    assert face_regions(mwg_packet(area.replace('"pixel"', '"inch"'), dimensions=element_form)) == ()


def test_a_missing_unit_reads_as_normalized() -> None:
    (region,) = face_regions(mwg_packet('stArea:x="0.5" stArea:y="0.5" stArea:w="0.2" stArea:h="0.2"'))
    assert_box(region.box, (0.4, 0.4, 0.6, 0.6))


# --- orientation ---------------------------------------------------------------------------------

STORED = (0.1, 0.2, 0.3, 0.5)  # x0, y0, x1, y1 in the stored pixels


@pytest.mark.parametrize(
    ("orientation", "displayed"),
    [
        (1, (0.1, 0.2, 0.3, 0.5)),
        (3, (0.7, 0.5, 0.9, 0.8)),  # turned 180°
        (6, (0.5, 0.1, 0.8, 0.3)),  # shown turned 90° clockwise
        (8, (0.2, 0.7, 0.5, 0.9)),  # shown turned 90° counter-clockwise
        (0, (0.1, 0.2, 0.3, 0.5)),  # not an orientation: as stored
        (9, (0.1, 0.2, 0.3, 0.5)),
    ],
)
def test_orientation_moves_the_box_into_the_displayed_frame(orientation: int, displayed: Box) -> None:
    for packet in (mwg_packet(mwg_box(STORED)), mp_packet("0.1, 0.2, 0.2, 0.3")):
        (region,) = face_regions(packet, orientation)
        assert_box(region.box, displayed)


def drawn(width: int, height: int, box: Box) -> Image.Image:
    """A black picture with the stored-frame `box` painted white."""
    image = Image.new("RGB", (width, height))
    x0, y0, x1, y1 = box
    ImageDraw.Draw(image).rectangle((x0 * width, y0 * height, x1 * width - 1, y1 * height - 1), fill="white")
    return image


def painted_box(image: Image.Image) -> Box:
    """Where the white is in `image`, as fractions of its size."""
    bbox = image.convert("L").point(lambda v: 255 if v > 128 else 0).getbbox()
    assert bbox is not None
    x0, y0, x1, y1 = bbox
    return (x0 / image.width, y0 / image.height, x1 / image.width, y1 / image.height)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_orientation_matches_the_pixels_pillow_shows(orientation: int) -> None:
    image = drawn(400, 300, STORED)
    image.getexif()[0x0112] = orientation
    shown = ImageOps.exif_transpose(image)
    (region,) = face_regions(mwg_packet(mwg_box(STORED)), orientation)
    assert_box(region.box, painted_box(shown), tolerance=1e-9)


def test_packet_embedded_in_a_turned_jpeg() -> None:
    """A camera's portrait JPEG: landscape pixels, orientation 6, the face box in the stored frame."""
    written = io.BytesIO()
    image = drawn(640, 480, STORED)
    exif = Image.Exif()
    exif[0x0112] = 6
    packet = mwg_packet(mwg_box(STORED), dimensions='<mwg-rs:AppliedToDimensions stDim:w="640" stDim:h="480"/>')
    image.save(written, "JPEG", quality=95, exif=exif, xmp=packet.encode("utf-8"))
    with Image.open(io.BytesIO(written.getvalue())) as opened:
        orientation = opened.getexif().get(0x0112, 1)
        found = embedded_xmp(opened)
        shown = ImageOps.exif_transpose(opened)
    assert orientation == 6
    (region,) = face_regions(found, orientation)
    assert region.name == "P0"
    assert shown.size == (480, 640)
    assert_box(region.box, painted_box(shown), tolerance=0.01)


# --- what is left out, and what never raises -----------------------------------------------------


@pytest.mark.parametrize(
    "area",
    [
        'stArea:x="0.5" stArea:y="0.5" stArea:w="0" stArea:h="0.2"',  # no width
        'stArea:x="0.5" stArea:y="0.5" stArea:w="0.2" stArea:h="-0.2"',  # negative height
        'stArea:x="NaN" stArea:y="0.5" stArea:w="0.2" stArea:h="0.2"',
        'stArea:x="0.5" stArea:y="inf" stArea:w="0.2" stArea:h="0.2"',
        'stArea:x="1e300" stArea:y="0.5" stArea:w="0.2" stArea:h="0.2"',
        'stArea:x="0.5" stArea:y="0.5" stArea:w="40" stArea:h="0.2"',
        'stArea:x="-3" stArea:y="0.5" stArea:w="0.2" stArea:h="0.2"',
        'stArea:x="1.3" stArea:y="0.5" stArea:w="0.2" stArea:h="0.2"',  # wholly outside the picture
        'stArea:x="half" stArea:y="0.5" stArea:w="0.2" stArea:h="0.2"',
        'stArea:x="" stArea:y="0.5" stArea:w="0.2" stArea:h="0.2"',
        'stArea:y="0.5" stArea:w="0.2" stArea:h="0.2"',  # no x
        'stArea:x="0.5" stArea:y="0.5" stArea:w="1" stArea:h="1"',  # the whole picture, not a face
    ],
)
def test_broken_mwg_areas_are_dropped(area: str) -> None:
    good = mwg_box((0.1, 0.1, 0.2, 0.2))
    assert [r.name for r in face_regions(mwg_packet(area, good))] == ["P1"]


@pytest.mark.parametrize(
    "rectangle", ["0.1, 0.1, 0.2", "0.1, 0.1, 0.2, 0.2, 0.3", "a, b, c, d", "0,1; 0,1; 0,2; 0,2", "nan, 0, 1, 1", ""]
)
def test_broken_microsoft_rectangles_are_dropped(rectangle: str) -> None:
    assert [r.name for r in face_regions(mp_packet(rectangle, "0.1, 0.1, 0.1, 0.1"))] == ["P1"]


def test_a_box_over_the_edge_is_clamped() -> None:
    (region,) = face_regions(mwg_packet(mwg_box((-0.05, 0.9, 0.15, 1.1))))
    assert_box(region.box, (0.0, 0.9, 0.15, 1.0))
    assert all(0 <= v <= 1 and math.isfinite(v) for v in region.box)


def test_a_region_without_an_area_or_a_list_is_skipped() -> None:
    no_area = LIGHTROOM.replace('<mwg-rs:Area\n        stArea:x="0.5"', '<mwg-rs:NotArea\n        stArea:x="0.5"')
    assert [r.name for r in face_regions(no_area)] == [None]
    no_list = LIGHTROOM.replace("mwg-rs:RegionList", "mwg-rs:Elsewhere")
    assert face_regions(no_list) == ()


def test_the_number_of_regions_is_capped() -> None:
    many = mwg_packet(*[mwg_box((0.1, 0.1, 0.2, 0.2))] * (MAX_REGIONS + 50))
    assert len(face_regions(many)) == MAX_REGIONS


@pytest.mark.parametrize(
    "packet",
    [
        None,
        "",
        b"",
        b"\xff\xd8\xff\xe0 not xmp at all",
        DIGIKAM_SIDECAR[: len(DIGIKAM_SIDECAR) // 2],  # cut short
        DIGIKAM_SIDECAR.replace("</mwg-rs:Area>", "", 1),  # mismatched tags
        LIGHTROOM.replace('mwg-rs:Type="Face"', 'mwg-rs:Type="Face" mwg-rs:Type="Face"', 1),  # duplicate attribute
        b"<x:xmpmeta xmlns:x='adobe:ns:meta/'>\xff\xfe\x00</x:xmpmeta>",  # not UTF-8
    ],
)
def test_damaged_packets_read_as_no_regions(packet: bytes | str | None) -> None:
    assert face_regions(packet) == ()


ENTITY_BOMB = (
    '<?xml version="1.0"?>\n<!DOCTYPE x:xmpmeta [\n <!ENTITY lol "lol">\n'
    + "".join(f' <!ENTITY lol{i} "{("&lol" + (str(i - 1) if i > 1 else "") + ";") * 10}">\n' for i in range(1, 10))
    + "]>\n"
)


@pytest.mark.parametrize(
    "packet",
    [
        # a billion laughs in the name, the DTD before the packet
        ENTITY_BOMB + LIGHTROOM.replace('mwg-rs:Name="Grace Hopper"', 'mwg-rs:Name="&lol9;"'),
        # the same before a bare RDF packet
        ENTITY_BOMB.replace("x:xmpmeta", "rdf:RDF")
        + LIGHTROOM[LIGHTROOM.index("<rdf:RDF") : LIGHTROOM.index("</x:xmpmeta>")].replace(
            'mwg-rs:Name="Grace Hopper"', 'mwg-rs:Name="&lol9;"'
        ),
        # an external entity
        '<!DOCTYPE r [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
        + LIGHTROOM.replace('mwg-rs:Name="Grace Hopper"', 'mwg-rs:Name="&xxe;"'),
    ],
)
def test_entity_tricks_read_as_no_regions(packet: str) -> None:
    assert face_regions(packet) == ()


def test_an_oversized_packet_is_not_read() -> None:
    assert face_regions(DIGIKAM_SIDECAR + " " * MAX_PACKET_BYTES) == ()


def test_names_are_stripped_and_blank_names_are_none() -> None:
    blank = LIGHTROOM.replace('mwg-rs:Name="Grace Hopper"', 'mwg-rs:Name="   "')
    assert [r.name for r in face_regions(blank)] == [None, None]
    assert face_regions(DIGIKAM_SIDECAR)[0].name == "Marie Curie"


# --- dedupe --------------------------------------------------------------------------------------


def region(name: str | None, box: Box, source: str = "mwg") -> FaceRegion:
    return FaceRegion(name=name, box=box, source=source)


def test_dedupe_prefers_a_named_region_then_mwg() -> None:
    unnamed_mwg = region(None, (0.1, 0.1, 0.3, 0.3))
    named_microsoft = region("Ada", (0.11, 0.1, 0.31, 0.3), "microsoft")
    assert dedupe([unnamed_mwg, named_microsoft]) == (named_microsoft,)
    named_mwg = region("Ada", (0.1, 0.12, 0.3, 0.31))
    assert dedupe([named_microsoft, named_mwg]) == (named_mwg,)
    assert dedupe([named_microsoft, region(None, (0.1, 0.1, 0.3, 0.3), "microsoft")]) == (named_microsoft,)


def test_dedupe_keeps_faces_that_overlap_little() -> None:
    left = region("A", (0.0, 0.0, 0.2, 0.2))
    half_over = region("B", (0.1, 0.0, 0.3, 0.2), "microsoft")  # IoU 1/3
    apart = region(None, (0.6, 0.6, 0.8, 0.8))
    assert dedupe([left, half_over, apart]) == (left, half_over, apart)
    assert dedupe([]) == ()
